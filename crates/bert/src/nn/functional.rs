//! The stateless functions of the encoder: softmax, the hidden activation, and the additive attention
//! mask, each picking our differentiable op or candle's by [`Mode`] and tensor.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::nn::Mode;
use crate::ops::fused_kernels_apply;
use crate::ops::gelu::Gelu;
use crate::ops::softmax::Softmax;
use crate::weights::config::HiddenAct;

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor, mode: &Mode) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(match (mode.is_train(), fused_kernels_apply(&x)) {
        (false, _) => candle_nn::ops::softmax_last_dim(&x)?,
        (true, true) => x.apply_op1(Softmax)?,
        (true, false) => candle_nn::ops::softmax(&x, D::Minus1)?,
    })
}

pub fn activation(x: &Tensor, act: HiddenAct) -> Result<Tensor> {
    Ok(match act {
        HiddenAct::Gelu if fused_kernels_apply(x) => x.contiguous()?.apply_op1(Gelu)?,
        HiddenAct::Gelu => x.gelu_erf()?,
        HiddenAct::GeluNew | HiddenAct::GeluPytorchTanh => x.gelu()?,
        HiddenAct::Relu => x.relu()?,
        HiddenAct::Silu | HiddenAct::Swish => x.silu()?,
    })
}

/// An additive attention bias from a `(B, T)` 0/1 mask: 0 where attended, the dtype's minimum where
/// padded, shaped `(B, 1, 1, T)` to broadcast over heads and query positions (as `transformers` does).
pub fn attention_bias(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, t) = attention_mask.dims2()?;
    let mask = attention_mask.to_dtype(DType::F32)?;
    let bias = ((1.0 - mask)? * f32::MIN as f64)?;
    Ok(bias.reshape((b, 1, 1, t))?.to_dtype(dtype)?)
}
