//! Generation with a BERT2BERT encoder-decoder: the source is encoded once, the decoder's
//! cross-attention keys and values are computed once, and the target grows a token at a time over a
//! key/value cache ([`crate::model::DecoderCache`]), by greedy decoding or sampling ([`greedy`]) or by
//! beam search ([`beam`]), under `transformers`' settings and rules ([`config`], [`scores`]), so that the
//! same model gives the same tokens as `generate()`.

pub mod beam;
pub mod config;
pub mod greedy;
pub mod scores;

pub use config::{EarlyStopping, GenerationConfig, GenerationOverrides};

use crate::batch::Batch;
use crate::error::Result;
use crate::model::{EncoderDecoderModel, Mode};

/// One output sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated tokens, without the start token and without the end token.
    pub tokens: Vec<u32>,
    /// Whether it ended with an end token (else it reached the length limit).
    pub ended: bool,
    /// Beam search's score: summed log-probability over `length ** length_penalty`.
    pub score: Option<f32>,
}

impl Generated {
    /// The tokens up to the first of `eos` (which is dropped).
    fn ended_at_eos(tokens: &[u32], eos: &[u32], score: Option<f32>) -> Self {
        let end = tokens.iter().position(|t| eos.contains(t));
        Generated {
            tokens: tokens[..end.unwrap_or(tokens.len())].to_vec(),
            ended: end.is_some(),
            score,
        }
    }
}

/// Generates `num_return_sequences` outputs for each row of `source` (a padded batch of sources of any
/// lengths).
pub fn generate(
    model: &EncoderDecoderModel,
    source: &Batch,
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    config.validate()?;
    let sources = source.input_ids.dim(0)?;
    if sources == 0 {
        return Ok(Vec::new());
    }
    let states = model.encode(source, &Mode::Eval)?;
    if config.num_beams > 1 {
        let cache = model
            .decoder
            .start(&states.repeat_each(config.num_beams)?)?;
        return beam::decode(&model.decoder, cache, sources, config);
    }
    let copies = config.num_return_sequences;
    let cache = model.decoder.start(&states.repeat_each(copies)?)?;
    let outputs = greedy::decode(&model.decoder, cache, sources * copies, config)?;
    Ok(outputs.chunks(copies).map(<[Generated]>::to_vec).collect())
}
