//! The BERT encoder, block by block as in `transformers`' `modeling_bert.py`: self-attention,
//! feed-forward, the layer stack, the pooler, and `BertModel` over them and the embeddings.
//!
//! Dimension letters: B batch, T tokens, C hidden size, H heads, D = C / H head size, I intermediate size.
//! Field names follow the checkpoint keys, so each `load` is a walk down the weight names.

use std::sync::Arc;

use candle_core::Tensor;

use crate::batch::Batch;
use crate::error::Result;
use crate::kernels::{amx, cpu};
use crate::model::attention::Heads;
use crate::model::embeddings::BertEmbeddings;
use crate::nn::checkpoint::{checkpointed, Block};
use crate::nn::{activation, attention_bias, Dropout, LayerNorm, Linear, Mode, Precision};
use crate::ops::attention::FusedAttention;
use crate::ops::fused_kernels_apply;
use crate::ops::training_attention::TrainingAttention;
use crate::weights::config::{BertConfig, HiddenAct};
use crate::weights::params::Params;

/// Multi-head scaled dot-product self-attention (`attention.self`).
struct BertSelfAttention {
    projections: Projections,
    dropout: Dropout,
    heads: Heads,
    /// Whether inference attention runs on AMX tiles (models loaded in bf16 or int8).
    tiles: bool,
}

/// The query, key and value projections.
pub(crate) enum Projections {
    /// Three layers, each with its own gradient (trainable models).
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    /// One layer with the three side by side (`3C` outputs): one product, one pass over the input.
    Stacked(Linear),
}

impl Projections {
    /// `query`, `key` and `value` under `p`: separate for training, stacked for inference.
    pub(crate) fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let (h, std) = (c.hidden_size, c.initializer_range);
        let names = ["query", "key", "value"].map(|name| p.pp(name));
        Ok(if p.is_trainable() {
            Projections::Separate {
                query: Linear::load(&names[0], h, h, std)?,
                key: Linear::load(&names[1], h, h, std)?,
                value: Linear::load(&names[2], h, h, std)?,
            }
        } else {
            Projections::Stacked(Linear::load_stacked(&names, h, h, std)?)
        })
    }

    /// `(B, T, 3C)`: queries, keys and values side by side (one product in either form).
    fn stacked(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Projections::Stacked(qkv) => qkv.forward(x),
            Projections::Separate { query, key, value } => {
                Linear::forward_side_by_side(&[query, key, value], x)
            }
        }
    }

    /// Queries, keys and values, `(B, T, C)` each.
    pub(crate) fn each(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        match self {
            Projections::Separate { query, key, value } => {
                Ok([query.forward(x)?, key.forward(x)?, value.forward(x)?])
            }
            Projections::Stacked(qkv) => {
                let qkv = qkv.forward(x)?;
                let c = qkv.dim(2)? / 3;
                let part =
                    |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i * c, c)?.contiguous()?) };
                Ok([part(0)?, part(1)?, part(2)?])
            }
        }
    }
}

impl BertSelfAttention {
    fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(BertSelfAttention {
            projections: Projections::load(p, c)?,
            dropout: Dropout::new(c.attention_probs_dropout_prob),
            heads: Heads::of(c),
            tiles: p.precision() != Precision::F32 && amx::available(),
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, mode: &Mode) -> Result<Tensor> {
        if !mode.is_train() && fused_attention_applies(x) {
            let op = FusedAttention {
                heads: self.heads.count,
                scale: (1.0 / (self.heads.size as f64).sqrt()) as f32,
                mask: bias.flatten_all()?.to_vec1()?,
                tiles: self.tiles,
            };
            let qkv = self.projections.stacked(x)?.contiguous()?;
            return Ok(qkv.apply_op1_no_bwd(&op)?);
        }
        if mode.is_train() && fused_kernels_apply(x) {
            return self.attend_in_one_op(&self.projections.stacked(x)?, bias, mode);
        }
        let [q, k, v] = self.projections.each(x)?;
        let [q, k, v] = [q, k, v].map(|x| self.heads.split(&x));
        self.heads
            .attend(&q?, &k?, &v?, Some(bias), &self.dropout, mode)
    }

    /// Training attention as one op with its own backward pass ([`TrainingAttention`]) over the
    /// stacked projections `(B, T, 3C)`, with the dropout masks the composite form would draw.
    fn attend_in_one_op(&self, qkv: &Tensor, bias: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (b, t, _) = qkv.dims3()?;
        let heads = self.heads.count;
        let op = TrainingAttention::new(
            heads,
            (1.0 / (self.heads.size as f64).sqrt()) as f32,
            bias.flatten_all()?.to_vec1()?,
            self.dropout.mask(b * heads * t * t, mode),
        );
        Ok(qkv.contiguous()?.apply_op1(op)?)
    }

    /// Inference that also returns the attention probabilities, (B, H, T, T).
    fn forward_with_probabilities(&self, x: &Tensor, bias: &Tensor) -> Result<(Tensor, Tensor)> {
        let [q, k, v] = self.projections.each(x)?;
        let [q, k, v] = [q, k, v].map(|x| self.heads.split(&x));
        let probs = self
            .heads
            .probabilities(&q?, &k?, Some(bias), &Mode::Eval)?;
        Ok((self.heads.weighted_sum(&probs, &v?)?, probs))
    }
}

/// Whether inference can take the one-op attention: f32 on a CPU with AVX-512.
fn fused_attention_applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && cpu::fast_gemm_available()
}

/// A projection followed by dropout, a residual connection and LayerNorm (`attention.output`, `output`).
pub(crate) struct BertResidualOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
}

impl BertResidualOutput {
    pub(crate) fn load(p: &Params, c: &BertConfig, in_dim: usize) -> Result<Self> {
        Self::load_with(p, c, in_dim, Linear::load, LayerNorm::load)
    }

    /// As [`BertResidualOutput::load`], newly initialised where the checkpoint lacks it (the
    /// cross-attention of a decoder warm-started from an encoder).
    pub(crate) fn load_or_init(p: &Params, c: &BertConfig, in_dim: usize) -> Result<Self> {
        Self::load_with(p, c, in_dim, Linear::load_or_init, LayerNorm::load_or_init)
    }

    fn load_with(
        p: &Params,
        c: &BertConfig,
        in_dim: usize,
        linear: fn(&Params, usize, usize, f64) -> Result<Linear>,
        layer_norm: fn(&Params, usize, f64) -> Result<LayerNorm>,
    ) -> Result<Self> {
        Ok(BertResidualOutput {
            dense: linear(&p.pp("dense"), in_dim, c.hidden_size, c.initializer_range)?,
            layer_norm: layer_norm(&p.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, residual: &Tensor, mode: &Mode) -> Result<Tensor> {
        let x = self.dense.forward(x)?;
        (self.layer_norm).forward_residual(&x, residual, &self.dropout, mode)
    }
}

/// The feed-forward block: `intermediate` (dense and activation) then `output` (dense, dropout,
/// residual, LayerNorm).
pub(crate) struct FeedForward {
    intermediate: Linear,
    output: BertResidualOutput,
    act: HiddenAct,
}

impl FeedForward {
    /// Loads `intermediate.dense` and `output` under `p` (a layer).
    pub(crate) fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        Ok(FeedForward {
            intermediate: Linear::load(
                &p.pp("intermediate").pp("dense"),
                c.hidden_size,
                c.intermediate_size,
                c.initializer_range,
            )?,
            output: BertResidualOutput::load(&p.pp("output"), c, c.intermediate_size)?,
            act: c.hidden_act,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let inner = match (mode, self.act) {
            // Inference: the activation applied as the product is stored.
            (Mode::Eval, HiddenAct::Gelu) => self.intermediate.forward_gelu(x)?,
            _ => activation(&self.intermediate.forward(x)?, self.act)?,
        }; // (B, T, I)
        self.output.forward(&inner, x, mode)
    }
}

/// One Transformer layer: self-attention then the feed-forward block, each with a residual.
struct BertLayer {
    attention: BertSelfAttention,
    attention_output: BertResidualOutput,
    feed_forward: FeedForward,
}

impl BertLayer {
    fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let attention = p.pp("attention");
        Ok(BertLayer {
            attention: BertSelfAttention::load(&attention.pp("self"), c)?,
            attention_output: BertResidualOutput::load(&attention.pp("output"), c, c.hidden_size)?,
            feed_forward: FeedForward::load(p, c)?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, mode: &Mode) -> Result<Tensor> {
        let attended = self.attention.forward(x, bias, mode)?;
        self.after_attention(&attended, x, mode)
    }

    /// The residual, LayerNorm and feed-forward block over the attention's output.
    fn after_attention(&self, attended: &Tensor, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let x = self.attention_output.forward(attended, x, mode)?; // (B, T, C)
        self.feed_forward.forward(&x, mode)
    }
}

/// Dense + tanh over the first (`[CLS]`) token.
pub struct BertPooler {
    dense: Linear,
}

impl BertPooler {
    fn load(p: &Params, c: &BertConfig) -> Result<Self> {
        let (h, std) = (c.hidden_size, c.initializer_range);
        Ok(BertPooler {
            dense: Linear::load_or_init(&p.pp("dense"), h, h, std)?,
        })
    }

    fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
        Ok(self.dense.forward(&first)?.tanh()?)
    }
}

/// What the encoder gives: per-token states and, with a pooler, the pooled `[CLS]` vector.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// (B, T, C)
    pub hidden_states: Tensor,
    /// (B, C), when the model has a pooler.
    pub pooled: Option<Tensor>,
}

/// Embeddings, the layer stack and an optional pooler: `transformers`' `BertModel`.
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<Arc<BertLayer>>,
    pooler: Option<BertPooler>,
}

impl BertModel {
    /// Loads from `p` (normally `bert`); `add_pooling_layer` as in `transformers`.
    pub fn load(p: &Params, c: &BertConfig, add_pooling_layer: bool) -> Result<Self> {
        let layer_params = p.pp("encoder").pp("layer");
        let layers = (0..c.num_hidden_layers)
            .map(|i| BertLayer::load(&layer_params.pp(i), c).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if add_pooling_layer {
            Some(BertPooler::load(&p.pp("pooler"), c)?)
        } else {
            None
        };
        Ok(BertModel {
            embeddings: BertEmbeddings::load(&p.pp("embeddings"), c)?,
            layers,
            pooler,
        })
    }

    pub fn embeddings(&self) -> &BertEmbeddings {
        &self.embeddings
    }

    /// Runs on a thread of rayon's pool ([`on_worker`](super::on_worker)).
    pub fn forward(&self, batch: &Batch, mode: &Mode) -> Result<BertOutput> {
        super::on_worker(|| self.forward_here(batch, mode))
    }

    /// Inference that keeps each layer's attention probabilities, (B, H, T, T) per layer, as
    /// `transformers` returns them with `output_attentions=True`.
    pub fn attentions(&self, batch: &Batch) -> Result<Vec<Tensor>> {
        super::on_worker(|| {
            let mut x = self.embeddings.forward(batch, &Mode::Eval)?;
            let bias = attention_bias(&batch.attention_mask, x.dtype())?; // (B, 1, 1, T)
            let mut attentions = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let (attended, probs) = layer.attention.forward_with_probabilities(&x, &bias)?;
                x = layer.after_attention(&attended, &x, &Mode::Eval)?;
                attentions.push(probs);
            }
            Ok(attentions)
        })
    }

    fn forward_here(&self, batch: &Batch, mode: &Mode) -> Result<BertOutput> {
        let x = self.embeddings.forward(batch, mode)?;
        let bias = attention_bias(&batch.attention_mask, x.dtype())?; // (B, 1, 1, T)
        let mut x = x;
        for layer in &self.layers {
            x = match mode {
                Mode::Checkpointed(..) => {
                    let (layer, bias) = (layer.clone(), bias.clone());
                    let block: Block = Arc::new(move |x, mode| layer.forward(x, &bias, mode));
                    checkpointed(&x, mode, block)?
                }
                _ => layer.forward(&x, &bias, mode)?,
            };
        }
        let pooled = match &self.pooler {
            Some(pooler) => Some(pooler.forward(&x)?),
            None => None,
        };
        Ok(BertOutput {
            hidden_states: x,
            pooled,
        })
    }
}
