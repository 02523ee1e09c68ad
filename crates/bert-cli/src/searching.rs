//! `bert index` and `bert search`: build an on-disk index of passages with a progress bar, then
//! answer queries from it as JSON Lines.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bert::pipelines::{EmbedOptions, Embedder, PipelineOptions, TextClassifier};
use bert::search::qdrant::Qdrant;
use bert::search::{self, Existing, Index, IndexOptions, Mode, Searcher};
use serde::Serialize;

use crate::args::{ExportArgs, IndexArgs, ModelArgs, SearchArgs};
use crate::output::Output;

/// Default passage length, when the model takes more.
const CHUNK_TOKENS: usize = 256;

pub fn index(args: IndexArgs) -> Result<ExitCode> {
    let model_args = ModelArgs {
        model: args.model.clone(),
        revision: args.revision.clone(),
        max_length: None,
        truncation: Default::default(),
        batch_size: args.batch_size,
        max_batch_tokens: u64::MAX, // not used: the index builder forms its own batches
        dtype: args.dtype,
    };
    let dir = crate::commands::model_dir(&model_args, true)?;
    let options = EmbedOptions {
        pooling: args.pooling,
        pipeline: crate::commands::pipeline_options(&model_args),
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

/// A progress bar over bytes read (or rows sent): redrawn in place on a terminal, a line per tenth
/// otherwise.
struct ByteProgress {
    /// Counting bytes (shown in MB) rather than rows.
    bytes: bool,
    terminal: bool,
    started: Instant,
    last_tenth: u64,
}

impl ByteProgress {
    fn new(bytes: bool) -> Self {
        ByteProgress {
            bytes,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_tenth: 0,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        let fraction = done as f64 / total.max(1) as f64;
        let tenth = (fraction * 10.0) as u64;
        if !self.terminal && tenth == self.last_tenth {
            return;
        }
        self.last_tenth = tenth;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if fraction > 0.0 {
            elapsed * (1.0 / fraction - 1.0)
        } else {
            0.0
        };
        let filled = (fraction * 30.0) as usize;
        let amount = if self.bytes {
            format!("{:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
        } else {
            format!("{done}/{total} rows")
        };
        let line = format!(
            "[{}{}] {:5.1}% {amount}, ETA {:.0} s",
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30)),
            fraction * 100.0,
            eta
        );
        if self.terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

#[derive(Serialize)]
struct HitLine<'a> {
    query: &'a str,
    rank: usize,
    #[serde(flatten)]
    hit: &'a search::SearchHit,
}

pub fn search(args: SearchArgs) -> Result<ExitCode> {
    let model_dir = args
        .model
        .as_deref()
        .map(|m| bert::hub::resolve_model(m, None))
        .transpose()?;
    let engine = match (&args.qdrant, &args.index) {
        (Some(url), _) => {
            let dir = model_dir
                .as_deref()
                .expect("clap requires --model with --qdrant");
            let embedder = Embedder::load(dir, &EmbedOptions::default())
                .with_context(|| format!("loading {}", dir.display()))?;
            let collection = args.collection.clone().expect("clap requires --collection");
            Engine::Qdrant(
                Qdrant::new(url, args.qdrant_api_key.clone()),
                collection,
                embedder,
            )
        }
        (None, Some(index)) => Engine::Local(
            Searcher::open(index, model_dir.as_deref())
                .with_context(|| format!("opening the index {}", index.display()))?,
        ),
        (None, None) => bail!("give --index, or --qdrant with --collection and --model"),
    };
    let reranker = args
        .rerank_model
        .as_deref()
        .map(|m| -> Result<TextClassifier> {
            let dir = bert::hub::resolve_model(m, None)?;
            TextClassifier::load(&dir, &PipelineOptions::default(), None)
                .with_context(|| format!("loading the re-ranker {}", dir.display()))
        })
        .transpose()?;
    let top_k = args.top_k as usize;
    let candidates = match &reranker {
        Some(_) => args.rerank_candidates.unwrap_or(4 * top_k).max(top_k),
        None => top_k,
    };
    let mut out = Output::new();
    for query in queries(&args.queries)? {
        let mut hits = engine.search(&query, candidates, args.mode)?;
        if let Some(reranker) = &reranker {
            hits = search::rerank(reranker, &query, hits)?;
        }
        for (rank, hit) in hits.iter().take(top_k).enumerate() {
            let line = HitLine {
                query: &query,
                rank: rank + 1,
                hit,
            };
            out.write_line(&serde_json::to_string(&line)?)?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the vectors are searched (one per process, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Engine {
    Local(Searcher),
    Qdrant(Qdrant, String, Embedder),
}

impl Engine {
    fn search(&self, query: &str, k: usize, mode: Mode) -> Result<Vec<search::SearchHit>> {
        match self {
            Engine::Local(searcher) => Ok(searcher.search_with(query, k, mode)?),
            Engine::Qdrant(qdrant, collection, embedder) => {
                if mode != Mode::Dense {
                    bail!("--qdrant searches in dense mode only");
                }
                let vector = search::query_vector(embedder, query)?;
                Ok(qdrant.search(collection, &vector, k)?)
            }
        }
    }
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
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

/// The queries: the arguments, else stdin's non-empty lines.
fn queries(given: &[String]) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let mut queries = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading queries from stdin")?;
        if !line.trim().is_empty() {
            queries.push(line);
        }
    }
    Ok(queries)
}
