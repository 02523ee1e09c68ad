//! `bert align`: bitext mining between two files of sentences, or the in-order alignment of two
//! documents that translate each other; one JSON line per pair.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bert::bitext::sentences::{self, Sentence};
use bert::bitext::{mining, monotonic, AlignOptions, Pair};
use bert::pipelines::{EmbedOptions, Embedder};
use serde::Serialize;

use crate::args::{AlignArgs, AlignMode};
use crate::output::Output;
use crate::runner::{model_dir, pipeline_options};

#[derive(Serialize)]
struct PairLine<'a> {
    source: &'a str,
    target: &'a str,
    source_line: usize,
    target_line: usize,
    score: f32,
}

pub fn run(args: AlignArgs) -> Result<ExitCode> {
    let source = sentences::read(&args.source)?;
    let target = sentences::read(&args.target)?;
    let dir = model_dir(&args.model, true)?;
    let options = EmbedOptions {
        pipeline: pipeline_options(&args.model),
        pooling: None,
        normalize: Some(true),
    };
    let embedder =
        Embedder::load(&dir, &options).with_context(|| format!("loading {}", dir.display()))?;
    let batch = args.model.batch_size as usize;
    let source_vectors = embed_all(
        &embedder,
        &source,
        batch,
        &args.source.display().to_string(),
    )?;
    let target_vectors = embed_all(
        &embedder,
        &target,
        batch,
        &args.target.display().to_string(),
    )?;
    let dim = source_vectors.len() / source.len();
    let options = AlignOptions {
        neighbours: args.neighbours as usize,
        threshold: args.threshold,
    };
    let mut pairs = match args.mode {
        AlignMode::Mine => mining::mine(&source_vectors, &target_vectors, dim, &options),
        AlignMode::Parallel => {
            monotonic::align_in_order(&source_vectors, &target_vectors, dim, &options)?
        }
    };
    pairs.sort_by_key(|p| (p.source, p.target));
    write_pairs(&pairs, &source, &target)?;
    eprintln!(
        "{} pairs from {} source and {} target sentences",
        pairs.len(),
        source.len(),
        target.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every sentence's unit-length vector, rows of one flat vector in file order, with the count
/// embedded so far on a terminal.
fn embed_all(
    embedder: &Embedder,
    sentences: &[Sentence],
    batch: usize,
    name: &str,
) -> Result<Vec<f32>> {
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    let terminal = std::io::stderr().is_terminal();
    let mut report = |done: usize| {
        if terminal {
            eprint!("\rembedding {name}: {done}/{}\x1b[K", texts.len());
        }
    };
    let vectors = embedder.embed_sorted(&texts, batch, &mut report)?;
    if terminal {
        eprintln!();
    }
    Ok(vectors.concat())
}

fn write_pairs(pairs: &[Pair], source: &[Sentence], target: &[Sentence]) -> Result<()> {
    let mut out = Output::new();
    for pair in pairs {
        let (s, t) = (&source[pair.source], &target[pair.target]);
        let line = PairLine {
            source: &s.text,
            target: &t.text,
            source_line: s.line,
            target_line: t.line,
            score: pair.score,
        };
        out.write_line(&serde_json::to_string(&line)?)?;
    }
    out.flush()
}
