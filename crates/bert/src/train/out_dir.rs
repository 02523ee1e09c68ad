//! The output directory of a training run: a new run needs it free of another run's files (or
//! `--overwrite`, which removes them only once the new run has checked its inputs); `--resume` needs a
//! checkpoint there.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::train::checkpoints;

/// What the output directory holds.
pub struct OutDir {
    /// The newest checkpoint, when resuming.
    pub resume_from: Option<PathBuf>,
    /// Another run's files that `--overwrite` removes.
    previous_run: Vec<PathBuf>,
}

impl OutDir {
    /// Inspects `out` (creating it): `run_files` are the files a finished run leaves there.
    pub fn inspect(out: &Path, run_files: &[&str], resume: bool, overwrite: bool) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let existing = checkpoints(out)?;
        if resume {
            return match existing.last() {
                Some((_, dir)) => Ok(OutDir {
                    resume_from: Some(dir.clone()),
                    previous_run: Vec::new(),
                }),
                None => Err(Error::InvalidInput(format!(
                    "--resume: {} holds no checkpoint to resume from",
                    out.display()
                ))),
            };
        }
        let earlier_files: Vec<&str> = run_files
            .iter()
            .copied()
            .filter(|f| out.join(f).exists())
            .collect();
        let occupied = !existing.is_empty() || !earlier_files.is_empty();
        if occupied && !overwrite {
            return Err(Error::InvalidInput(format!(
                "{} holds another run ({}); use --resume to continue it or --overwrite to replace it",
                out.display(),
                existing
                    .last()
                    .map(|(step, _)| format!("checkpoint-{step}"))
                    .unwrap_or_else(|| earlier_files.join(", "))
            )));
        }
        let previous_run = existing
            .into_iter()
            .map(|(_, dir)| dir)
            .chain(earlier_files.iter().map(|f| out.join(f)))
            .collect();
        Ok(OutDir {
            resume_from: None,
            previous_run,
        })
    }

    /// Removes the earlier run's files.
    pub fn clear_previous_run(&self) -> Result<()> {
        for path in &self.previous_run {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            removed.map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    }
}
