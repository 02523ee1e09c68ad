//! Fill-mask: the most likely tokens for each `[MASK]` in a text, as `transformers`' fill-mask pipeline
//! reports them (score, token id, token string, and the text with the mask filled in).

use std::path::Path;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::model::{BertForMaskedLM, Mode};
use crate::pipelines::{softmax, Pipeline, PipelineOptions};
use crate::tokenizer::Encoding;

/// One candidate for one mask.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaskPrediction {
    /// The token as text (word pieces keep their `##`).
    pub token: String,
    pub token_id: u32,
    /// Probability under the softmax over the vocabulary.
    pub score: f32,
    /// The input with this mask replaced by the token, special tokens removed.
    pub sequence: String,
}

/// Predicts masked tokens.
pub struct FillMask {
    pipeline: Pipeline<BertForMaskedLM>,
    mask_id: u32,
}

impl FillMask {
    pub fn load(dir: &Path, options: &PipelineOptions) -> Result<Self> {
        let pipeline = Pipeline::load(dir, options, None, BertForMaskedLM::load)?;
        let mask = &pipeline.tokenizer.special_tokens().mask;
        let mask_id = pipeline.tokenizer.token_to_id(mask).ok_or_else(|| {
            Error::InvalidInput(format!("the tokenizer has no mask token `{mask}`"))
        })?;
        Ok(FillMask { pipeline, mask_id })
    }

    pub fn pipeline(&self) -> &Pipeline<BertForMaskedLM> {
        &self.pipeline
    }

    /// Tokenizes a text, which must contain the mask token (after truncation).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let encoding = self.pipeline.encode(text)?;
        if !encoding.ids.contains(&self.mask_id) {
            let mask = &self.pipeline.tokenizer.special_tokens().mask;
            return Err(Error::InvalidInput(format!("no {mask} token in the text")));
        }
        Ok(encoding)
    }

    /// For each encoding, for each mask in order, the `top_k` most likely tokens.
    pub fn predict(
        &self,
        encodings: &[Encoding],
        top_k: usize,
    ) -> Result<Vec<Vec<Vec<MaskPrediction>>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let logits = self.pipeline.model.forward(&batch, &Mode::Eval)?; // (B, T, V)
        encodings
            .iter()
            .enumerate()
            .map(|(row, encoding)| {
                let masks = encoding
                    .ids
                    .iter()
                    .enumerate()
                    .filter(|(_, &id)| id == self.mask_id);
                masks
                    .map(|(pos, _)| {
                        let scores: Vec<f32> = logits.get(row)?.get(pos)?.to_vec1()?;
                        let single_mask = encoding
                            .ids
                            .iter()
                            .filter(|&&id| id == self.mask_id)
                            .count()
                            == 1;
                        self.top_predictions(encoding, pos, &softmax(&scores), top_k, single_mask)
                    })
                    .collect()
            })
            .collect()
    }

    /// SPLADE vectors (Formal et al., 2021): for each encoding, `log(1 + relu(logits))` of the
    /// masked-LM head, max-pooled over its tokens (special tokens included, padding not), as the
    /// vocabulary entries that are not zero, `(token id, weight)` in id order.
    pub fn splade(&self, encodings: &[Encoding]) -> Result<Vec<Vec<(u32, f32)>>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.pipeline.batch(encodings)?;
        let logits = (self.pipeline.model.forward(&batch, &Mode::Eval)?).to_dtype(DType::F32)?; // (B, T, V)
        let mask = batch
            .attention_mask
            .to_dtype(logits.dtype())?
            .unsqueeze(2)?; // (B, T, 1)
        let weights = (logits.relu()? + 1.0)?
            .log()?
            .broadcast_mul(&mask)?
            .max(1)?; // (B, V)
        Ok(weights
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                (row.into_iter().enumerate())
                    .filter(|&(_, w)| w != 0.0)
                    .map(|(id, w)| (id as u32, w))
                    .collect()
            })
            .collect())
    }

    /// As `transformers`: with several masks, `sequence` keeps the special tokens (the other masks too).
    fn top_predictions(
        &self,
        encoding: &Encoding,
        pos: usize,
        probs: &[f32],
        top_k: usize,
        single_mask: bool,
    ) -> Result<Vec<MaskPrediction>> {
        let mut order: Vec<u32> = (0..probs.len() as u32).collect();
        let k = top_k.min(order.len());
        order.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
            probs[b as usize].total_cmp(&probs[a as usize])
        });
        order.truncate(k);
        order.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]));
        let tokenizer = &self.pipeline.tokenizer;
        order
            .into_iter()
            .map(|id| {
                let mut ids = encoding.ids.clone();
                ids[pos] = id;
                Ok(MaskPrediction {
                    token: tokenizer.decode(&[id], false)?,
                    token_id: id,
                    score: probs[id as usize],
                    sequence: tokenizer.decode(&ids, single_mask)?,
                })
            })
            .collect()
    }
}
