//! Semantic search: documents cut into passages, embedded once into an on-disk index, and queried by
//! exact cosine similarity, optionally re-ranked by a cross-encoder.
//!
//! - [`passages`]: token windows with overlap, as byte ranges of the file;
//! - [`store`]: the index format (memory-mapped vectors, passage records, a manifest switched
//!   atomically);
//! - [`build`]: building and incremental updates by content hash;
//! - [`exact`]: the parallel top-k scan;
//! - [`lexical`]: BM25 over the same passages (tantivy), and rank fusion for hybrid search;
//! - [`qdrant`]: export to, and search in, a Qdrant collection.

pub mod build;
pub mod exact;
pub mod lexical;
pub mod passages;
pub mod qdrant;
pub mod store;

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipelines::{EmbedOptions, Embedder, TextClassifier};
pub use build::{build, fingerprint, Existing, IndexOptions, Report};
pub use store::{Index, ModelInfo};

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub score: f32,
    pub file: String,
    /// Byte offsets into the file.
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// How passages are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Cosine similarity of embeddings.
    #[default]
    Dense,
    /// BM25 on words.
    Lexical,
    /// Both, fused by reciprocal rank (the score is the fused score).
    Hybrid,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dense" => Ok(Mode::Dense),
            "bm25" | "lexical" => Ok(Mode::Lexical),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(format!(
                "unknown search mode `{other}` (expected dense, bm25 or hybrid)"
            )),
        }
    }
}

/// Candidates each list hands to the fusion in hybrid search, at least.
const FUSION_CANDIDATES: usize = 50;

/// What identifies the embedding model of an index: `name` as the user gave it, `dir` where it is.
pub fn model_info(name: &str, dir: &Path, embedder: &Embedder) -> Result<ModelInfo> {
    Ok(ModelInfo {
        name: name.to_string(),
        fingerprint: fingerprint(dir)?,
        dim: embedder.pipeline().config.hidden_size,
        pooling: embedder.pooling().name().to_string(),
    })
}

/// An index with the model that embeds its queries.
pub struct Searcher {
    pub index: Index,
    pub embedder: Embedder,
    /// The BM25 index, opened on first use and kept.
    lexical: std::sync::OnceLock<lexical::Lexical>,
}

impl Searcher {
    /// Opens the index in `dir` with the embedding model in `model_dir` (the index's own model when
    /// `None`, as recorded when it was built); a different model is refused.
    pub fn open(dir: &Path, model_dir: Option<&Path>) -> Result<Searcher> {
        let index = Index::open(dir)?;
        let recorded = &index.manifest.model;
        let model_dir = match model_dir {
            Some(d) => d.to_path_buf(),
            None => crate::weights::hub::resolve_model(&recorded.name, None)?,
        };
        let pooling = recorded.pooling.parse().map_err(Error::InvalidInput)?;
        let options = EmbedOptions {
            pooling: Some(pooling),
            ..Default::default()
        };
        let embedder = Embedder::load(&model_dir, &options)?;
        let info = model_info(&recorded.name, &model_dir, &embedder)?;
        if info.fingerprint != recorded.fingerprint || info.dim != recorded.dim {
            return Err(Error::InvalidInput(format!(
                "the index {} was built with the model {} ({} dimensions) and {} is a different \
                 model ({} dimensions); search with the index's model or rebuild the index",
                dir.display(),
                recorded.name,
                recorded.dim,
                model_dir.display(),
                info.dim
            )));
        }
        Ok(Searcher {
            index,
            embedder,
            lexical: std::sync::OnceLock::new(),
        })
    }

    /// The `k` passages closest in meaning to `query`, best first.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        self.search_with(query, k, Mode::Dense)
    }

    /// The `k` best passages for `query` as `mode` ranks them, best first.
    pub fn search_with(&self, query: &str, k: usize, mode: Mode) -> Result<Vec<SearchHit>> {
        let hits = match mode {
            Mode::Dense => self.dense(query, k)?,
            Mode::Lexical => self.lexical()?.top_k(query, k)?,
            Mode::Hybrid => {
                let n = (4 * k).max(FUSION_CANDIDATES);
                let lists = [self.dense(query, n)?, self.lexical()?.top_k(query, n)?];
                lexical::fuse(&lists, k)
            }
        };
        self.hits(hits)
    }

    fn lexical(&self) -> Result<&lexical::Lexical> {
        if let Some(opened) = self.lexical.get() {
            return Ok(opened);
        }
        let opened = self.index.lexical()?;
        Ok(self.lexical.get_or_init(|| opened))
    }

    fn dense(&self, query: &str, k: usize) -> Result<Vec<exact::Hit>> {
        let encoding = self.embedder.encode(query)?;
        let vector = self.embedder.pooled(&[encoding], true)?.remove(0);
        Ok(exact::top_k(
            self.index.vectors(),
            self.index.dim(),
            &vector,
            k,
        ))
    }

    fn hits(&self, hits: Vec<exact::Hit>) -> Result<Vec<SearchHit>> {
        hits.into_iter()
            .map(|hit| {
                let record = self.index.record(hit.row)?;
                Ok(SearchHit {
                    score: hit.score,
                    file: record.file,
                    start: record.start,
                    end: record.end,
                    text: record.text,
                })
            })
            .collect()
    }
}

/// The unit-length embedding of a query.
pub fn query_vector(embedder: &Embedder, query: &str) -> Result<Vec<f32>> {
    let encoding = embedder.encode(query)?;
    Ok(embedder.pooled(&[encoding], true)?.remove(0))
}

/// Re-orders `hits` by a cross-encoder's score of each (query, passage) pair, best first; the score
/// becomes the cross-encoder's (the sigmoid of its one logit).
pub fn rerank(
    reranker: &TextClassifier,
    query: &str,
    hits: Vec<SearchHit>,
) -> Result<Vec<SearchHit>> {
    let labels = reranker.labels().len();
    if labels != 1 {
        return Err(Error::InvalidInput(format!(
            "a re-ranking model is a cross-encoder with one output; this one has {labels} labels"
        )));
    }
    if hits.is_empty() {
        return Ok(hits);
    }
    let encodings = hits
        .iter()
        .map(|h| reranker.encode_pair(query, &h.text))
        .collect::<Result<Vec<_>>>()?;
    let logits = reranker.logits(&encodings)?;
    let function = reranker.score_function();
    let mut hits: Vec<SearchHit> = hits
        .into_iter()
        .zip(logits)
        .map(|(mut hit, row)| {
            hit.score = function.apply(&row)[0];
            hit
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(hits)
}
