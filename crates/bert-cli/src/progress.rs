//! Long work on the terminal: the training progress line (step, loss, learning rate, tokens/s, ETA),
//! the stop flag SIGINT/SIGTERM set so a run can save before it exits, and the progress bar of
//! indexing and exporting.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bert::train::StepMetrics;

use crate::distributed::StopNotice;

/// A flag set by the first SIGINT/SIGTERM (the run then does `on_stop` and exits, after `notice` says
/// so); a second one exits at once with status 130.
pub fn stop_flag(on_stop: &'static str, notice: StopNotice) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting now");
            std::process::exit(130);
        }
        if let Some(text) = notice.text(on_stop) {
            eprintln!("\n{text}");
        }
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    Ok(stop)
}

/// The progress line: step, loss, learning rate, tokens/s, ETA. Redrawn in place on a terminal, a line
/// per `--log-every` steps otherwise.
pub struct Progress {
    terminal: bool,
    every: usize,
    max_steps: usize,
    first_step: usize,
    started: Instant,
    tokens_per_second: f64,
}

impl Progress {
    pub fn new(every: usize) -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            every: every.max(1),
            max_steps: 0,
            first_step: 0,
            started: Instant::now(),
            tokens_per_second: 0.0,
        }
    }

    /// Announces the run.
    pub fn start(&mut self, step: usize, max_steps: usize, parameters: usize) {
        self.max_steps = max_steps;
        self.first_step = step;
        self.started = Instant::now();
        let from = if step > 0 {
            format!(", resuming at step {step}")
        } else {
            String::new()
        };
        eprintln!(
            "training {:.1}M parameters for {max_steps} steps{from}",
            parameters as f64 / 1e6
        );
    }

    /// Redraws the line after an optimizer step.
    pub fn step(&mut self, m: &StepMetrics) {
        let smoothing = if self.tokens_per_second == 0.0 {
            1.0
        } else {
            0.1
        };
        self.tokens_per_second += smoothing * (m.tokens_per_second - self.tokens_per_second);
        if !self.terminal && !m.step.is_multiple_of(self.every) {
            return;
        }
        let done = (m.step - self.first_step).max(1) as f64;
        let per_step = self.started.elapsed().as_secs_f64() / done;
        let eta = per_step * self.max_steps.saturating_sub(m.step) as f64;
        let line = format!(
            "step {}/{} | epoch {:.2} | loss {:.4} | lr {:.2e} | {:.0} tok/s | ETA {}",
            m.step,
            self.max_steps,
            m.epoch,
            m.loss,
            m.lr,
            self.tokens_per_second,
            duration(eta)
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    /// A message on its own line (an evaluation, a saved checkpoint).
    pub fn note(&self, line: &str) {
        self.finish();
        eprintln!("{line}");
    }

    /// Ends the redrawn line.
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A progress bar over bytes read (or rows sent): redrawn in place on a terminal, a line per tenth
/// otherwise.
pub struct ByteProgress {
    /// Counting bytes (shown in MB) rather than rows.
    bytes: bool,
    terminal: bool,
    started: Instant,
    last_tenth: u64,
}

impl ByteProgress {
    pub fn new(bytes: bool) -> Self {
        ByteProgress {
            bytes,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_tenth: 0,
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        let fraction = done as f64 / total.max(1) as f64;
        let tenth = (fraction * 10.0) as u64;
        if !self.terminal && tenth == self.last_tenth {
            return;
        }
        self.last_tenth = tenth;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if fraction > 0.0 {
            elapsed * (1.0 / fraction - 1.0)
        } else {
            0.0
        };
        let filled = (fraction * 30.0) as usize;
        let amount = if self.bytes {
            format!("{:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
        } else {
            format!("{done}/{total} rows")
        };
        let line = format!(
            "[{}{}] {:5.1}% {amount}, ETA {:.0} s",
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30)),
            fraction * 100.0,
            eta
        );
        if self.terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
