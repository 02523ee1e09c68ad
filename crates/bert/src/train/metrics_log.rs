//! `metrics.jsonl`: one JSON line per logged step or evaluation, kept across resumed runs, and the loss
//! curve (`loss.png`) drawn from it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::write::write_file;
use crate::plot::write_loss_curve;

/// One logged training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    /// Epochs trained, the running one as a fraction.
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    /// Wall time of this optimizer step (data preparation included).
    pub step_seconds: f64,
    pub elapsed_seconds: f64,
    /// Data-parallel runs: seconds of this step spent summing gradients across ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_seconds: Option<f64>,
}

/// The open `metrics.jsonl` of a run.
pub struct MetricsLog {
    path: PathBuf,
    /// None on the ranks other than 0 of a data-parallel run, which log nothing.
    file: Option<std::fs::File>,
}

impl MetricsLog {
    /// Opens the log for appending, first dropping lines past `step` (written after the checkpoint
    /// being resumed, by a run that then crashed).
    pub fn open(out: &Path, step: usize) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            write_file(&path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            path,
            file: Some(file),
        })
    }

    /// A log that writes nothing (for the ranks other than 0).
    pub fn discard() -> Self {
        MetricsLog {
            path: PathBuf::new(),
            file: None,
        }
    }

    pub fn write(&mut self, value: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(value).map_err(|e| Error::Training(e.to_string()))?;
        match &mut self.file {
            Some(file) => writeln!(file, "{line}").map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Flushes the log to disk (before a checkpoint refers to it).
    pub fn flush(&mut self) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        file.flush().map_err(|e| Error::io(&self.path, e))?;
        file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// Redraws `loss.png` from `metrics.jsonl` (which holds every run of a resumed training): the training
/// loss, and the held-out loss under `eval_key`.
pub fn draw_loss_curve(out: &Path, eval_key: &str) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = value["step"].as_f64().unwrap_or(0.0);
        if let Some(loss) = value["loss"].as_f64() {
            train.push((step, loss));
        } else if let Some(loss) = value[eval_key].as_f64() {
            eval.push((step, loss));
        }
    }
    write_loss_curve(&out.join("loss.png"), &train, &eval)
}
