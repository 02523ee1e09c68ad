//! Attention weights of one text for people to look at (the server's attention view): how much each
//! token attends to each other token, per layer and head, as `transformers` returns them with
//! `output_attentions=True`.

use candle_core::{DType, Device};

use crate::error::Result;
use crate::model::BertModel;
use crate::tokenizer::Encoding;

/// `[layer][head][query][key]` attention probabilities of one encoding; each row sums to 1.
pub fn attention_weights(
    model: &BertModel,
    encoding: &Encoding,
) -> Result<Vec<Vec<Vec<Vec<f32>>>>> {
    // One text: no padding, so the pad id is never read.
    let batch = crate::Batch::from_encodings(std::slice::from_ref(encoding), 0, &Device::Cpu)?;
    model
        .attentions(&batch)?
        .into_iter()
        .map(|probs| Ok(probs.to_dtype(DType::F32)?.get(0)?.to_vec3()?))
        .collect()
}
