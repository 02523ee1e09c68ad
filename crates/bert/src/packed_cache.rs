//! Converted Linear weights kept on disk, so that a model loaded in bf16 or int8 a second time maps
//! its layers in place instead of converting the f32 checkpoint again. Converting BERT-base takes
//! ~0.3 s and allocates its converted weights afresh (170 MB in bf16), which on this machine's VM
//! costs over a second more after an idle spell; a mapped layer allocates nothing at load, and its
//! pages come from the page cache when first used.
//!
//! Each layer is one small safetensors file (see [`PackedLinear::cache_views`]), written when it is
//! first converted, in `packed/<checkpoint>-<precision>-<path>-<code>/` under the cache directory of
//! [`crate::aligned_copy::cache_dir`] (`$BERT_CACHE`; `BERT_CACHE=` turns it off). `<checkpoint>`
//! hashes the checkpoint files' paths, sizes and modification times, so a changed checkpoint gets
//! fresh copies; `<path>` is `amx` (tiles) or `emulated`; `<code>` hashes the code that converts and
//! lays out the weights, so that another build never reads them, and a build that writes its own
//! removes the other builds' ones. A file that cannot be written or read is skipped: the layer is
//! converted as before.

use std::path::{Path, PathBuf};

use crate::aligned_copy::{cache_dir, fnv1a, key};
use crate::error::{Error, Result};
use crate::model::amx;
use crate::model::quantized::{PackedLinear, Precision};
use crate::safetensors_file::SafetensorsFiles;
use crate::save::save_views;

/// Where one checkpoint's converted layers, in one precision, are kept.
#[derive(Debug, Clone)]
pub struct PackedCache {
    dir: PathBuf,
    /// How the names of this checkpoint's caches in this precision and path start: those of other
    /// builds (another hash) are removed when this one is first written.
    stem: Option<String>,
}

impl PackedCache {
    /// The cache of the checkpoint in `sources` in `precision`, under the cache directory the
    /// environment names; `None` when that is turned off or a source cannot be read.
    pub fn for_checkpoint(sources: &[PathBuf], precision: Precision) -> Option<Self> {
        let path = if amx::available() { "amx" } else { "emulated" };
        let stem = format!("{}-{precision}-{path}-", key(sources)?);
        Some(Self::named(&cache_dir()?.join("packed"), stem))
    }

    /// The cache `<stem><hash of this build's conversion code>` in `parent`.
    fn named(parent: &Path, stem: String) -> Self {
        PackedCache {
            dir: parent.join(format!("{stem}{CONVERSION_CODE:016x}")),
            stem: Some(stem),
        }
    }

    /// A cache kept in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        PackedCache {
            dir: dir.into(),
            stem: None,
        }
    }

    /// `layer`, converted on an earlier load, mapped in place; `None` when it is not cached or its
    /// file does not hold an `(out_dim, in_dim)` layer in `precision`.
    pub fn load(
        &self,
        layer: &str,
        in_dim: usize,
        out_dim: usize,
        precision: Precision,
    ) -> Option<PackedLinear> {
        self.load_as(layer, (in_dim, out_dim), precision, amx::available())
    }

    /// As [`PackedCache::load`], as tiles (AMX must be available) or emulated.
    fn load_as(
        &self,
        layer: &str,
        dims: (usize, usize),
        precision: Precision,
        tiles: bool,
    ) -> Option<PackedLinear> {
        let path = self.path(layer);
        if !path.is_file() {
            return None;
        }
        let file = SafetensorsFiles::open(&[path]).ok()?;
        PackedLinear::from_cache(&file, dims, precision, tiles)
    }

    /// Keeps `linear` for later loads of `layer`.
    pub fn store(&self, layer: &str, linear: &PackedLinear) -> Result<()> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
            self.remove_superseded();
        }
        save_views(&self.path(layer), &linear.cache_views())
    }

    /// Removes the caches of this checkpoint, precision and path that other builds made. A process
    /// still using one keeps its mapped files (their pages live until unmapped).
    fn remove_superseded(&self) {
        let (Some(stem), Some(parent), Some(own)) =
            (&self.stem, self.dir.parent(), self.dir.file_name())
        else {
            return;
        };
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != own && name.to_string_lossy().starts_with(stem.as_str()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    fn path(&self, layer: &str) -> PathBuf {
        self.dir.join(format!("{layer}.safetensors"))
    }
}

/// FNV-1a of the sources that decide converted weights' values and layout, computed at build time.
const CONVERSION_CODE: u64 = fnv1a(&[
    include_str!("model/quantized.rs"),
    include_str!("model/number_formats.rs"),
    include_str!("model/amx.rs"),
]);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quantized::tests::values;

    #[test]
    fn a_cached_layer_maps_back_and_computes_what_the_converted_one_did() {
        let dir = std::env::temp_dir().join(format!("bert-packed-{}", std::process::id()));
        let cache = PackedCache::in_dir(&dir);
        let (rows, n, k) = (5, 40, 70);
        let (x, w, b) = (values(rows * k, 1), values(n * k, 2), values(n, 3));
        let paths: &[bool] = if amx::available() {
            &[true, false]
        } else {
            &[false]
        };
        for precision in [Precision::Bf16, Precision::Int8] {
            for &tiles in paths {
                let layer = format!("encoder.{precision}.{tiles}");
                assert!(cache.load_as(&layer, (k, n), precision, tiles).is_none());
                let converted = PackedLinear::with_tiles(&w, &b, n, precision, tiles);
                cache.store(&layer, &converted).unwrap();
                let cached = cache
                    .load_as(&layer, (k, n), precision, tiles)
                    .expect("stored");
                assert!(format!("{cached:?}").contains("mapped"), "{cached:?}");
                assert_eq!(cached.forward(&x, rows), converted.forward(&x, rows));
                assert_eq!(
                    cached.forward_gelu(&x, rows),
                    converted.forward_gelu(&x, rows)
                );

                // Another shape, precision or path is not this layer.
                assert!(cache
                    .load_as(&layer, (k + 1, n), precision, tiles)
                    .is_none());
                assert!(cache
                    .load_as(&layer, (k, n - 1), precision, tiles)
                    .is_none());
                let other = match precision {
                    Precision::Bf16 => Precision::Int8,
                    _ => Precision::Bf16,
                };
                assert!(cache.load_as(&layer, (k, n), other, tiles).is_none());
                if paths.len() == 2 {
                    assert!(cache.load_as(&layer, (k, n), precision, !tiles).is_none());
                }
            }
        }
        // A damaged file is skipped, and a new conversion replaces it.
        let layer = "encoder.int8.false";
        let bytes = std::fs::read(cache.path(layer)).unwrap();
        std::fs::write(cache.path(layer), &bytes[..bytes.len() / 2]).unwrap();
        assert!(cache
            .load_as(layer, (k, n), Precision::Int8, false)
            .is_none());
        let converted = PackedLinear::with_tiles(&w, &b, n, Precision::Int8, false);
        cache.store(layer, &converted).unwrap();
        assert!(cache
            .load_as(layer, (k, n), Precision::Int8, false)
            .is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_build_removes_the_layers_older_builds_cached_for_the_same_checkpoint() {
        let parent = std::env::temp_dir().join(format!("bert-superseded-{}", std::process::id()));
        let kept = [
            "k-int8-amx-0000",
            "k-bf16-emulated-0000",
            "other-bf16-amx-0000",
        ];
        for name in kept.iter().chain(&["k-bf16-amx-0000"]) {
            std::fs::create_dir_all(parent.join(name)).unwrap();
            std::fs::write(parent.join(name).join("layer.safetensors"), b"old").unwrap();
        }
        let cache = PackedCache::named(&parent, "k-bf16-amx-".into());
        let linear = PackedLinear::new(&values(64, 1), &values(8, 2), 8, Precision::Bf16);
        cache.store("layer", &linear).unwrap();
        assert!(!parent.join("k-bf16-amx-0000").exists(), "superseded");
        for name in kept {
            assert!(
                parent.join(name).join("layer.safetensors").exists(),
                "{name}"
            );
        }
        assert!(cache.load("layer", 8, 8, Precision::Bf16).is_some());
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
