//! `bert index`: text and Markdown files cut into passages, embedded and written to an on-disk index
//! (updated by content hash), with a progress bar.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pipelines::{EmbedOptions, Embedder};
use bert::search::{self, Existing, IndexOptions};

use crate::args::{IndexArgs, ModelArgs};
use crate::progress::ByteProgress;
use crate::runner::{model_dir, pipeline_options};

/// Default passage length, when the model takes more.
const CHUNK_TOKENS: usize = 256;

pub fn run(args: IndexArgs) -> Result<ExitCode> {
    let model_args = ModelArgs {
        model: args.model.clone(),
        revision: args.revision.clone(),
        max_length: None,
        truncation: Default::default(),
        batch_size: args.batch_size,
        max_batch_tokens: u64::MAX, // not used: the index builder forms its own batches
        dtype: args.dtype,
    };
    let dir = model_dir(&model_args, true)?;
    let options = EmbedOptions {
        pooling: args.pooling,
        pipeline: pipeline_options(&model_args),
        ..Default::default()
    };
    let embedder =
        Embedder::load(&dir, &options).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = embedder.pipeline().max_length;
    let chunk_tokens = args.chunk_tokens.unwrap_or(CHUNK_TOKENS.min(max_length));
    if chunk_tokens > max_length {
        bail!("--chunk-tokens {chunk_tokens} exceeds the model's maximum of {max_length} tokens");
    }
    if args.overlap >= chunk_tokens.saturating_sub(2) {
        bail!(
            "--overlap {} must be less than --chunk-tokens minus 2 ({chunk_tokens} - 2)",
            args.overlap
        );
    }
    // The index records the model so that `bert search` finds it: a Hub id as given, a directory
    // as an absolute path.
    let name = match &args.model {
        Some(m) if !Path::new(m).is_dir() => m.clone(),
        _ => std::fs::canonicalize(&dir)
            .unwrap_or(dir.clone())
            .display()
            .to_string(),
    };
    let model = search::model_info(&name, &dir, &embedder)?;
    let options = IndexOptions {
        chunk_tokens,
        overlap: args.overlap,
        existing: match (args.update, args.overwrite) {
            (true, _) => Existing::Update,
            (_, true) => Existing::Overwrite,
            _ => Existing::Refuse,
        },
        batch_size: args.batch_size as usize,
    };
    let mut bar = ByteProgress::new(true);
    let report = search::build(
        &embedder,
        model,
        &args.inputs,
        &args.out,
        &options,
        &mut |done, total| bar.update(done, total),
    )?;
    bar.finish();
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    eprintln!(
        "indexed {} passages into {}: {} files added, {} changed, {} unchanged, {} removed, {} skipped",
        report.passages,
        args.out.display(),
        report.added,
        report.changed,
        report.unchanged,
        report.removed,
        report.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}
