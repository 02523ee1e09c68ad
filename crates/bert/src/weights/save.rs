//! Writing checkpoints that `transformers` loads: `model.safetensors` with the canonical weight names
//! (and `"format": "pt"` metadata), `config.json` with `architectures`, and the tokenizer files beside
//! them. Every file is written under a temporary name and renamed, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::files::write::write_file;
use crate::weights::config::BertConfig;

/// The tokenizer files a checkpoint directory carries.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Writes `model.safetensors` and `config.json` (with `architectures`) into `dir`.
pub fn save_model(
    dir: &Path,
    config: &BertConfig,
    architecture: &str,
    vars: &BTreeMap<String, Var>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors: BTreeMap<String, Tensor> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let mut config = config.clone();
    config.architectures = Some(vec![architecture.to_string()]);
    let json =
        serde_json::to_string_pretty(&config).map_err(|e| Error::checkpoint(dir, e.to_string()))?;
    write_file(&dir.join("config.json"), format!("{json}\n").as_bytes())
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
