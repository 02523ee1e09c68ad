//! Softmax over the last dimension with a backward pass (candle fuses it only for inference, where
//! its op records no gradient): one pass over memory each way, rows in parallel; f32, contiguous input.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::vector_math;
use crate::ops::{f32_rows, CResult};

/// Softmax over the last dimension.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "bert-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, d) = f32_rows(storage, layout, self.name())?;
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(y, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let scale = 1.0 / vector_math::exp_shifted(row, max, y);
                y.iter_mut().for_each(|o| *o *= scale);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &SoftmaxBackward,
        )?))
    }
}

/// dx = y * (g - sum(g * y)) per row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "bert-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (y, d) = f32_rows(s1, l1, self.name())?;
        let (g, _) = f32_rows(s2, l2, self.name())?;
        if g.len() != y.len() {
            candle_core::bail!("{}: shapes disagree", self.name())
        }
        let mut out = output_buffer(y.len());
        out.par_chunks_mut(d)
            .zip(y.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(dx, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for ((o, &yi), &gi) in dx.iter_mut().zip(y).zip(g) {
                    *o = yi * (gi - dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
