//! `y = x W^T + b`, the layer that carries nearly all of BERT's arithmetic, in every form its weights
//! take: f32 tensors for training (optionally with bf16 products), f32 in place in a mapped checkpoint,
//! or converted to bf16/int8 for inference. Which form is decided when the weights are loaded
//! ([`crate::weights::linear_weights`]).

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::Result;
use crate::kernels::cpu;
use crate::kernels::packed_layout::Precision;
use crate::nn::mapped_linear::MappedLinear;
use crate::ops::fused_kernels_apply;
use crate::ops::linear::{FixedLinear, FixedLinearOp, LinearOp};
use crate::weights::linear_weights::{linear_weights, Absent, LinearWeights};
use crate::weights::params::Params;

/// `y = x W^T + b`, with the weight stored `(out, in)` as in PyTorch.
///
/// Inputs of any rank are flattened to one `(rows, in)` matrix first: one large matmul forward and, in
/// the backward pass, one `(in, rows) x (rows, out)` weight gradient, where candle's batched form would
/// run a small matmul per batch row and then sum them.
#[derive(Debug, Clone)]
pub struct Linear {
    weights: Held,
}

/// The weights as the layer holds them.
#[derive(Debug, Clone)]
enum Held {
    /// f32 weights; `bf16_products` for mixed-precision training (products in bf16, f32 sums).
    F32 {
        weight: Tensor,
        bias: Tensor,
        bf16_products: bool,
    },
    /// Inference weights outside candle: f32 in place in the memory-mapped checkpoint
    /// ([`MappedLinear`]), or converted to bf16 or int8 ([`crate::kernels::packed_layout::PackedLinear`]).
    Fixed(Arc<dyn FixedLinear>),
}

impl Linear {
    /// Loads `{prefix}.weight` and `{prefix}.bias`; both must be in the checkpoint.
    pub fn load(p: &Params, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Self::from_parts(std::slice::from_ref(p), in_dim, out_dim, std, Absent::Error)
    }

    /// Layers over the same input loaded as one, their outputs side by side (`query`, `key` and
    /// `value` as one `3C`-output layer), for inference; the separate weights are released.
    pub fn load_stacked(parts: &[Params], in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Self::from_parts(parts, in_dim, out_dim, std, Absent::Error)
    }

    /// Loads a task-head layer: newly initialised (normal weights, zero bias) when absent.
    pub fn load_or_init(p: &Params, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Self::from_parts(
            std::slice::from_ref(p),
            in_dim,
            out_dim,
            std,
            Absent::Initialise,
        )
    }

    fn from_parts(
        parts: &[Params],
        in_dim: usize,
        out_dim: usize,
        std: f64,
        absent: Absent,
    ) -> Result<Self> {
        let weights = match linear_weights(parts, in_dim, out_dim, std, absent)? {
            LinearWeights::Converted(packed) => Held::Fixed(Arc::new(packed)),
            LinearWeights::InPlace { weights, bias } => {
                Held::Fixed(Arc::new(MappedLinear::new(weights, bias)?))
            }
            LinearWeights::Tensors { weight, bias } => {
                let bf16_products = parts
                    .first()
                    .is_some_and(|p| p.is_trainable() && p.precision() == Precision::Bf16);
                Held::F32 {
                    weight,
                    bias,
                    bf16_products,
                }
            }
        };
        Ok(Linear { weights })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, false)
    }

    /// `gelu(x W^T + b)` (exact GELU) for inference, the activation applied as each output tile is
    /// stored (by the AVX-512 gemm for f32 weights, by the tile epilogue for bf16 and int8 ones;
    /// candle's two ops in turn without AVX-512). Not differentiable.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, true)
    }

    /// The outputs of `layers` over the same `x` side by side (queries, keys and values), computed as
    /// one product over their weights stacked for this call, so that the backward pass also runs one
    /// product per gradient; each layer's weights still get their own gradient.
    pub fn forward_side_by_side(layers: &[&Linear], x: &Tensor) -> Result<Tensor> {
        let held: Option<Vec<(&Tensor, &Tensor, bool)>> = (layers.iter())
            .map(|l| match &l.weights {
                Held::F32 {
                    weight,
                    bias,
                    bf16_products,
                } => Some((weight, bias, *bf16_products)),
                Held::Fixed(_) => None,
            })
            .collect();
        let Some(held) = held.filter(|h| h.windows(2).all(|w| w[0].2 == w[1].2)) else {
            let outputs = (layers.iter())
                .map(|l| l.forward(x))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&outputs, x.rank() - 1)?);
        };
        let weights: Vec<&Tensor> = held.iter().map(|h| h.0).collect();
        let biases: Vec<&Tensor> = held.iter().map(|h| h.1).collect();
        let stacked = Linear {
            weights: Held::F32 {
                weight: Tensor::cat(&weights, 0)?,
                bias: Tensor::cat(&biases, 0)?,
                bf16_products: held[0].2,
            },
        };
        stacked.forward(x)
    }

    fn forward_then(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x = x.reshape((rows, in_dim))?; // (rows, in)
        let (y, out_dim) = match &self.weights {
            Held::Fixed(linear) => (
                x.contiguous()?.apply_op1_no_bwd(&FixedLinearOp {
                    linear: linear.clone(),
                    gelu,
                })?,
                linear.out_dim(),
            ),
            Held::F32 {
                weight,
                bias,
                bf16_products,
            } => (
                f32_linear(&x, weight, bias, *bf16_products, gelu)?,
                weight.dim(0)?,
            ),
        };
        let mut out_dims = dims.to_vec();
        out_dims[dims.len() - 1] = out_dim;
        Ok(y.reshape(out_dims)?)
    }
}

fn f32_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    bf16: bool,
    gelu: bool,
) -> Result<Tensor> {
    if !(fused_kernels_apply(x) && (bf16 || cpu::linear_op_wanted())) {
        let y = x.matmul(&weight.t()?)?.broadcast_add(bias)?;
        return if gelu { Ok(y.gelu_erf()?) } else { Ok(y) };
    }
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    let op = LinearOp { bf16, gelu };
    Ok(if gelu {
        x.apply_op3_no_bwd(&weight, &bias, &op)?
    } else {
        x.apply_op3(&weight, &bias, op)?
    })
}
