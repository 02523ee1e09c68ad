//! `GenerationConfig`: how to decode, under `transformers`' names and with its defaults (a checkpoint's
//! `generation_config.json` is read as the starting point, and flags override it).

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{read_json, Error, Result};
use crate::weights::encoder_decoder_config::EncoderDecoderConfig;

/// When beam search stops (`early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `false`: stop when the best running beam, at its current length, cannot beat the finished ones.
    #[default]
    Heuristic,
    /// `true`: stop as soon as `num_beams` hypotheses are finished.
    Finished,
    /// `"never"`: stop only when no running beam could ever beat the finished ones.
    Never,
}

impl EarlyStopping {
    fn to_json(self) -> serde_json::Value {
        match self {
            EarlyStopping::Heuristic => false.into(),
            EarlyStopping::Finished => true.into(),
            EarlyStopping::Never => "never".into(),
        }
    }
}

impl std::str::FromStr for EarlyStopping {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "false" => Ok(EarlyStopping::Heuristic),
            "true" => Ok(EarlyStopping::Finished),
            "never" => Ok(EarlyStopping::Never),
            other => Err(format!("`{other}`: expected true, false or never")),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::Finished),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {
                Ok(EarlyStopping::Heuristic)
            }
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(serde::de::Error::custom(format!(
                "`{other}`: expected true, false or \"never\""
            ))),
        }
    }
}

impl Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// One token id or a list of them (`eos_token_id` may be either).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}

/// Decoding settings; the names and defaults are `transformers`' `GenerationConfig`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// The longest output, the decoder's start token included (used when `max_new_tokens` is not set).
    pub max_length: usize,
    /// Tokens to generate at most, not counting the start token.
    pub max_new_tokens: Option<usize>,
    /// `[SEP]` (the end) is forbidden before this many new tokens.
    pub min_new_tokens: Option<usize>,
    /// 1 for greedy decoding or sampling, more for beam search.
    pub num_beams: usize,
    /// Beam scores are divided by `length ** length_penalty`: above 0 favours longer outputs.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// No n-gram of this size occurs twice in an output (0: no constraint).
    pub no_repeat_ngram_size: usize,
    /// Sample the next token instead of taking the most likely one.
    pub do_sample: bool,
    /// Sampling: only from the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Sampling: only from the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Sampling: logits are divided by it (below 1 sharpens, above 1 flattens).
    pub temperature: f32,
    /// Outputs per input (at most `num_beams` for beam search).
    pub num_return_sequences: usize,
    /// Seed of sampling (not a `transformers` key: there the global torch seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub decoder_start_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    #[serde(deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_length: 20,
            max_new_tokens: None,
            min_new_tokens: None,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            no_repeat_ngram_size: 0,
            do_sample: false,
            top_k: 50,
            top_p: 1.0,
            temperature: 1.0,
            num_return_sequences: 1,
            seed: None,
            decoder_start_token_id: None,
            pad_token_id: None,
            eos_token_id: Vec::new(),
        }
    }
}

impl GenerationConfig {
    /// The settings of a checkpoint directory: `generation_config.json` when present, the special
    /// tokens filled in from the model's config where it lacks them.
    pub fn for_model(dir: &Path, model: &EncoderDecoderConfig) -> Result<Self> {
        let path = dir.join("generation_config.json");
        let mut config: GenerationConfig = if path.exists() {
            read_json(&path)?
        } else {
            GenerationConfig::default()
        };
        config.decoder_start_token_id = config
            .decoder_start_token_id
            .or(model.decoder_start_token_id);
        config.pad_token_id = config.pad_token_id.or(model.pad_token_id);
        if config.eos_token_id.is_empty() {
            config.eos_token_id.extend(model.eos_token_id);
        }
        Ok(config)
    }

    /// The longest output, start token included: `1 + max_new_tokens`, else `max_length`.
    pub fn total_length(&self) -> usize {
        self.max_new_tokens.map_or(self.max_length, |n| n + 1)
    }

    /// Checks the settings, naming the one at fault in `transformers`' terms.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidInput(message));
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if self.num_return_sequences == 0 {
            return bad("num_return_sequences must be at least 1".into());
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "num_return_sequences ({}) cannot exceed num_beams ({})",
                self.num_return_sequences, self.num_beams
            ));
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return bad("greedy decoding returns one sequence: set num_beams or do_sample".into());
        }
        if self.num_beams > 1 && self.do_sample {
            return bad("sampling with num_beams > 1 (beam sampling) is not supported".into());
        }
        if self.total_length() < 2 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature must be positive, not {}",
                self.temperature
            ));
        }
        if self.do_sample && !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], not {}", self.top_p));
        }
        if self.decoder_start_token_id.is_none() {
            return bad("the model names no decoder_start_token_id (config.json)".into());
        }
        Ok(())
    }
}

/// Settings given for one call (command-line flags, a request's `parameters`), each replacing the
/// checkpoint's when present. Unknown keys are refused, naming them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationOverrides {
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f32>,
    pub early_stopping: Option<EarlyStopping>,
    pub no_repeat_ngram_size: Option<usize>,
    pub do_sample: Option<bool>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub temperature: Option<f32>,
    pub num_return_sequences: Option<usize>,
    pub seed: Option<u64>,
}

impl GenerationOverrides {
    /// `base` with these settings in place of its own, checked.
    pub fn apply(&self, base: &GenerationConfig) -> Result<GenerationConfig> {
        let mut c = base.clone();
        c.max_new_tokens = self.max_new_tokens.or(c.max_new_tokens);
        c.min_new_tokens = self.min_new_tokens.or(c.min_new_tokens);
        c.num_beams = self.num_beams.unwrap_or(c.num_beams);
        c.length_penalty = self.length_penalty.unwrap_or(c.length_penalty);
        c.early_stopping = self.early_stopping.unwrap_or(c.early_stopping);
        c.no_repeat_ngram_size = self.no_repeat_ngram_size.unwrap_or(c.no_repeat_ngram_size);
        c.do_sample = self.do_sample.unwrap_or(c.do_sample);
        c.top_k = self.top_k.unwrap_or(c.top_k);
        c.top_p = self.top_p.unwrap_or(c.top_p);
        c.temperature = self.temperature.unwrap_or(c.temperature);
        c.num_return_sequences = self.num_return_sequences.unwrap_or(c.num_return_sequences);
        c.seed = self.seed.or(c.seed);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_keys_and_checks_them() {
        let c: GenerationConfig = serde_json::from_str(
            r#"{"num_beams": 4, "early_stopping": "never", "eos_token_id": [3, 7],
                "decoder_start_token_id": 2, "transformers_version": "5.25.0"}"#,
        )
        .unwrap();
        assert_eq!(c.num_beams, 4);
        assert_eq!(c.early_stopping, EarlyStopping::Never);
        assert_eq!(c.eos_token_id, [3, 7]);
        assert_eq!(c.total_length(), 20);
        c.validate().unwrap();
        let zero = GenerationConfig {
            num_beams: 0,
            ..c.clone()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_beams"));
        let many = GenerationConfig {
            num_return_sequences: 5,
            ..c
        };
        assert!(many
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cannot exceed"));
    }
}
