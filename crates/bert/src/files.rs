//! Writing files so that a reader, or a run that crashes half-way, never sees half of one.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes a file through a temporary name (see [`writer_id`]) and a rename, so a reader never sees half of it.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_streamed(path, |out| out.write_all(contents))
}

/// As [`write_file`], the contents written by `write` piece by piece (through a buffer), so that they
/// need not be held in memory at once.
pub fn write_streamed(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default(),
        writer_id()
    ));
    let written = std::fs::File::create(&tmp).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        out.flush()
    });
    written.map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A name for one write: the process id and a count within the process, so that two writers of one
/// file (processes, or threads loading the same model) never write into the same temporary file.
fn writer_id() -> String {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}
