//! Writing JSON Lines to stdout, and the notes that go to stderr once per run.

use std::io::{BufWriter, Stdout, Write};

use anyhow::Result;
use serde_json::json;

/// Buffered JSON Lines on stdout.
pub struct Output {
    out: BufWriter<Stdout>,
    failed_lines: usize,
    truncation_noted: bool,
}

impl Output {
    pub fn new() -> Self {
        Output {
            out: BufWriter::new(std::io::stdout()),
            failed_lines: 0,
            truncation_noted: false,
        }
    }

    /// Writes one already-serialised JSON object.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Reports a bad input line on stderr and in its place on stdout.
    pub fn line_error(&mut self, line: usize, message: &str) -> Result<()> {
        eprintln!("line {line}: {message}");
        self.failed_lines += 1;
        self.write_line(&json!({"line": line, "error": message}).to_string())
    }

    /// Says once per run that inputs were truncated.
    pub fn note_truncation(&mut self, line: usize, max_length: usize) {
        if !self.truncation_noted {
            self.truncation_noted = true;
            eprintln!(
                "note: inputs longer than {max_length} tokens are truncated (first: line {line}); see --max-length"
            );
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }

    pub fn failed_lines(&self) -> usize {
        self.failed_lines
    }
}

/// Whether an error is a closed stdout (`bert ... | head`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .and_then(|s| s.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}
