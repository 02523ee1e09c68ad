//! BERT's input layer: word, token-type and position embeddings looked up, summed, normalised and
//! dropped out (`embeddings` in the checkpoint). For inference on the CPU the tables are read in place
//! from the memory-mapped checkpoint.
//!
//! Dimension letters: B batch, T tokens, C hidden size, V vocabulary, P positions.

use candle_core::Tensor;

use crate::batch::Batch;
use crate::error::Result;
use crate::files::safetensors::MappedF32;
use crate::nn::{Dropout, LayerNorm, Mode};
use crate::ops::embedding::{embedding_sum, fused_embeddings_apply, mapped_embedding_sum};
use crate::weights::config::BertConfig;
use crate::weights::params::{Init, Params};

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    tables: Tables,
    layer_norm: LayerNorm,
    dropout: Dropout,
    /// The padding token, whose embedding gets no gradient (`nn.Embedding(padding_idx)`).
    pad_token_id: Option<u32>,
}

/// The word (V, C), token-type (2, C) and position (P, C) tables, in that order.
#[derive(Debug, Clone)]
enum Tables {
    Tensors([Tensor; 3]),
    /// For inference on the CPU: in place in the memory-mapped checkpoint.
    Mapped([MappedF32; 3]),
}

impl BertEmbeddings {
    pub fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let init = Init::Normal(c.initializer_range);
        let tables = [
            (
                "word_embeddings",
                c.vocab_size,
                Init::Embedding {
                    std: c.initializer_range,
                    padding_idx: c.pad_token_id,
                },
            ),
            ("token_type_embeddings", c.type_vocab_size, init),
            ("position_embeddings", c.max_position_embeddings, init),
        ];
        let mut mapped = Vec::with_capacity(3);
        for (name, rows, _) in &tables {
            mapped.extend(p.pp(name).mapped(&[*rows, c.hidden_size], "weight")?);
        }
        let tables = match <[MappedF32; 3]>::try_from(mapped) {
            Ok(mapped) => Tables::Mapped(mapped),
            Err(_) => {
                let get = |(name, rows, init): (&str, usize, Init)| {
                    p.pp(name).get(&[rows, c.hidden_size], "weight", init)
                };
                let [words, types, positions] = tables;
                Tables::Tensors([get(words)?, get(types)?, get(positions)?])
            }
        };
        Ok(BertEmbeddings {
            tables,
            layer_norm: LayerNorm::load(&p.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob),
            pad_token_id: c.pad_token_id.map(|id| id as u32),
        })
    }

    /// The word-embedding matrix, shared with the masked-LM decoder (copied out of the mapped
    /// checkpoint for an inference model).
    pub fn word_embeddings(&self) -> Result<Tensor> {
        match &self.tables {
            Tables::Tensors([words, ..]) => Ok(words.clone()),
            Tables::Mapped([words, ..]) => Ok(Tensor::from_slice(
                words.values(),
                words.shape(),
                &candle_core::Device::Cpu,
            )?),
        }
    }

    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<Tensor> {
        self.forward_from(batch, 0, mode)
    }

    /// As [`BertEmbeddings::forward`], the tokens at positions `first_position..` (a decoder's new
    /// tokens after those in its cache).
    pub fn forward_from(
        &self,
        batch: &Batch,
        first_position: usize,
        mode: &Mode,
    ) -> Result<Tensor> {
        let x = match &self.tables {
            Tables::Mapped([words, types, positions]) => mapped_embedding_sum(
                [words, types, positions],
                &batch.input_ids,
                &batch.token_type_ids,
                first_position,
            )?,
            Tables::Tensors([words, types, positions])
                if fused_embeddings_apply([words, types, positions]) =>
            {
                let later;
                let positions = if first_position == 0 {
                    positions
                } else {
                    let rows = positions.dim(0)?.saturating_sub(first_position);
                    later = positions.narrow(0, first_position.min(positions.dim(0)?), rows)?;
                    &later
                };
                let pad = if mode.is_train() {
                    self.pad_token_id
                } else {
                    None
                };
                embedding_sum(
                    [words, types, positions],
                    &batch.input_ids,
                    &batch.token_type_ids,
                    pad,
                )?
            }
            Tables::Tensors(tables) => self.summed(tables, batch, first_position, mode)?,
        };
        let x = self.layer_norm.forward(&x, mode)?;
        self.dropout.forward(&x, mode)
    }

    /// The three lookups and their sum through candle's ops (tables of other types or devices).
    fn summed(
        &self,
        tables: &[Tensor; 3],
        batch: &Batch,
        first_position: usize,
        mode: &Mode,
    ) -> Result<Tensor> {
        let [word_embeddings, token_type_embeddings, position_embeddings] = tables;
        let (b, t) = batch.input_ids.dims2()?;
        let c = word_embeddings.dim(1)?;
        let ids = batch.input_ids.flatten_all()?;
        let words = word_embeddings.embedding(&ids)?; // (B*T, C)
        let words = match (mode.is_train(), self.pad_token_id) {
            (true, Some(pad)) => no_gradient_where(&words, &ids.eq(pad)?)?,
            _ => words,
        };
        let types = token_type_embeddings.embedding(&batch.token_type_ids.flatten_all()?)?;
        let first = first_position as u32;
        let positions = Tensor::arange(first, first + t as u32, batch.input_ids.device())?;
        let positions = position_embeddings.embedding(&positions)?; // (T, C)
        let x = (words + types)?.reshape((b, t, c))?;
        Ok(x.broadcast_add(&positions)?) // (B, T, C)
    }
}

/// `x` (N, C) with the rows where `rows` (N) is set cut off from the gradient.
fn no_gradient_where(x: &Tensor, rows: &Tensor) -> Result<Tensor> {
    if rows
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        == 0.0
    {
        return Ok(x.clone());
    }
    let mask = rows.unsqueeze(1)?.broadcast_as(x.shape())?;
    Ok(mask.where_cond(&x.detach(), x)?)
}
