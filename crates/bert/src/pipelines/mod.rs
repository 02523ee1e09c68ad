//! Task pipelines: text in, task output out, over one loaded model. Each pipeline tokenizes a text on
//! its own ([`Pipeline::encode`], so one bad text fails alone) and runs many encodings as one padded
//! batch.

mod attention;
mod classify;
mod embed;
mod fill_mask;
mod generate;
mod ner;
mod nlu;
mod qa;

use crate::nn::Precision;
use std::path::Path;

use candle_core::Device;

pub use attention::attention_weights;
pub use classify::{Classification, ClassificationScore, ScoreFunction, TextClassifier};
pub use embed::{EmbedOptions, Embedder};
pub use fill_mask::{FillMask, MaskPrediction};
pub use generate::{GeneratedText, Generator};
pub use ner::{Aggregation, Entity, TokenClassifier};
pub use nlu::{IntentSlotParser, Slot, Understanding};
pub use qa::{Answer, QaOptions, QuestionAnswerer};

use crate::error::{Error, Result};
use crate::tokenizer::{Encoding, Tokenizer, Truncation, TruncationSide};
use crate::weights::config::BertConfig;
use crate::weights::encoder_decoder_config::{is_encoder_decoder, EncoderDecoderConfig};
use crate::weights::params::LoadReport;
use crate::weights::pretrained::Pretrained;

/// What a pipeline does with a text longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongText {
    /// Keep the first `max_length` tokens (noted on stderr by the CLI).
    #[default]
    Truncate,
    /// Cut it into windows of `max_length` tokens, `stride` shared by neighbours, and average the
    /// windows' results (embeddings before normalisation; label scores).
    Chunk { stride: usize },
}

impl LongText {
    /// The windowing tokenizer for `Chunk`, from a pipeline's tokenizer.
    fn chunker(self, tokenizer: &Tokenizer, max_length: usize) -> Result<Option<Tokenizer>> {
        match self {
            LongText::Truncate => Ok(None),
            LongText::Chunk { stride } => {
                Ok(Some(tokenizer.clone().with_windows(max_length, stride)?))
            }
        }
    }
}

/// The mean of equal-length vectors.
pub fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let n = vectors.len().max(1) as f32;
    let mut sum = vec![0f32; vectors.first().map_or(0, Vec::len)];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    sum.iter().map(|s| s / n).collect()
}

/// Settings every pipeline shares.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Tokens per text, special tokens included; default: the model's maximum.
    pub max_length: Option<usize>,
    pub truncation: Truncation,
    /// The number format of the model's Linear layers.
    pub precision: Precision,
}

/// The tokenizer of `dir`, truncating at `options.max_length`, or by default at the smallest of the
/// model's positions, the tokenizer's `model_max_length` and `preferred_max`. Returns the limit too.
pub fn load_tokenizer(
    dir: &Path,
    options: &PipelineOptions,
    preferred_max: Option<usize>,
) -> Result<(Tokenizer, usize)> {
    let tokenizer = Tokenizer::from_dir(dir)?;
    let config_path = dir.join("config.json");
    let model_max = if !config_path.exists() {
        None
    } else if is_encoder_decoder(&config_path)? {
        let config = EncoderDecoderConfig::from_file(&config_path)?;
        Some(config.encoder.max_position_embeddings)
    } else {
        Some(BertConfig::from_file(&config_path)?.max_position_embeddings)
    };
    let max_length = match (options.max_length, model_max) {
        (Some(n), Some(limit)) if n > limit => {
            return Err(Error::InvalidInput(format!(
                "--max-length {n} exceeds the model's maximum of {limit} positions"
            )))
        }
        (Some(n), _) if n < 2 => {
            return Err(Error::InvalidInput(format!(
                "--max-length {n} leaves no room for [CLS] and [SEP]"
            )))
        }
        (Some(n), _) => n,
        (None, _) => [model_max, tokenizer.model_max_length(), preferred_max]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(usize::MAX),
    };
    let tokenizer = tokenizer.with_truncation(max_length, options.truncation)?;
    Ok((tokenizer, max_length))
}

/// A tokenizer and model loaded together, with the maximum length resolved.
pub struct Pipeline<M> {
    pub tokenizer: Tokenizer,
    pub config: BertConfig,
    pub model: M,
    pub report: LoadReport,
    pub max_length: usize,
    pub device: Device,
}

impl<M> Pipeline<M> {
    /// Loads `dir` with `build`; `preferred_max` is a pipeline's own default limit (sentence-transformers'
    /// `max_seq_length`), used when the options give none.
    pub fn load(
        dir: &Path,
        options: &PipelineOptions,
        preferred_max: Option<usize>,
        build: impl FnOnce(&crate::weights::params::Params, &BertConfig) -> Result<M>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let (tokenizer, max_length) = load_tokenizer(dir, options, preferred_max)?;
        let pretrained = Pretrained::load_as(dir, &device, options.precision, build)?;
        let vocab = tokenizer.vocab_size();
        if vocab > pretrained.config.vocab_size {
            return Err(Error::Tokenizer {
                path: dir.to_path_buf(),
                message: format!(
                    "the tokenizer has {vocab} tokens but config.json's vocab_size is {}",
                    pretrained.config.vocab_size
                ),
            });
        }
        Ok(Pipeline {
            tokenizer,
            config: pretrained.config,
            model: pretrained.model,
            report: pretrained.report,
            max_length,
            device,
        })
    }

    /// Tokenizes one text.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.tokenizer.encode(text)
    }

    /// Tokenizes a text pair (token types 0 and 1).
    pub fn encode_pair(&self, text: &str, pair: &str) -> Result<Encoding> {
        self.encode_pair_from(text, pair, TruncationSide::Right)
    }

    /// [`Pipeline::encode_pair`], cutting a too-long pair at `side`.
    pub fn encode_pair_from(
        &self,
        text: &str,
        pair: &str,
        side: TruncationSide,
    ) -> Result<Encoding> {
        if self.config.type_vocab_size < 2 {
            return Err(Error::InvalidInput(format!(
                "this model has type_vocab_size {}: it takes single texts, not pairs",
                self.config.type_vocab_size
            )));
        }
        self.tokenizer.encode_pair_from(text, pair, side)
    }

    /// Pads encodings into one batch.
    pub fn batch(&self, encodings: &[Encoding]) -> Result<crate::Batch> {
        crate::Batch::from_encodings(encodings, self.tokenizer.pad_id(), &self.device)
    }
}

/// Softmax of one row of logits, on the host (scores for output, not for training).
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}
