//! What `bert` keeps on disk between runs so that loading a model is fast: aligned copies of
//! checkpoints for f32 inference ([`aligned`]) and Linear layers converted to bf16 or int8
//! ([`converted`]). Both live under one directory ([`cache_dir`]) and are only ever a copy: deleting
//! it costs the next load its conversion, nothing else.

use std::path::{Path, PathBuf};

use crate::files::hash::fnv1a;

pub mod aligned;
pub mod converted;

pub use aligned::aligned_copy;
pub use converted::PackedCache;

/// The cache directory the environment names (`None` when turned off or no home is known).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name);
    match var("BERT_CACHE") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => var("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))
            .map(|cache| cache.join("bert")),
    }
}

/// A name for a checkpoint's cached copies: FNV-1a of each source's canonical path, size and
/// modification time.
pub(crate) fn key(sources: &[PathBuf]) -> Option<String> {
    let mut ids = Vec::with_capacity(sources.len());
    for source in sources {
        let path = source.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        ids.push(format!(
            "{}\0{}\0{}\0",
            path.display(),
            meta.len(),
            modified.as_nanos()
        ));
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    Some(format!("{:016x}", fnv1a(&ids)))
}
