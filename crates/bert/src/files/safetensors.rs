//! Safetensors files, read tensor by tensor with positioned reads into each tensor's own buffer (a
//! mapping copied out of keeps every page it has read resident, so loading a model that way peaked at
//! twice its weights), or, for what our own kernels read at inference (f32 weights, embedding tables,
//! cached converted layers), used in place in a read-only memory map ([`MappedF32`], [`MappedBytes`]):
//! no copy, and no fresh memory to fault in (on some virtual machines, touching freshly allocated
//! memory costs over a second for BERT-base's 420 MB after an idle spell).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::kernels::buffer::f32_values;

/// Where one tensor is.
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range in the file.
    start: u64,
    end: u64,
}

/// The tensors of one or more safetensors files (shards), by name.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, Mutex<File>)>,
    /// Each file mapped read-only, where mapping works.
    maps: Vec<Option<Arc<Mmap>>>,
    entries: HashMap<String, Entry>,
}

/// A tensor's bytes where they lie in a memory-mapped safetensors file.
///
/// The mapping is read-only; a file rewritten while a model uses it would change the weights under it,
/// as with every memory-mapped loader (candle's and safetensors' own).
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl MappedBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// The bytes as f32 values, when they start on a 4-byte boundary (a little-endian machine).
    pub fn f32_values(&self) -> Option<&[f32]> {
        f32_values(self.bytes())
    }

    /// Whether the bytes start on a 64-byte boundary.
    pub fn is_cache_aligned(&self) -> bool {
        (self.map.as_ptr() as usize + self.start).is_multiple_of(64)
    }

    /// Drops these pages from the process's resident memory: the file still holds them, and page
    /// cache keeps them for the next reader.
    pub fn release_pages(&self) {
        const PAGE: usize = 4096;
        let first = self.start / PAGE * PAGE;
        let end = (self.start + self.len).min(self.map.len());
        // SAFETY: a read-only shared file mapping: dropped pages are read again from the file on the
        // next access, so no one sees different values. A failure only leaves the pages resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
        };
    }
}

/// An f32 tensor's values where they lie in a memory-mapped safetensors file.
#[derive(Clone)]
pub struct MappedF32 {
    bytes: MappedBytes,
    shape: Vec<usize>,
}

impl MappedF32 {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &[f32] {
        // `mapped_f32` checked that the values are 4-byte aligned.
        self.bytes.f32_values().unwrap_or_default()
    }

    /// Whether the values start on a 64-byte boundary. The dot-product kernel streams weights with
    /// whole-vector loads; at the 8-byte alignment `transformers` writes tensors with, every load
    /// spans two cache lines (BERT-base at 1 x 16: 23 -> 28 ms).
    pub fn is_cache_aligned(&self) -> bool {
        self.bytes.is_cache_aligned()
    }

    /// Drops this tensor's pages from the process's resident memory once it has been converted.
    pub fn release_pages(&self) {
        self.bytes.release_pages()
    }
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedF32({:?} at byte {})",
            self.shape, self.bytes.start
        )
    }
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::checkpoint(path, format!("not a valid safetensors file: {why}"))
}

impl SafetensorsFiles {
    /// Opens the files and reads their headers.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut maps = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            let mut size = [0u8; 8];
            read_at(&mut file, 0, &mut size)
                .map_err(|_| invalid(path, "shorter than its header"))?;
            let header_len = u64::from_le_bytes(size);
            if header_len > len.saturating_sub(8) || header_len > 100_000_000 {
                return Err(invalid(
                    path,
                    format!("a header of {header_len} bytes in a file of {len}"),
                ));
            }
            let mut header = vec![0u8; header_len as usize];
            read_at(&mut file, 8, &mut header).map_err(|e| invalid(path, e))?;
            let header: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|e| invalid(path, e))?;
            for (name, info) in header {
                if name == "__metadata__" {
                    continue;
                }
                let entry = entry(&info, index, 8 + header_len, len)
                    .map_err(|why| invalid(path, format!("tensor `{name}`: {why}")))?;
                entries.insert(name, entry);
            }
            // SAFETY: read-only; see `MappedF32` on files changed underneath.
            maps.push(unsafe { Mmap::map(&file) }.ok().map(Arc::new));
            files.push((path.clone(), Mutex::new(file)));
        }
        Ok(SafetensorsFiles {
            files,
            maps,
            entries,
        })
    }

    /// Whether every f32 tensor whose size is a multiple of 64 bytes starts on a 64-byte boundary of
    /// its file, as `bert` lays them out (see [`crate::cache::aligned`]).
    pub fn f32_cache_aligned(&self) -> bool {
        self.entries.values().all(|e| {
            e.dtype != DType::F32
                || !(e.end - e.start).is_multiple_of(64)
                || e.start.is_multiple_of(64)
        })
    }

    /// Every tensor's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// A tensor's bytes in place in its mapped file, with its dtype and shape; `None` when absent or
    /// the file is not mapped.
    pub fn mapped(&self, name: &str) -> Option<(MappedBytes, DType, &[usize])> {
        let entry = self.entries.get(name)?;
        let map = self.maps[entry.file].as_ref()?;
        let start = usize::try_from(entry.start).ok()?;
        let len = usize::try_from(entry.end - entry.start).ok()?;
        (start + len <= map.len()).then(|| {
            let bytes = MappedBytes {
                map: map.clone(),
                start,
                len,
            };
            (bytes, entry.dtype, entry.shape.as_slice())
        })
    }

    /// An f32 tensor in place in its mapped file; `None` for other dtypes, unmapped files, a
    /// misaligned tensor or a big-endian machine (the caller then reads it with [`Self::load`]).
    pub fn mapped_f32(&self, name: &str) -> Option<MappedF32> {
        let (bytes, dtype, shape) = self.mapped(name)?;
        (dtype == DType::F32 && bytes.f32_values().is_some()).then(|| MappedF32 {
            shape: shape.to_vec(),
            bytes,
        })
    }

    /// Reads one tensor.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::InvalidInput(format!("no tensor `{name}`")))?;
        let (path, file) = &self.files[entry.file];
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if entry.dtype == DType::F32 && cfg!(target_endian = "little") {
            // Straight into the tensor's own buffer: no second copy for the common case.
            let mut values = vec![0f32; entry.shape.iter().product()];
            // SAFETY: the byte view covers exactly the vector's memory, and every bit pattern is a
            // valid f32.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len() * 4)
            };
            read_at(&mut file, entry.start, bytes).map_err(|e| Error::io(path, e))?;
            return Ok(Tensor::from_vec(values, entry.shape.as_slice(), device)?);
        }
        let mut bytes = vec![0u8; (entry.end - entry.start) as usize];
        read_at(&mut file, entry.start, &mut bytes).map_err(|e| Error::io(path, e))?;
        Ok(Tensor::from_raw_buffer(
            &bytes,
            entry.dtype,
            &entry.shape,
            device,
        )?)
    }
}

/// Fills `buffer` from `offset` in `file`.
fn read_at(file: &mut File, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buffer)
}

/// A header entry, checked against the file: a known dtype, offsets inside the data, and as many
/// bytes as the shape needs.
fn entry(
    info: &serde_json::Value,
    file: usize,
    data_start: u64,
    len: u64,
) -> std::result::Result<Entry, String> {
    let dtype = match info["dtype"].as_str() {
        Some("F32") => DType::F32,
        Some("F16") => DType::F16,
        Some("BF16") => DType::BF16,
        Some("F64") => DType::F64,
        Some("I64") => DType::I64,
        Some("I32") => DType::I32,
        Some("I16") => DType::I16,
        Some("U32") => DType::U32,
        Some("U8") | Some("BOOL") => DType::U8,
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    let shape: Vec<usize> =
        serde_json::from_value(info["shape"].clone()).map_err(|e| format!("shape: {e}"))?;
    let offsets: (u64, u64) = serde_json::from_value(info["data_offsets"].clone())
        .map_err(|e| format!("data_offsets: {e}"))?;
    let (start, end) = (data_start + offsets.0, data_start + offsets.1);
    let needed = shape.iter().product::<usize>() * dtype.size_in_bytes();
    if offsets.1 < offsets.0 || end > len || (end - start) as usize != needed {
        return Err(format!(
            "bytes {}..{} of a {len}-byte file for a {dtype:?} tensor of shape {shape:?}",
            offsets.0, offsets.1
        ));
    }
    Ok(Entry {
        file,
        dtype,
        shape,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    #[test]
    fn reads_f32_and_half_tensors_and_refuses_bad_offsets() {
        let dir = std::env::temp_dir().join(format!("bert-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let f32s: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, -0.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        // f16 1.0 = 0x3C00, -3.5 = 0xC300.
        let halves: Vec<u8> = [0x3C00u16, 0xC300]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let tensors = [
            ("a", TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap()),
            ("h", TensorView::new(Dtype::F16, vec![2], &halves).unwrap()),
        ];
        safetensors::serialize_to_file(tensors, None, &path).unwrap();

        let files = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap();
        let a = files.load("a", &Device::Cpu).unwrap();
        assert_eq!(a.dims(), &[2, 3]);
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            vec![vec![1.5, -2.0, 3.25], vec![0.0, 7.0, -0.5]]
        );
        let h = files
            .load("h", &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(h.to_vec1::<f32>().unwrap(), vec![1.0, -3.5]);
        assert!(files.load("missing", &Device::Cpu).is_err());

        // A header whose offsets run past the data is refused at open, naming the tensor.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, &bytes).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("not a valid safetensors file") && err.contains("tensor `"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
