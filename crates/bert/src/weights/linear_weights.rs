//! The one place that decides how a Linear layer's weights are loaded. In order of preference:
//!
//! 1. **Cached conversion** (bf16/int8 inference): the layer as an earlier load converted it, mapped
//!    from the cache of converted layers ([`crate::cache::converted`]).
//! 2. **In place** (f32 inference): the weights used where they lie in the memory-mapped checkpoint,
//!    when they start on a 64-byte boundary (see [`MappedF32::is_cache_aligned`]) and our gemm is
//!    the fast one ([`cpu::fast_gemm_available`]: AVX-512); elsewhere candle's matmul over tensors is
//!    far faster than the portable loop (all-MiniLM-L6-v2 on an AVX2 CPU: 45 s -> 2 s for 100 texts).
//! 3. **Converted from the mapping** (bf16/int8 inference): converted straight from the mapped f32
//!    values, never copied, then written to the cache for the next load.
//! 4. **Tensors**: read into memory; converted there for bf16/int8 inference, kept as f32 tensors
//!    (trainable variables when training) otherwise.
//!
//! Task-head layers ([`Absent::Initialise`]) take the last path only: they may be missing from the
//! checkpoint and are then initialised.

use candle_core::Tensor;

use crate::error::Result;
use crate::files::safetensors::MappedF32;
use crate::kernels::cpu;
use crate::kernels::packed_layout::{PackedLinear, Precision};
use crate::ops::{fused_kernels_apply, with_f32_values};
use crate::weights::params::{Init, Params};

/// A Linear layer's weights, in the form [`linear_weights`] chose.
pub enum LinearWeights {
    /// Converted to bf16 or int8 (at this load, or on an earlier one and mapped from the cache).
    Converted(PackedLinear),
    /// f32 weights in place in the mapped checkpoint (one per part, stacked along the outputs), and
    /// the biases side by side.
    InPlace {
        weights: Vec<MappedF32>,
        bias: Vec<f32>,
    },
    /// f32 tensors `(out, in)` and `(out)`.
    Tensors { weight: Tensor, bias: Tensor },
}

/// What to do when a layer's weights are not in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// An error (encoder layers).
    Error,
    /// Initialise them, normal weights and zero bias (task heads).
    Initialise,
}

/// The weights of the Linear layer over `parts` (several parts are stacked along the outputs, as
/// `query`, `key` and `value` are for inference), each `(out_dim, in_dim)`, in the store's precision.
pub fn linear_weights(
    parts: &[Params],
    in_dim: usize,
    out_dim: usize,
    std: f64,
    absent: Absent,
) -> Result<LinearWeights> {
    if absent == Absent::Error {
        if let Some(weights) = mapped(parts, in_dim, out_dim)? {
            return Ok(weights);
        }
    }
    let (weight, bias) = tensors(parts, in_dim, out_dim, std, absent)?;
    let precision = parts.first().map_or(Precision::F32, |p| p.precision());
    let trainable = parts.first().is_some_and(|p| p.is_trainable());
    if precision == Precision::F32 || trainable || !fused_kernels_apply(&weight) {
        return Ok(LinearWeights::Tensors { weight, bias });
    }
    let total = weight.dim(0)?;
    let bias = bias.to_vec1::<f32>()?;
    let packed = with_f32_values(&[&weight], |w| {
        Ok(PackedLinear::new(w[0], &bias, total, precision))
    })?;
    parts.iter().for_each(|p| p.release("weight"));
    Ok(LinearWeights::Converted(packed))
}

/// Paths 1-3: from the cache, or the mapped checkpoint. `None` when the weights cannot be mapped.
fn mapped(parts: &[Params], in_dim: usize, out_dim: usize) -> Result<Option<LinearWeights>> {
    let precision = parts.first().map_or(Precision::F32, |p| p.precision());
    let total = out_dim * parts.len();
    if precision != Precision::F32 {
        if let Some(packed) = Params::cached_linear(parts, in_dim, total) {
            return Ok(Some(LinearWeights::Converted(packed)));
        }
    }
    let mut weights = Vec::with_capacity(parts.len());
    for p in parts {
        match p.mapped(&[out_dim, in_dim], "weight")? {
            Some(weight) => weights.push(weight),
            None => return Ok(None),
        }
    }
    let in_place = weights.iter().all(MappedF32::is_cache_aligned) && cpu::fast_gemm_available();
    if precision == Precision::F32 && !in_place {
        return Ok(None); // tensors instead: see the module's doc
    }
    let mut bias = Vec::with_capacity(parts.len() * out_dim);
    for p in parts {
        bias.extend(p.get(&[out_dim], "bias", Init::Zeros)?.to_vec1::<f32>()?);
        p.release("bias");
    }
    if precision == Precision::F32 {
        return Ok(Some(LinearWeights::InPlace { weights, bias }));
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
    Ok(Some(LinearWeights::Converted(packed)))
}

/// Path 4: the weights as tensors, stacked when there are several parts (whose own copies are then
/// released).
fn tensors(
    parts: &[Params],
    in_dim: usize,
    out_dim: usize,
    std: f64,
    absent: Absent,
) -> Result<(Tensor, Tensor)> {
    let get = |p: &Params, shape: &[usize], name: &str, init: Init| match absent {
        Absent::Error => p.get(shape, name, init),
        Absent::Initialise => p.get_or_init(shape, name, init),
    };
    let mut weights = Vec::with_capacity(parts.len());
    let mut biases = Vec::with_capacity(parts.len());
    for p in parts {
        weights.push(get(p, &[out_dim, in_dim], "weight", Init::Normal(std))?);
        biases.push(get(p, &[out_dim], "bias", Init::Zeros)?);
    }
    if let ([weight], [bias]) = (weights.as_slice(), biases.as_slice()) {
        return Ok((weight.clone(), bias.clone()));
    }
    let stacked = (Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?);
    drop((weights, biases));
    for p in parts {
        p.release("weight");
        p.release("bias");
    }
    Ok(stacked)
}
