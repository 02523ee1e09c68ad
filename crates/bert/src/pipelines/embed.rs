//! Sentence embeddings: encoder states pooled into one vector per text, with the pooling and
//! normalisation a sentence-transformers checkpoint declares unless the caller overrides them.

use std::path::Path;

use candle_core::DType;

use crate::error::Result;
use crate::model::{BertModel, Mode};
use crate::pipelines::{mean, LongText, Pipeline, PipelineOptions};
use crate::pooling::dense::Dense;
use crate::pooling::{normalize_rows, pool, EmbeddingConfig, Pooling};
use crate::tokenizer::{Encoding, Tokenizer};

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
    /// The checkpoint's `Dense` modules, applied after pooling.
    dense: Vec<Dense>,
    normalize: bool,
    /// Cuts long texts into windows, when asked to.
    chunker: Option<Tokenizer>,
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
            dense: st.dense.iter().map(Dense::load).collect::<Result<_>>()?,
            normalize: options.normalize.unwrap_or(st.normalize),
            chunker: None,
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

    /// Makes [`Embedder::embed_long`] cut long texts into windows as `long_text` says.
    pub fn with_long_text(mut self, long_text: LongText) -> Result<Self> {
        self.chunker = long_text.chunker(&self.pipeline.tokenizer, self.pipeline.max_length)?;
        Ok(self)
    }

    /// One vector per text; a text longer than the model takes is embedded window by window and the
    /// windows' pooled vectors averaged (then normalised, if the embedder normalises).
    pub fn embed_long(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let Some(chunker) = &self.chunker else {
            return self.embed_texts(texts);
        };
        let mut windows = Vec::new();
        let mut counts = Vec::with_capacity(texts.len());
        for text in texts {
            let w = chunker.encode_windows(text)?;
            counts.push(w.len());
            windows.extend(w);
        }
        let vectors = self.pooled(&windows, false)?;
        let mut rest = vectors.as_slice();
        let mut out = Vec::with_capacity(texts.len());
        for n in counts {
            let (mine, others) = rest.split_at(n);
            rest = others;
            let mut v = mean(mine);
            if self.normalize {
                crate::pooling::normalize(&mut v);
            }
            out.push(v);
        }
        Ok(out)
    }

    /// One vector per encoding, computed as one padded batch.
    pub fn embed(&self, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>> {
        self.pooled(encodings, self.normalize)
    }

    /// [`Embedder::embed`] (pooled, through the checkpoint's `Dense` modules if any), normalised to
    /// unit length or not as `normalize` says.
    pub fn pooled(&self, encodings: &[Encoding], normalize: bool) -> Result<Vec<Vec<f32>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let out = self.pipeline.model.forward(&batch, &Mode::Eval)?;
        let mut vectors = pool(
            &out.hidden_states,
            &batch.attention_mask,
            self.pooling,
            false,
        )?;
        for dense in &self.dense {
            vectors = dense.forward(&vectors)?;
        }
        if normalize {
            vectors = normalize_rows(&vectors)?;
        }
        Ok(vectors.to_vec2()?)
    }

    /// Every token's final hidden state (special tokens included, padding left out), per encoding:
    /// text-embeddings-inference's `embed_all`.
    pub fn token_states(&self, encodings: &[Encoding]) -> Result<Vec<Vec<Vec<f32>>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let out = self.pipeline.model.forward(&batch, &Mode::Eval)?;
        let states: Vec<Vec<Vec<f32>>> = out.hidden_states.to_dtype(DType::F32)?.to_vec3()?;
        Ok(states
            .into_iter()
            .zip(encodings)
            .map(|(mut rows, e)| {
                rows.truncate(e.ids.len());
                rows
            })
            .collect())
    }

    /// One vector per text, in order, computed in batches of `batch` texts cut from the texts sorted
    /// by length (little padding); `on_batch` is told how many texts are done after each.
    pub fn embed_sorted(
        &self,
        texts: &[&str],
        batch: usize,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let encodings = (texts.iter())
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].ids.len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        let mut done = 0;
        for chunk in order.chunks(batch.max(1)) {
            let group: Vec<Encoding> = chunk.iter().map(|&i| encodings[i].clone()).collect();
            for (&i, vector) in chunk.iter().zip(self.embed(&group)?) {
                vectors[i] = vector;
            }
            done += chunk.len();
            on_batch(done);
        }
        Ok(vectors)
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
