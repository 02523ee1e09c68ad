//! Converted Linear weights kept on disk, so that a model loaded in bf16 or int8 a second time maps
//! its layers in place instead of converting the f32 checkpoint again. Converting BERT-base takes
//! ~0.3 s and allocates its converted weights afresh (170 MB in bf16), which on some virtual machines
//! costs over a second more after an idle spell; a mapped layer allocates nothing at load, and its
//! pages come from the page cache when first used.
//!
//! Each layer is one small safetensors file (see [`layer_tensors`]), written when it is first
//! converted, in `packed/<checkpoint>-<precision>-<path>-<code>/` under the cache directory of
//! [`crate::cache::cache_dir`] (`$BERT_CACHE`; `BERT_CACHE=` turns it off). `<checkpoint>`
//! hashes the checkpoint files' paths, sizes and modification times, so a changed checkpoint gets
//! fresh copies; `<path>` is `amx` (tiles) or `emulated`; `<code>` hashes the file that converts and
//! lays out the weights ([`crate::kernels::packed_layout`]), so that a build with another layout never
//! reads them, and a build that writes its own removes the other builds' ones. A file that cannot be
//! written or read is skipped: the layer is converted as before.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use candle_core::DType;
use safetensors::tensor::Dtype;

use crate::cache::{cache_dir, key};
use crate::error::{Error, Result};
use crate::files::hash::fnv1a;
use crate::files::safetensors::SafetensorsFiles;
use crate::files::safetensors_write::{save_views, TensorBytes};
use crate::kernels::amx::{self, TileOp, BLOCK, TILE_BYTES};
use crate::kernels::buffer::as_bytes;
use crate::kernels::packed_layout::{PackedLinear, Precision, Stored, Weights};

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
        layer_from(&file, dims, precision, tiles)
    }

    /// Keeps `linear` for later loads of `layer`.
    pub fn store(&self, layer: &str, linear: &PackedLinear) -> Result<()> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
            self.remove_superseded();
        }
        save_views(&self.path(layer), &layer_tensors(linear))
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

/// FNV-1a of the file that converts and lays out the weights, computed at build time.
const CONVERSION_CODE: u64 = fnv1a(&[include_str!("../kernels/packed_layout.rs")]);

/// A converted layer as the named tensors of its cache file: `form` ([`form`]), `weights` (the tiles'
/// bytes, or the emulated values `(out, in)`), `bias`, and for int8 `scales` and `column_sums`.
fn layer_tensors(linear: &PackedLinear) -> Vec<(String, TensorBytes<'_>)> {
    let (n, k) = (linear.out_dim, linear.in_dim);
    let view = |dtype, shape, bytes| TensorBytes {
        dtype,
        shape,
        data: Cow::Borrowed(bytes),
    };
    let (weights, tiles) = match &linear.weights {
        Weights::Tiles { data, .. } => {
            let bytes = data.bytes();
            (view(Dtype::U8, vec![bytes.len()], bytes), true)
        }
        Weights::Emulated(values) => (view(Dtype::F32, vec![n, k], values.bytes()), false),
    };
    let form = form((k, n), linear.precision, tiles);
    let form = TensorBytes {
        dtype: Dtype::I64,
        shape: vec![4],
        data: Cow::Owned(form),
    };
    let mut views = vec![
        ("form", form),
        ("weights", weights),
        ("bias", view(Dtype::F32, vec![n], as_bytes(&linear.bias))),
    ];
    if linear.precision == Precision::Int8 {
        views.push((
            "scales",
            view(Dtype::F32, vec![n], as_bytes(&linear.scales)),
        ));
        let sums = as_bytes(&linear.column_sums);
        views.push(("column_sums", view(Dtype::I32, vec![n], sums)));
    }
    views
        .into_iter()
        .map(|(name, view)| (name.to_string(), view))
        .collect()
}

/// What a cached layer is, as its `form` tensor holds it: out and in dimensions, precision and path
/// (1 for tiles), as little-endian i64s.
fn form((in_dim, out_dim): (usize, usize), precision: Precision, tiles: bool) -> Vec<u8> {
    let values = [
        out_dim as i64,
        in_dim as i64,
        precision as i64,
        tiles as i64,
    ];
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The layer from its cached tensors ([`layer_tensors`]) in `file`, the weights used in place, as
/// tiles (AMX must be available) or emulated; `None` when one is missing or not of this shape and
/// layout.
fn layer_from(
    file: &SafetensorsFiles,
    (in_dim, out_dim): (usize, usize),
    precision: Precision,
    tiles: bool,
) -> Option<PackedLinear> {
    let op = precision.tile_op()?;
    let tiles = tiles && amx::available();
    let (stored_form, ..) = file.mapped("form")?;
    if stored_form.bytes() != form((in_dim, out_dim), precision, tiles) {
        return None;
    }
    let (bytes, dtype, shape) = file.mapped("weights")?;
    let weights = if tiles {
        let k_tiles = in_dim.div_ceil(op.depth());
        let len = out_dim.div_ceil(BLOCK) * 2 * k_tiles * TILE_BYTES;
        if dtype != DType::U8 || shape != [len] {
            return None;
        }
        Weights::Tiles {
            data: Stored::Mapped(Box::new(bytes)),
            k_tiles,
        }
    } else {
        if dtype != DType::F32 || shape != [out_dim, in_dim] || bytes.f32_values().is_none() {
            return None;
        }
        Weights::Emulated(Stored::Mapped(Box::new(bytes)))
    };
    let numbers = |name: &str, want: DType| {
        let (bytes, dtype, shape) = file.mapped(name)?;
        (dtype == want && shape == [out_dim]).then(|| {
            bytes
                .bytes()
                .chunks_exact(4)
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect::<Vec<_>>()
        })
    };
    let floats = |name: &str| {
        Some(
            numbers(name, DType::F32)?
                .into_iter()
                .map(f32::from_le_bytes)
                .collect(),
        )
    };
    let (scales, column_sums) = match op {
        TileOp::Bf16 => (Vec::new(), Vec::new()),
        TileOp::Int8 => (
            floats("scales")?,
            numbers("column_sums", DType::I32)?
                .into_iter()
                .map(i32::from_le_bytes)
                .collect(),
        ),
    };
    Some(PackedLinear {
        precision,
        in_dim,
        out_dim,
        bias: floats("bias")?,
        scales,
        column_sums,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed_linear::tests::values;

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
