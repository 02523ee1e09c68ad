//! `bert search`: queries answered from an index (dense, BM25 or hybrid, optionally re-ranked by a
//! cross-encoder) or a Qdrant collection, one JSON line per hit.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pipelines::{EmbedOptions, Embedder, PipelineOptions, TextClassifier};
use bert::search::qdrant::Qdrant;
use bert::search::{self, Mode, Searcher};
use serde::Serialize;

use crate::args::SearchArgs;
use crate::output::Output;

#[derive(Serialize)]
struct HitLine<'a> {
    query: &'a str,
    rank: usize,
    #[serde(flatten)]
    hit: &'a search::SearchHit,
}

pub fn run(args: SearchArgs) -> Result<ExitCode> {
    let model_dir = args
        .model
        .as_deref()
        .map(|m| bert::weights::hub::resolve_model(m, None))
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
            let dir = bert::weights::hub::resolve_model(m, None)?;
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
