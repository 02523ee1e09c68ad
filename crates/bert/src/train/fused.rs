//! AdamW's arithmetic as in-place CPU kernels: one pass per moment and one for the parameter, each over
//! the existing buffers, split across threads. Written with candle's tensor ops, a step allocated a dozen
//! parameter-sized temporaries; for a 22M-parameter model that was most of a fine-tuning step.

use candle_core::{bail, CpuStorage, CustomOp1, InplaceOp2, InplaceOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(values), Some((start, end))) => Ok(&values[start..end]),
        _ => bail!("{name}: expects a contiguous f32 tensor"),
    }
}

fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(values), Some((start, end))) => Ok(&mut values[start..end]),
        _ => bail!("{name}: expects a contiguous f32 tensor"),
    }
}

/// `moment = beta * moment + (1 - beta) * f(scale * grad)`, with `f` the identity (first moment) or
/// the square (second moment).
struct MomentUpdate {
    beta: f32,
    scale: f32,
    squared: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let moment = contiguous_f32_mut(s1, l1, self.name())?;
        let grad = contiguous_f32(s2, l2, self.name())?;
        if moment.len() != grad.len() {
            bail!(
                "adamw-moment: {} moments for {} gradients",
                moment.len(),
                grad.len()
            );
        }
        let (beta, rest, scale, squared) = (self.beta, 1.0 - self.beta, self.scale, self.squared);
        moment
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = g * scale;
                    let g = if squared { g * g } else { g };
                    *m = beta * *m + rest * g;
                }
            });
        Ok(())
    }
}

/// `param = param * decay - step_size * m / (sqrt(v) / bias2_sqrt + eps)`.
struct ParamUpdate {
    decay: f32,
    step_size: f32,
    bias2_sqrt: f32,
    eps: f32,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let param = contiguous_f32_mut(s1, l1, self.name())?;
        let m = contiguous_f32(s2, l2, self.name())?;
        let v = contiguous_f32(s3, l3, self.name())?;
        if param.len() != m.len() || param.len() != v.len() {
            bail!("adamw-param: mismatched parameter and moment sizes");
        }
        let ParamUpdate {
            decay,
            step_size,
            bias2_sqrt,
            eps,
        } = *self;
        param
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    *p = *p * decay - step_size * m / (v.sqrt() / bias2_sqrt + eps);
                }
            });
        Ok(())
    }
}

/// The sum of squares, accumulated in f64.
struct SumOfSquares;

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "sum-of-squares"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let values = contiguous_f32(s, l, self.name())?;
        let sum: f64 = values
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
            .sum();
        Ok((CpuStorage::F64(vec![sum]), Shape::from(())))
    }
}

/// One AdamW update's constants.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub beta1: f64,
    pub beta2: f64,
    /// Multiplies the gradient first (clipping).
    pub grad_scale: f64,
    /// Multiplies the parameter first (`1 - lr * weight_decay`).
    pub decay: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bias2_sqrt: f64,
    pub eps: f64,
}

/// Applies `update` to `param` and its moments in place.
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    update: &Update,
) -> Result<()> {
    let grad = grad.contiguous()?;
    let scale = update.grad_scale as f32;
    exp_avg.inplace_op2(
        &grad,
        &MomentUpdate {
            beta: update.beta1 as f32,
            scale,
            squared: false,
        },
    )?;
    exp_avg_sq.inplace_op2(
        &grad,
        &MomentUpdate {
            beta: update.beta2 as f32,
            scale,
            squared: true,
        },
    )?;
    param.inplace_op3(
        exp_avg,
        exp_avg_sq,
        &ParamUpdate {
            decay: update.decay as f32,
            step_size: update.step_size as f32,
            bias2_sqrt: update.bias2_sqrt as f32,
            eps: update.eps as f32,
        },
    )?;
    Ok(())
}

/// The sum of the squares of a tensor's elements.
pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    Ok(t.apply_op1_no_bwd(&SumOfSquares)?.to_scalar::<f64>()?)
}
