//! `EncoderDecoderModel` with BERT on both sides (BERT2BERT, Rothe et al. 2020): a [`BertModel`]
//! encoder reads the source, a [`BertLMHeadModel`] decoder writes the target while attending to it.
//! Weight names are `transformers`' (`encoder.*`, `decoder.bert.*`, `decoder.cls.*`), so checkpoints go
//! both ways. With `tie_encoder_decoder` the decoder's embeddings, self-attention and feed-forward
//! weights are the encoder's (BERTShare); only cross-attention and the head are its own.

use candle_core::Tensor;

use crate::batch::Batch;
use crate::error::Result;
use crate::model::decoder::{BertLMHeadModel, EncoderStates};
use crate::model::encoder::BertModel;
use crate::nn::{attention_bias, Mode};
use crate::weights::encoder_decoder_config::EncoderDecoderConfig;
use crate::weights::params::Params;

/// A BERT encoder and a BERT decoder with cross-attention.
pub struct EncoderDecoderModel {
    pub encoder: BertModel,
    pub decoder: BertLMHeadModel,
}

impl EncoderDecoderModel {
    /// Loads a trained encoder-decoder: every weight must be in the checkpoint.
    pub fn load(p: &Params, c: &EncoderDecoderConfig) -> Result<Self> {
        Self::build(p, c, false)
    }

    /// Loads one warm-started from BERT checkpoints (placed under `encoder.*` and `decoder.*`): the
    /// cross-attention weights they lack are newly initialised, and reported.
    pub fn warm_start(p: &Params, c: &EncoderDecoderConfig) -> Result<Self> {
        Self::build(p, c, true)
    }

    fn build(p: &Params, c: &EncoderDecoderConfig, new_cross: bool) -> Result<Self> {
        let encoder_path = p.pp("encoder");
        // transformers' encoder has a pooler the decoder never reads: kept when the checkpoint has
        // it, and made by a warm start (newly initialised where the BERT checkpoint lacks it), so
        // that what is saved loads in transformers with every weight.
        let pooler = new_cross || encoder_path.has("pooler.dense.weight");
        let encoder = BertModel::load(&encoder_path, &c.encoder, pooler)?;
        let decoder_path = p.pp("decoder");
        let shared = c.tie_encoder_decoder.then_some(&encoder_path);
        let decoder = BertLMHeadModel::load(&decoder_path, &c.decoder, shared, new_cross)?;
        if shared.is_some() {
            // The checkpoint's copies of the shared weights under the decoder's names.
            decoder_path
                .pp("bert")
                .tie_where(|name| !name.contains(".crossattention."));
        }
        Ok(EncoderDecoderModel { encoder, decoder })
    }

    /// The encoder's states over `source`, with the bias that hides its padding.
    pub fn encode(&self, source: &Batch, mode: &Mode) -> Result<EncoderStates> {
        let out = self.encoder.forward(source, mode)?;
        Ok(EncoderStates {
            bias: attention_bias(&source.attention_mask, out.hidden_states.dtype())?,
            hidden: out.hidden_states,
        })
    }

    /// Teacher forcing: the logits (B, T, V) of the target `decoder_input_ids` (B, T) after `source`.
    pub fn forward(
        &self,
        source: &Batch,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<Tensor> {
        let states = self.encode(source, mode)?;
        (self.decoder).forward(decoder_input_ids, decoder_attention_mask, &states, mode)
    }
}

/// `labels` (B, T) shifted one to the right behind `start`, the ignored positions (-100) made `pad`:
/// the decoder's input in teacher forcing (`transformers`' `shift_tokens_right`).
pub fn shift_tokens_right(labels: &[Vec<i64>], start: u32, pad: u32) -> Vec<Vec<u32>> {
    labels
        .iter()
        .map(|row| {
            let previous = row[..row.len().saturating_sub(1)]
                .iter()
                .map(|&id| u32::try_from(id).unwrap_or(pad));
            std::iter::once(start).chain(previous).collect()
        })
        .collect()
}
