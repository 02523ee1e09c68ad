//! Writing safetensors files laid out for memory mapping: every tensor whose size is a multiple of 64
//! bytes starts on a 64-byte boundary, so that our kernels read the weights in place; `transformers`
//! and the `safetensors` package load them as any other. Written through a temporary name
//! ([`crate::files::write`]), so a crash never leaves half a file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::files::write::write_streamed;

/// Writes named tensors as safetensors, atomically, with every tensor whose size is a multiple of 64
/// bytes starting on a 64-byte boundary (see [`aligned_header`]), streamed to the file.
pub fn save_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let contiguous = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    save_views(path, &contiguous)
}

/// As [`save_safetensors`], for any tensor views (raw bytes with a dtype and shape).
pub fn save_views<V: safetensors::View>(path: &Path, tensors: &[(String, V)]) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let header =
        aligned_header(tensors, &metadata).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    write_streamed(path, |out| {
        out.write_all(&header.bytes)?;
        for (_, t) in header.order.iter().map(|&i| &tensors[i]) {
            out.write_all(&safetensors::View::data(t))?;
        }
        Ok(())
    })
}

/// A tensor as raw little-endian bytes, borrowed or owned, for [`save_views`].
pub struct TensorBytes<'a> {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: std::borrow::Cow<'a, [u8]>,
}

impl safetensors::View for TensorBytes<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The start of a safetensors file laid out for memory mapping (its size, then its header padded with
/// spaces, as the format allows, so that the data starts on a 64-byte boundary), and the order the
/// tensors follow it in: those whose byte size is a multiple of 64 (every weight matrix and vector of a
/// BERT model) first, then the rest. The weights are then used in place at inference
/// ([`crate::files::safetensors::MappedF32`]); the `safetensors` crate pads to 8 bytes only.
struct AlignedHeader {
    bytes: Vec<u8>,
    /// Indices into the tensors, in file order.
    order: Vec<usize>,
}

fn aligned_header<V: safetensors::View>(
    tensors: &[(String, V)],
    metadata: &HashMap<String, String>,
) -> std::result::Result<AlignedHeader, Box<dyn std::error::Error>> {
    use safetensors::View;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| {
        (
            !tensors[i].1.data_len().is_multiple_of(64),
            tensors[i].0.clone(),
        )
    });
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    let mut offset = 0;
    for (name, t) in order.iter().map(|&i| &tensors[i]) {
        let end = offset + t.data_len();
        let entry = serde_json::json!({
            "dtype": View::dtype(t), "shape": View::shape(t), "data_offsets": [offset, end],
        });
        header.insert(name.clone(), entry);
        offset = end;
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len() + (64 - (8 + json.len()) % 64) % 64, b' ');
    let mut bytes = Vec::with_capacity(8 + json.len());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    Ok(AlignedHeader { bytes, order })
}
