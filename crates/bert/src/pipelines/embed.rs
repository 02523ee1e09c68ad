//! Sentence embeddings: encoder states pooled into one vector per text, with the pooling and
//! normalisation a sentence-transformers checkpoint declares unless the caller overrides them.

use std::path::Path;

use crate::error::Result;
use crate::model::{BertModel, Mode};
use crate::pipelines::{Pipeline, PipelineOptions};
use crate::pooling::{pool, EmbeddingConfig, Pooling};
use crate::tokenizer::Encoding;

/// Overrides of the checkpoint's embedding settings.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    pub pipeline: PipelineOptions,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
}

/// Texts to vectors.
pub struct Embedder {
    pipeline: Pipeline<BertModel>,
    pooling: Pooling,
    normalize: bool,
}

impl Embedder {
    pub fn load(dir: &Path, options: &EmbedOptions) -> Result<Self> {
        let st = EmbeddingConfig::from_dir(dir)?;
        // Only the pooler's presence differs between checkpoints; sentence embeddings never use it.
        let pipeline = Pipeline::load(dir, &options.pipeline, st.max_seq_length, |p, c| {
            BertModel::load(&p.pp("bert"), c, false)
        })?;
        Ok(Embedder {
            pipeline,
            pooling: options.pooling.unwrap_or(st.pooling),
            normalize: options.normalize.unwrap_or(st.normalize),
        })
    }

    pub fn pipeline(&self) -> &Pipeline<BertModel> {
        &self.pipeline
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn normalize(&self) -> bool {
        self.normalize
    }

    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.pipeline.encode(text)
    }

    /// One vector per encoding, computed as one padded batch.
    pub fn embed(&self, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let out = self.pipeline.model.forward(&batch, &Mode::Eval)?;
        let pooled = pool(
            &out.hidden_states,
            &batch.attention_mask,
            self.pooling,
            self.normalize,
        )?;
        Ok(pooled.to_vec2()?)
    }

    /// Tokenizes and embeds texts in one batch.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        self.embed(&encodings)
    }
}
