//! LayerNorm over the last dimension: candle's fused kernel for inference, ours with a backward pass
//! for training ([`crate::ops::layer_norm`]), the composite form off the CPU or f32.

use candle_core::{Tensor, D};

use crate::error::Result;
use crate::nn::{Dropout, Mode};
use crate::ops::fused_kernels_apply;
use crate::ops::layer_norm::LayerNormOp;
use crate::ops::residual_layer_norm::ResidualLayerNorm;
use crate::weights::params::{Init, Params};

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(p: &Params, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.get(&[dim], "weight", Init::Ones)?,
            bias: p.get(&[dim], "bias", Init::Zeros)?,
            eps,
        })
    }

    pub fn load_or_init(p: &Params, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.get_or_init(&[dim], "weight", Init::Ones)?,
            bias: p.get_or_init(&[dim], "bias", Init::Zeros)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let x = x.contiguous()?;
        if !mode.is_train() {
            return Ok(candle_nn::ops::layer_norm(
                &x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        if fused_kernels_apply(&x) {
            let op = LayerNormOp {
                eps: self.eps as f32,
            };
            return Ok(x.apply_op3(&self.weight, &self.bias, op)?);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }

    /// `LayerNorm(dropout(x) + residual)`, the end of every encoder sub-block: in training on f32
    /// CPU tensors one op that keeps only the dropout mask for its backward pass
    /// ([`ResidualLayerNorm`]), the same values as the composite form.
    pub fn forward_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        dropout: &Dropout,
        mode: &Mode,
    ) -> Result<Tensor> {
        if mode.is_train() && fused_kernels_apply(x) && x.shape() == residual.shape() {
            let op = ResidualLayerNorm::new(self.eps as f32, dropout.mask(x.elem_count(), mode));
            let weight_and_bias = Tensor::stack(&[&self.weight, &self.bias], 0)?;
            return Ok(x
                .contiguous()?
                .apply_op3(&residual.contiguous()?, &weight_and_bias, op)?);
        }
        let x = dropout.forward(x, mode)?;
        self.forward(&(x + residual)?, mode)
    }
}
