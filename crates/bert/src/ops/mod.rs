//! candle custom ops: each forward pass beside its backward pass, over our own kernels
//! ([`crate::kernels`]). candle's fused softmax and LayerNorm record no gradient and its matmul lacks
//! AVX-512; these ops are what the network layers ([`crate::nn`]) run, in training and inference.
//!
//! Every op takes f32 tensors on the CPU; [`fused_kernels_apply`] says when, and the layers fall back
//! to candle's composite forms for anything else.

use candle_core::{CpuStorage, DType, Layout, Tensor};

use crate::error::Result;

pub mod attention;
pub mod bias_add;
pub mod cross_entropy;
pub mod dropout_mask;
pub mod embedding;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod residual_layer_norm;
pub mod softmax;
pub mod training_attention;

pub(crate) type CResult<T> = candle_core::Result<T>;

/// Whether the fused CPU kernels (with backward) can take this tensor.
pub fn fused_kernels_apply(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The values of a contiguous f32 operand, and the width of its last dimension (its rows).
pub(crate) fn f32_rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> CResult<(&'a [f32], usize)> {
    let width = *layout.dims().last().unwrap_or(&1);
    Ok((contiguous_f32(storage, layout, op)?, width.max(1)))
}

/// The values of a contiguous f32 operand of the op named `op`.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: operands must be contiguous")
    };
    Ok(&data[start..end])
}

/// Runs `f` on the values of contiguous f32 CPU tensors, without copying them (the storage is held
/// for as long as `f` runs).
pub fn with_f32_values<T>(
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
