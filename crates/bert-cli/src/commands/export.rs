//! `bert export`: an index's passages and vectors copied into a Qdrant collection.

use std::process::ExitCode;

use anyhow::{Context, Result};
use bert::search::qdrant::Qdrant;
use bert::search::Index;

use crate::args::ExportArgs;
use crate::progress::ByteProgress;

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let index = Index::open(&args.index)
        .with_context(|| format!("opening the index {}", args.index.display()))?;
    let collection = match &args.collection {
        Some(c) => c.clone(),
        None => std::fs::canonicalize(&args.index)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("name the collection with --collection")?,
    };
    let qdrant = Qdrant::new(&args.qdrant, args.qdrant_api_key.clone());
    let mut bar = ByteProgress::new(false);
    qdrant.export(
        &index,
        &collection,
        args.batch_size as usize,
        &mut |done, total| bar.update(done as u64, total as u64),
    )?;
    bar.finish();
    eprintln!(
        "exported {} passages of {} to the Qdrant collection {collection} at {}",
        index.rows(),
        args.index.display(),
        args.qdrant
    );
    Ok(ExitCode::SUCCESS)
}
