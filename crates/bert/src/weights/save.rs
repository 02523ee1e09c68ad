//! Writing checkpoints that `transformers` loads: `model.safetensors` with the canonical weight names
//! (and `"format": "pt"` metadata), `config.json` with `architectures` (a BERT's, or an
//! encoder-decoder's with its `generation_config.json`), and the tokenizer files beside them. Every file
//! is written under a temporary name and renamed, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::files::write::write_file;
use crate::weights::config::BertConfig;
use crate::weights::encoder_decoder_config::EncoderDecoderConfig;

/// The config a checkpoint is written with.
pub trait SavedConfig: Sync {
    /// `config.json`'s text, with `architectures` set to `architecture`.
    fn config_json(&self, architecture: &str) -> Result<String>;

    /// Other files beside it: (name, text).
    fn other_files(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Weights written a second time under another name, as (prefix, prefix of the copy): what a
    /// model shares is stored under both names, as `transformers` expects them.
    fn copies(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl SavedConfig for BertConfig {
    fn config_json(&self, architecture: &str) -> Result<String> {
        let mut config = self.clone();
        config.architectures = Some(vec![architecture.to_string()]);
        to_json(&config)
    }
}

impl SavedConfig for EncoderDecoderConfig {
    fn config_json(&self, architecture: &str) -> Result<String> {
        let mut config = self.clone();
        config.architectures = Some(vec![architecture.to_string()]);
        to_json(&config)
    }

    /// The special tokens generation starts, pads and stops with.
    fn other_files(&self) -> Vec<(&'static str, String)> {
        let generation = serde_json::json!({
            "decoder_start_token_id": self.decoder_start_token_id,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
        });
        vec![("generation_config.json", format!("{generation:#}\n"))]
    }

    /// With `tie_encoder_decoder`, the encoder's weights are the decoder's too.
    fn copies(&self) -> Vec<(String, String)> {
        if !self.tie_encoder_decoder {
            return Vec::new();
        }
        ["embeddings.", "encoder.layer."]
            .iter()
            .map(|part| (format!("encoder.{part}"), format!("decoder.bert.{part}")))
            .collect()
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::Training(e.to_string()))?;
    Ok(format!("{json}\n"))
}

/// The tokenizer files a checkpoint directory carries.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Writes `model.safetensors` and `config.json` (with `architectures`), and the config's other files,
/// into `dir`.
pub fn save_model(
    dir: &Path,
    config: &dyn SavedConfig,
    architecture: &str,
    vars: &BTreeMap<String, Var>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: BTreeMap<String, Tensor> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    for (from, to) in config.copies() {
        let copies: Vec<(String, Tensor)> = (tensors.iter())
            .filter_map(|(name, t)| Some((format!("{to}{}", name.strip_prefix(&from)?), t.clone())))
            .collect();
        tensors.extend(copies);
    }
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    write_file(
        &dir.join("config.json"),
        config.config_json(architecture)?.as_bytes(),
    )?;
    for (name, text) in config.other_files() {
        write_file(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// Copies the tokenizer files present in `from` into `to`.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if source.exists() {
            let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
            write_file(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}
