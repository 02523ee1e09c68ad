//! Training checkpoints: `checkpoint-{step}/` directories holding the model (a loadable Hugging Face
//! checkpoint), the optimizer's moments and the trainer's position, written whole under a temporary name
//! and renamed, so an interrupted write never replaces a good checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use serde::{Deserialize, Serialize};

use crate::error::{read_json, Error, Result};
use crate::files::safetensors_write::save_safetensors;
use crate::files::write::write_file;
use crate::train::AdamW;
use crate::weights::save::{copy_tokenizer, save_model, SavedConfig};

/// Where training stands: enough to continue exactly where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Training examples of this epoch already used.
    pub examples_in_epoch: usize,
    /// Tokens trained on so far.
    pub tokens_seen: u64,
    /// Training seconds so far, across runs.
    pub elapsed_seconds: f64,
    /// The settings that decide the data and the updates (seed, batch size...): a resumed run must
    /// use the same ones to continue the same run.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Fine-tuning: the best evaluation so far and the evaluations since it (for early stopping).
    #[serde(default)]
    pub best: serde_json::Value,
}

/// What a checkpoint directory holds besides the model.
pub struct CheckpointParts<'a> {
    pub config: &'a dyn SavedConfig,
    pub architecture: &'a str,
    pub vars: &'a BTreeMap<String, Var>,
    pub optimizer: &'a AdamW,
    pub state: &'a TrainerState,
    pub tokenizer_dir: &'a Path,
}

/// Writes `out/checkpoint-{step}` atomically and keeps only the newest `keep` checkpoints.
pub fn save_checkpoint(out: &Path, parts: &CheckpointParts, keep: usize) -> Result<PathBuf> {
    let name = format!("checkpoint-{}", parts.state.step);
    let final_dir = out.join(&name);
    let tmp = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    save_model(&tmp, parts.config, parts.architecture, parts.vars)?;
    copy_tokenizer(parts.tokenizer_dir, &tmp)?;
    save_safetensors(
        &tmp.join("optimizer.safetensors"),
        &parts.optimizer.state()?,
    )?;
    let state = serde_json::to_string_pretty(parts.state)
        .map_err(|e| Error::checkpoint(&tmp, e.to_string()))?;
    write_file(&tmp.join("trainer_state.json"), state.as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    for old in checkpoints(out)?.into_iter().rev().skip(keep.max(1)) {
        std::fs::remove_dir_all(&old.1).map_err(|e| Error::io(&old.1, e))?;
    }
    Ok(final_dir)
}

/// Complete checkpoints in `out`, oldest first, with their step.
pub fn checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !out.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            path.join("trainer_state.json")
                .exists()
                .then_some((step, path))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Reads a checkpoint's trainer state and restores the optimizer's moments.
pub fn restore_checkpoint(
    dir: &Path,
    optimizer: &mut AdamW,
    device: &Device,
) -> Result<TrainerState> {
    let state: TrainerState = read_json(&dir.join("trainer_state.json"))?;
    let path = dir.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    optimizer.restore(moments.into_iter().collect(), state.step)?;
    Ok(state)
}

/// A resumed run must use the settings its checkpoint was trained with; the error names what changed.
pub fn check_same_settings(
    saved: &serde_json::Value,
    now: &serde_json::Value,
    dir: &Path,
) -> Result<()> {
    if saved.is_null() || saved == now {
        return Ok(());
    }
    let changed: Vec<String> = now
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| saved.get(key.as_str()) != Some(value))
        .map(|(key, value)| {
            format!(
                "{key} {} -> {value}",
                saved.get(key.as_str()).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect();
    Err(Error::InvalidInput(format!(
        "--resume with other settings than {} was trained with ({}); resume with the same ones",
        dir.display(),
        changed.join(", ")
    )))
}
