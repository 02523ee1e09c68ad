//! The building-block ops of the encoder, each in an inference form and a differentiable training form.
//!
//! candle's fused LayerNorm and softmax are fast but record no gradient, so under [`Mode::Train`] our
//! fused kernels with backward passes are used (the composite forms off the CPU or f32); dropout draws
//! its masks from our own seeded [`Rng`].

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, D};

use crate::config::HiddenAct;
use crate::error::Result;
use crate::model::kernels::{Gelu, LayerNormOp, Softmax};
use crate::model::mapped_linear::MappedLinear;
use crate::model::quantized::{PackedLinear, Precision};
use crate::params::Params;
use crate::rng::Rng;
use crate::safetensors_file::MappedF32;

/// Whether a forward pass is for inference or training.
pub enum Mode<'a> {
    /// Dropout off, candle's fused (non-differentiable) kernels.
    Eval,
    /// Dropout on, with masks from this generator; every op differentiable.
    Train(&'a Mutex<Rng>),
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// `y = x W^T + b`, with the weight stored `(out, in)` as in PyTorch.
///
/// Inputs of any rank are flattened to one `(rows, in)` matrix first: one large matmul forward and, in
/// the backward pass, one `(in, rows) x (rows, out)` weight gradient, where candle's batched form would
/// run a small matmul per batch row and then sum them. Loaded for inference from a safetensors file,
/// an f32 weight is used in place in the memory-mapped file ([`MappedLinear`]); loaded for bf16 or
/// int8 inference ([`Params::precision`]), it is converted once (no f32 copy is kept) and cached on
/// disk, and later loads map the converted layer ([`crate::packed_cache`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weights: LinearWeights,
}

#[derive(Debug, Clone)]
enum LinearWeights {
    /// f32 weights; `bf16_products` for mixed-precision training (products in bf16, f32 sums).
    F32 {
        weight: Tensor,
        bias: Tensor,
        bf16_products: bool,
    },
    /// Inference weights outside candle: f32 in place in the memory-mapped checkpoint
    /// ([`MappedLinear`]), or converted to bf16 or int8 ([`PackedLinear`]).
    Fixed(Arc<dyn FixedLinear>),
}

impl Linear {
    /// Loads `{prefix}.weight` and `{prefix}.bias`; both must be in the checkpoint.
    pub fn load(p: &Params, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        if let Some(linear) = Self::load_mapped(std::slice::from_ref(p), in_dim, out_dim)? {
            return Ok(linear);
        }
        let weight = p.get(&[out_dim, in_dim], "weight", Init::Normal(std))?;
        let bias = p.get(&[out_dim], "bias", Init::Zeros)?;
        Self::in_store(weight, bias, p)
    }

    /// Layers over the same input loaded as one, their outputs side by side (`query`, `key` and
    /// `value` as one `3C`-output layer), for inference; the separate weights are released.
    pub fn load_stacked(parts: &[Params], in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        if let Some(linear) = Self::load_mapped(parts, in_dim, out_dim)? {
            return Ok(linear);
        }
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for p in parts {
            weights.push(p.get(&[out_dim, in_dim], "weight", Init::Normal(std))?);
            biases.push(p.get(&[out_dim], "bias", Init::Zeros)?);
        }
        let (weight, bias) = (Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?);
        drop((weights, biases));
        for p in parts {
            p.release("weight");
            p.release("bias");
        }
        let precision = parts.first().map_or(Precision::F32, |p| p.precision());
        Self::new(weight, bias, precision, false)
    }

    /// Loads a task-head layer: newly initialised (normal weights, zero bias) when absent.
    pub fn load_or_init(p: &Params, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = p.get_or_init(&[out_dim, in_dim], "weight", Init::Normal(std))?;
        let bias = p.get_or_init(&[out_dim], "bias", Init::Zeros)?;
        Self::in_store(weight, bias, p)
    }

    /// For inference from a safetensors checkpoint: the weights of `parts` (stacked along the
    /// outputs) used in place in the mapped file (f32), or converted straight from it (bf16, int8),
    /// so that no f32 copy is ever made. `None` when they cannot be mapped.
    fn load_mapped(parts: &[Params], in_dim: usize, out_dim: usize) -> Result<Option<Self>> {
        let precision = parts.first().map_or(Precision::F32, |p| p.precision());
        let total = out_dim * parts.len();
        if precision != Precision::F32 {
            if let Some(packed) = Params::cached_linear(parts, in_dim, total) {
                return Ok(Some(Linear::fixed(packed)));
            }
        }
        let mut weights = Vec::with_capacity(parts.len());
        for p in parts {
            match p.mapped(&[out_dim, in_dim], "weight")? {
                Some(weight) => weights.push(weight),
                None => return Ok(None),
            }
        }
        if precision == Precision::F32 && !weights.iter().all(MappedF32::is_cache_aligned) {
            return Ok(None); // copied into aligned memory instead: see `is_cache_aligned`
        }
        let mut bias = Vec::with_capacity(parts.len() * out_dim);
        for p in parts {
            bias.extend(p.get(&[out_dim], "bias", Init::Zeros)?.to_vec1::<f32>()?);
            p.release("bias");
        }
        if precision == Precision::F32 {
            return Ok(Some(Linear::fixed(MappedLinear::new(weights, bias)?)));
        }
        let packed = match weights.as_slice() {
            [one] => PackedLinear::new(one.values(), &bias, total, precision),
            many => {
                let stacked: Vec<f32> = many.iter().flat_map(|w| w.values()).copied().collect();
                PackedLinear::new(&stacked, &bias, total, precision)
            }
        };
        weights.iter().for_each(MappedF32::release_pages);
        Params::cache_linear(parts, &packed);
        Ok(Some(Linear::fixed(packed)))
    }

    fn fixed(linear: impl FixedLinear + 'static) -> Self {
        Linear {
            weights: LinearWeights::Fixed(Arc::new(linear)),
        }
    }

    /// The layer in the precision `p`'s store asks for; a converted weight's f32 copy is released.
    fn in_store(weight: Tensor, bias: Tensor, p: &Params) -> Result<Self> {
        let linear = Self::new(weight, bias, p.precision(), p.is_trainable())?;
        if matches!(linear.weights, LinearWeights::Fixed(_)) {
            p.release("weight");
        }
        Ok(linear)
    }

    /// The layer in `precision`: for inference, its weight converted; for training (`trainable`), f32
    /// weights with bf16 products when `precision` is bf16.
    fn new(weight: Tensor, bias: Tensor, precision: Precision, trainable: bool) -> Result<Self> {
        if precision == Precision::F32 || trainable || !fused_kernels_apply(&weight) {
            let bf16_products = trainable && precision == Precision::Bf16;
            return Ok(Linear {
                weights: LinearWeights::F32 {
                    weight,
                    bias,
                    bf16_products,
                },
            });
        }
        let out_dim = weight.dim(0)?;
        let bias = bias.to_vec1::<f32>()?;
        let packed = with_f32_values(&[&weight], |w| {
            Ok(PackedLinear::new(w[0], &bias, out_dim, precision))
        })?;
        Ok(Linear::fixed(packed))
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

    fn forward_then(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x = x.reshape((rows, in_dim))?;
        let (y, out_dim) = match &self.weights {
            LinearWeights::Fixed(linear) => (
                x.contiguous()?.apply_op1_no_bwd(&FixedLinearOp {
                    linear: linear.clone(),
                    gelu,
                })?,
                linear.out_dim(),
            ),
            LinearWeights::F32 {
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

/// A Linear layer whose weights are fixed for inference and held outside candle, run by one op.
pub trait FixedLinear: Send + Sync + std::fmt::Debug {
    fn in_dim(&self) -> usize;
    fn out_dim(&self) -> usize;
    /// `gelu?(x W^T + b)` for `rows` row-major inputs.
    fn forward_rows(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32>;
}

/// A [`FixedLinear`] as a candle op (inference only: no backward pass).
struct FixedLinearOp {
    linear: Arc<dyn FixedLinear>,
    gelu: bool,
}

impl candle_core::CustomOp1 for FixedLinearOp {
    fn name(&self) -> &'static str {
        "bert-fixed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let linear = &self.linear;
        let dims = (linear.out_dim(), linear.in_dim());
        let (x, rows) = crate::model::gemm::linear_input(storage, layout, dims, self.name())?;
        Ok((
            candle_core::CpuStorage::F32(linear.forward_rows(x, rows, self.gelu)),
            candle_core::Shape::from((rows, linear.out_dim())),
        ))
    }
}

/// Runs `f` on the values of contiguous f32 CPU tensors, without copying them (the storage is held
/// for as long as `f` runs).
pub(crate) fn with_f32_values<T>(
    tensors: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> Result<T>,
) -> Result<T> {
    let owned: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut views = Vec::with_capacity(guards.len());
    for ((storage, layout), tensor) in guards.iter().zip(&owned) {
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &**storage else {
            return Err(candle_core::Error::Msg("expected an f32 CPU tensor".into()).into());
        };
        let start = layout.start_offset();
        views.push(&values[start..start + tensor.elem_count()]);
    }
    f(&views)
}

fn f32_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    bf16: bool,
    gelu: bool,
) -> Result<Tensor> {
    if !(fused_kernels_apply(x) && (bf16 || crate::model::gemm::fast_gemm_available())) {
        let y = x.matmul(&weight.t()?)?.broadcast_add(bias)?;
        return if gelu { Ok(y.gelu_erf()?) } else { Ok(y) };
    }
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    let op = crate::model::gemm::LinearOp { bf16, gelu };
    Ok(if gelu {
        x.apply_op3_no_bwd(&weight, &bias, &op)?
    } else {
        x.apply_op3(&weight, &bias, op)?
    })
}

/// How a missing task-head weight is initialised (as `transformers`' `_init_weights` does).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f64),
    /// An embedding matrix: normal, with the padding token's row zero (as `nn.Embedding(padding_idx)`
    /// is initialised by `transformers`).
    Embedding {
        std: f64,
        padding_idx: Option<usize>,
    },
}

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
}

/// Whether the fused CPU kernels (with backward) can take this tensor.
fn fused_kernels_apply(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

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

/// Inverted dropout: zero each element with probability `p` and scale the rest by `1 / (1 - p)`.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Self {
        Dropout { p }
    }

    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let Mode::Train(rng) = mode else {
            return Ok(x.clone());
        };
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = {
            let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.bernoulli(x.elem_count(), self.p, 0.0, scale)
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

/// An additive attention bias from a `(B, T)` 0/1 mask: 0 where attended, the dtype's minimum where
/// padded, shaped `(B, 1, 1, T)` to broadcast over heads and query positions (as `transformers` does).
pub fn attention_bias(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, t) = attention_mask.dims2()?;
    let mask = attention_mask.to_dtype(DType::F32)?;
    let bias = ((1.0 - mask)? * f32::MIN as f64)?;
    Ok(bias.reshape((b, 1, 1, t))?.to_dtype(dtype)?)
}
