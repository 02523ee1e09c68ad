//! Writing checkpoints that `transformers` loads: `model.safetensors` with the canonical weight names
//! (and `"format": "pt"` metadata), `config.json` with `architectures`, and the tokenizer files beside
//! them. Every file is written under a temporary name and renamed, so a crash never leaves half a file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::files::write_file;

/// The tokenizer files a checkpoint directory carries.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Writes named tensors as safetensors, atomically.
pub fn save_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let contiguous = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(contiguous, Some(metadata), &tmp)
        .map_err(|e| Error::checkpoint(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

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
