//! `EncoderDecoderConfig`: the `config.json` of `transformers`' `EncoderDecoderModel` (BERT2BERT): a BERT
//! encoder config, a BERT decoder config (`is_decoder` and `add_cross_attention`), the special tokens
//! generation starts, pads and stops with, and whether the decoder shares the encoder's weights
//! (`tie_encoder_decoder`, Rothe et al.'s BERTShare).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_json, Error, Result};
use crate::weights::config::BertConfig;

/// The `model_type` of an encoder-decoder's `config.json`.
pub const ENCODER_DECODER: &str = "encoder-decoder";

/// The contents of an encoder-decoder `config.json`. Field names are the file's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderDecoderConfig {
    pub encoder: BertConfig,
    pub decoder: BertConfig,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The decoder's embeddings and blocks are the encoder's (cross-attention stays the decoder's own).
    #[serde(default)]
    pub tie_encoder_decoder: bool,
    #[serde(default = "model_type")]
    pub model_type: String,
    #[serde(default = "yes")]
    pub is_encoder_decoder: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
}

fn model_type() -> String {
    ENCODER_DECODER.into()
}

fn yes() -> bool {
    true
}

impl EncoderDecoderConfig {
    /// A BERT2BERT config from an encoder's and a decoder's BERT configs (the decoder is made a decoder
    /// with cross-attention), starting with `[CLS]`, padding with `[PAD]` and stopping at `[SEP]`, as
    /// the warm-started models of Rothe et al. do.
    pub fn warm_start(
        encoder: BertConfig,
        mut decoder: BertConfig,
        [start, pad, eos]: [u32; 3],
        tie_encoder_decoder: bool,
    ) -> Self {
        decoder.is_decoder = true;
        decoder.add_cross_attention = true;
        let mut encoder = encoder;
        for config in [&mut encoder, &mut decoder] {
            config.architectures = None;
            config.id2label = None;
            config.label2id = None;
            config.num_labels = None;
            config.problem_type = None;
        }
        EncoderDecoderConfig {
            encoder,
            decoder,
            decoder_start_token_id: Some(start),
            pad_token_id: Some(pad),
            eos_token_id: Some(eos),
            tie_encoder_decoder,
            model_type: model_type(),
            is_encoder_decoder: true,
            architectures: Some(vec!["EncoderDecoderModel".into()]),
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: EncoderDecoderConfig = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the settings; errors name `path` and the key.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.model_type != ENCODER_DECODER {
            return Err(Error::config(
                path,
                "model_type",
                format!("`{}` is not `{ENCODER_DECODER}`", self.model_type),
            ));
        }
        self.encoder.validate(path, "encoder.")?;
        self.decoder.validate(path, "decoder.")?;
        let (e, d) = (&self.encoder, &self.decoder);
        for (key, ok) in [
            ("is_decoder", d.is_decoder),
            ("add_cross_attention", d.add_cross_attention),
        ] {
            if !ok {
                let message = "must be true: the decoder attends to the encoder";
                return Err(Error::config(path, &format!("decoder.{key}"), message));
            }
        }
        if e.hidden_size != d.hidden_size {
            return Err(Error::config(
                path,
                "decoder.hidden_size",
                format!(
                    "{} differs from the encoder's {} (a projection between them is not supported)",
                    d.hidden_size, e.hidden_size
                ),
            ));
        }
        if self.tie_encoder_decoder {
            self.check_shareable(path)?;
        }
        Ok(())
    }

    /// With `tie_encoder_decoder`, every shape the two share must agree.
    fn check_shareable(&self, path: &Path) -> Result<()> {
        let (e, d) = (&self.encoder, &self.decoder);
        for (key, a, b) in [
            (
                "num_hidden_layers",
                e.num_hidden_layers,
                d.num_hidden_layers,
            ),
            (
                "intermediate_size",
                e.intermediate_size,
                d.intermediate_size,
            ),
            ("vocab_size", e.vocab_size, d.vocab_size),
            (
                "max_position_embeddings",
                e.max_position_embeddings,
                d.max_position_embeddings,
            ),
            ("type_vocab_size", e.type_vocab_size, d.type_vocab_size),
        ] {
            if a != b {
                return Err(Error::config(
                    path,
                    &format!("decoder.{key}"),
                    format!("{b} differs from the encoder's {a}, so `tie_encoder_decoder` cannot share them"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `config.json` describes an encoder-decoder (`"model_type": "encoder-decoder"`).
pub fn is_encoder_decoder(path: &Path) -> Result<bool> {
    #[derive(Deserialize)]
    struct ModelType {
        #[serde(default)]
        model_type: Option<String>,
    }
    let peek: ModelType = read_json(path)?;
    Ok(peek.model_type.as_deref() == Some(ENCODER_DECODER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<EncoderDecoderConfig> {
        let dir = std::env::temp_dir().join(format!("bert-ed-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", json.len()));
        std::fs::write(&path, json).unwrap();
        EncoderDecoderConfig::from_file(&path)
    }

    #[test]
    fn reads_the_transformers_layout_and_names_bad_keys() {
        let config = parse(
            r#"{"model_type": "encoder-decoder", "encoder": {"hidden_size": 64, "num_attention_heads": 2},
                "decoder": {"hidden_size": 64, "num_attention_heads": 2, "is_decoder": true,
                            "add_cross_attention": true}, "decoder_start_token_id": 101}"#,
        )
        .unwrap();
        assert_eq!(config.decoder_start_token_id, Some(101));
        assert!(config.decoder.is_decoder);

        let err = parse(r#"{"model_type": "encoder-decoder", "encoder": {}, "decoder": {}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`decoder.is_decoder`"), "{err}");
        let err = parse(
            r#"{"model_type": "encoder-decoder", "encoder": {"hidden_size": 10}, "decoder": {}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`encoder.num_attention_heads`"),
            "{err}"
        );
        let err = parse(
            r#"{"model_type": "encoder-decoder", "encoder": {}, "tie_encoder_decoder": true,
                "decoder": {"is_decoder": true, "add_cross_attention": true, "num_hidden_layers": 3}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`decoder.num_hidden_layers`"),
            "{err}"
        );
    }
}
