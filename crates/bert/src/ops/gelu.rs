//! Exact GELU (BERT's `"gelu"`) with a backward pass, in one vectorised pass each way; f32,
//! contiguous input.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::vector_math;
use crate::ops::{f32_rows, CResult};

/// GELU as BERT's `"gelu"` means it: `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, in one pass each way.
pub struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "bert-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, _) = f32_rows(storage, layout, self.name())?;
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(y, x)| vector_math::gelu(x, y));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &GeluBackward,
        )?))
    }
}

/// dx = g * (Phi(x) + x * phi(x)).
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "bert-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, _) = f32_rows(s1, l1, self.name())?;
        let (g, _) = f32_rows(s2, l2, self.name())?;
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14).zip(g.par_chunks(1 << 14)))
            .for_each(|(dx, (x, g))| vector_math::gelu_backward(x, g, dx));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
