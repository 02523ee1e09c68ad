//! Converted Linear weights kept on disk, so that a model loaded in bf16 or int8 a second time maps
//! its layers in place instead of converting the f32 checkpoint again. Converting BERT-base takes
//! ~0.3 s and allocates its converted weights afresh (170 MB in bf16), which on this machine's VM
//! costs over a second more after an idle spell; a mapped layer allocates nothing at load, and its
//! pages come from the page cache when first used.
//!
//! Each layer is one small safetensors file (see [`PackedLinear::cache_views`]), written when it is
//! first converted, in `packed/<checkpoint>-<precision>-<layout>/` under the cache directory of
//! [`crate::aligned_copy::cache_dir`] (`$BERT_CACHE`; `BERT_CACHE=` turns it off). `<checkpoint>`
//! hashes the checkpoint files' paths, sizes and modification times, so a changed checkpoint gets
//! fresh copies; `<layout>` names the CPU path (AMX tiles or emulated) and its version. A file that
//! cannot be written or read is skipped: the layer is converted as before.

use std::path::{Path, PathBuf};

use crate::aligned_copy::{cache_dir, key};
use crate::error::{Error, Result};
use crate::model::amx;
use crate::model::quantized::{PackedLinear, Precision};
use crate::safetensors_file::SafetensorsFiles;
use crate::save::save_views;

/// Where one checkpoint's converted layers, in one precision, are kept.
#[derive(Debug, Clone)]
pub struct PackedCache {
    dir: PathBuf,
}

impl PackedCache {
    /// The cache of the checkpoint in `sources` in `precision`, under the cache directory the
    /// environment names; `None` when that is turned off or a source cannot be read.
    pub fn for_checkpoint(sources: &[PathBuf], precision: Precision) -> Option<Self> {
        let name = format!("{}-{precision}-{}", key(sources)?, cache_layout());
        Some(Self::in_dir(cache_dir()?.join("packed").join(name)))
    }

    /// A cache kept in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        PackedCache { dir: dir.into() }
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
        let path = self.path(layer);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        save_views(&path, &linear.cache_views())
    }

    fn path(&self, layer: &str) -> PathBuf {
        self.dir.join(format!("{layer}.safetensors"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The form of converted weights on this CPU, which names their cached copies: the path (AMX tiles
/// or emulated) and a hash of the code that converts and lays them out, so that copies made by
/// another version of it are never read.
fn cache_layout() -> String {
    let path = if amx::available() { "amx" } else { "emulated" };
    format!("{path}-{CONVERSION_CODE:016x}")
}

/// FNV-1a of the sources that decide converted weights' values and layout, computed at build time.
const CONVERSION_CODE: u64 = fnv1a(&[
    include_str!("model/quantized.rs"),
    include_str!("model/number_formats.rs"),
    include_str!("model/amx.rs"),
]);

const fn fnv1a(texts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut t = 0;
    while t < texts.len() {
        let bytes = texts[t].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        t += 1;
    }
    hash
}

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
}
