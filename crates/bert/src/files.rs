//! Writing files so that a reader, or a run that crashes half-way, never sees half of one.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes a file through a temporary name and a rename, so a reader never sees half of it.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, contents).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
