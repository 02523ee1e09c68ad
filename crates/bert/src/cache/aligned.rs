//! Aligned copies of checkpoints for f32 inference. An f32 Linear weight is used in place in its
//! memory-mapped file only when it starts on a 64-byte boundary (the short-input kernel streams weights
//! in whole vectors: see [`crate::files::safetensors::MappedF32::is_cache_aligned`]); `transformers`
//! writes tensors 8-byte aligned, so such weights would be copied into memory at every load (0.2 s for
//! BERT-base, and over a second on a machine slow to hand out fresh memory). Instead the first f32 load
//! writes the checkpoint once, in the layout `bert` saves (every tensor whose size is a multiple of 64
//! bytes on a 64-byte boundary), into a cache directory, and later loads map that copy: nothing is
//! allocated or copied. The copy is keyed by each source file's path, size and modification time, so a
//! changed checkpoint gets a fresh copy.
//!
//! The cache is `$BERT_CACHE` (default `$XDG_CACHE_HOME/bert`, else `~/.cache/bert`), in `aligned/`;
//! `BERT_CACHE=` (empty) turns it off. Its files can be deleted at any time. When the copy cannot be
//! written (no space, a read-only home) loading carries on as before, copying the weights in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::cache::key;
use crate::error::Result;
use crate::files::safetensors::SafetensorsFiles;
use crate::files::safetensors_write::save_safetensors;

/// The aligned copy of the checkpoint in `sources` (already opened as `files`) under `cache`, written
/// now if it is not there yet; `None` when the files need no copy or it cannot be made.
pub fn aligned_copy(
    sources: &[PathBuf],
    files: &SafetensorsFiles,
    cache: &Path,
) -> Option<PathBuf> {
    if files.f32_cache_aligned() {
        return None;
    }
    let path = cache
        .join("aligned")
        .join(format!("{}.safetensors", key(sources)?));
    if path.is_file() {
        return Some(path);
    }
    write_copy(files, &path).ok()?;
    Some(path)
}

/// Every tensor of `files`, rewritten aligned into `path`.
fn write_copy(files: &SafetensorsFiles, path: &Path) -> Result<()> {
    let names: Vec<String> = files.names().map(String::from).collect();
    let mut tensors = BTreeMap::new();
    for name in names {
        let tensor = files.load(&name, &Device::Cpu)?;
        tensors.insert(name, tensor);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| crate::error::Error::io(parent, e))?;
    }
    save_safetensors(path, &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;
    use safetensors::tensor::{Dtype, TensorView};

    /// A file laid out as `transformers` writes it: a 5-value tensor first, so the next starts 8-byte
    /// but not 64-byte aligned.
    fn misaligned_file(dir: &Path) -> PathBuf {
        let small: Vec<u8> = [1f32, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let big: Vec<u8> = (0..256).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let views = [
            (
                "a.small",
                TensorView::new(Dtype::F32, vec![5], &small).unwrap(),
            ),
            (
                "b.weight",
                TensorView::new(Dtype::F32, vec![16, 16], &big).unwrap(),
            ),
        ];
        let path = dir.join("model.safetensors");
        safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
        path
    }

    #[test]
    fn a_misaligned_checkpoint_is_copied_once_aligned_and_an_aligned_one_not_at_all() {
        let dir = std::env::temp_dir().join(format!("bert-aligned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = misaligned_file(&dir);
        let files = SafetensorsFiles::open(std::slice::from_ref(&source)).unwrap();
        assert!(!files.f32_cache_aligned());
        let cache = dir.join("cache");
        let copy = aligned_copy(std::slice::from_ref(&source), &files, &cache).unwrap();
        let written = std::fs::metadata(&copy).unwrap().modified().unwrap();
        let again = aligned_copy(std::slice::from_ref(&source), &files, &cache).unwrap();
        assert_eq!(again, copy);
        assert_eq!(
            std::fs::metadata(&again).unwrap().modified().unwrap(),
            written
        );

        let aligned = SafetensorsFiles::open(std::slice::from_ref(&copy)).unwrap();
        assert!(aligned.f32_cache_aligned());
        let mapped = aligned.mapped_f32("b.weight").unwrap();
        assert!(mapped.is_cache_aligned());
        let original: Tensor = files.load("b.weight", &Device::Cpu).unwrap();
        assert_eq!(
            mapped.values(),
            original.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(
            aligned_copy(std::slice::from_ref(&copy), &aligned, &cache),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
