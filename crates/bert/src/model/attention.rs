//! The arithmetic every multi-head attention shares, in the differentiable composite form: splitting a
//! `(B, T, C)` projection into heads, and `softmax(Q K^T / sqrt(D) + bias) V` merged back into
//! `(B, T, C)`. The encoder's self-attention, the decoder's causal self-attention and its
//! cross-attention differ only in where queries, keys and values come from and in the bias.
//!
//! Dimension letters: B batch, T query tokens, S key tokens, C hidden size, H heads, D = C / H.

use candle_core::Tensor;

use crate::error::Result;
use crate::nn::{softmax, Dropout, Mode};
use crate::weights::config::BertConfig;

/// The head layout of an attention block.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub count: usize,
    pub size: usize,
}

impl Heads {
    pub fn of(c: &BertConfig) -> Self {
        Heads {
            count: c.num_attention_heads,
            size: c.head_size(),
        }
    }

    /// (B, T, C) -> (B, H, T, D)
    pub fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        Ok(x.reshape((b, t, self.count, self.size))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `softmax(q k^T / sqrt(D) + bias) v` with `q` (B, H, T, D) and `k`, `v` (B, H, S, D); `bias`
    /// broadcasts to (B, H, T, S) (padding, causal order). Returns (B, T, C).
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        dropout: &Dropout,
        mode: &Mode,
    ) -> Result<Tensor> {
        let probs = self.probabilities(q, k, bias, mode)?;
        let probs = dropout.forward(&probs, mode)?;
        self.weighted_sum(&probs, v)
    }

    /// `softmax(q k^T / sqrt(D) + bias)`, (B, H, T, S): how much each query token attends to each key.
    pub fn probabilities(
        &self,
        q: &Tensor,
        k: &Tensor,
        bias: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<Tensor> {
        // Scaling the queries rather than the scores touches D values per token instead of S.
        let q = (q * (1.0 / (self.size as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?)?; // (B, H, T, S)
        let scores = match bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        softmax(&scores, mode)
    }

    /// `probs v` with the heads merged back: (B, H, T, S) x (B, H, S, D) -> (B, T, C).
    pub fn weighted_sum(&self, probs: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = probs.dims4()?;
        let context = probs.matmul(v)?; // (B, H, T, D)
        Ok(context
            .transpose(1, 2)?
            .reshape((b, t, self.count * self.size))?)
    }
}
