//! `Batch`: the padded tensors a model consumes, built from tokenized texts.
//!
//! Each row is padded to the longest row with `pad_id`, token type 0 and attention mask 0; the model's
//! attention bias then makes a padded row give the same numbers as the row alone.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::tokenizer::Encoding;

/// (B, T) model inputs.
#[derive(Debug, Clone)]
pub struct Batch {
    /// (B, T) u32
    pub input_ids: Tensor,
    /// (B, T) u32
    pub token_type_ids: Tensor,
    /// (B, T) f32, 1 for real tokens and 0 for padding
    pub attention_mask: Tensor,
}

impl Batch {
    /// Pads `encodings` to the longest and stacks them.
    pub fn from_encodings(encodings: &[Encoding], pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<(&[u32], &[u32])> = encodings
            .iter()
            .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
            .collect();
        Self::from_ids(&rows, pad_id, device)
    }

    /// Pads rows of `(ids, type_ids)` to the longest and stacks them.
    pub fn from_ids(rows: &[(&[u32], &[u32])], pad_id: u32, device: &Device) -> Result<Self> {
        let b = rows.len();
        let t = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut ids = vec![pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (row, (row_ids, row_types)) in rows.iter().enumerate() {
            let start = row * t;
            ids[start..start + row_ids.len()].copy_from_slice(row_ids);
            types[start..start + row_types.len()].copy_from_slice(row_types);
            mask[start..start + row_ids.len()].fill(1.0);
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            token_type_ids: Tensor::from_vec(types, (b, t), device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), device)?,
        })
    }
}
