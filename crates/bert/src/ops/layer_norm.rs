//! LayerNorm over the last dimension with a backward pass (candle's fused form records no gradient):
//! the composite, differentiable form costs several passes over memory each way, this one or two;
//! rows in parallel; f32, contiguous input.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::ops::{f32_rows, CResult};

/// Mean and 1/std of a row.
pub(crate) fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `y = (x - mean) / std * w + b` over one row.
pub(crate) fn normalize_row(row: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let (mean, rstd) = moments(row, eps);
    for (i, o) in y.iter_mut().enumerate() {
        *o = (row[i] - mean) * rstd * w[i] + b[i];
    }
}

/// One row's input gradient: `dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat))`.
pub(crate) fn input_gradient_row(row: &[f32], w: &[f32], g: &[f32], eps: f32, dx: &mut [f32]) {
    let d = row.len();
    let (mean, rstd) = moments(row, eps);
    let n = d as f32;
    let (mut mean_gw, mut mean_gwx) = (0f32, 0f32);
    for i in 0..d {
        let gw = g[i] * w[i];
        mean_gw += gw;
        mean_gwx += gw * (row[i] - mean) * rstd;
    }
    mean_gw /= n;
    mean_gwx /= n;
    for i in 0..d {
        let xhat = (row[i] - mean) * rstd;
        dx[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gwx);
    }
}

/// `2 x D` sums over the rows of `x` (rows of `d`) and their output gradient `g`: the weight
/// gradient `sum(g * xhat)`, then the bias gradient `sum(g)`.
pub(crate) fn parameter_gradients(x: &[f32], g: &[f32], d: usize, eps: f32) -> Vec<f32> {
    // Fixed chunks summed in order, so the result does not depend on the thread count or on
    // scheduling: training must be reproducible bit for bit.
    const ROWS_PER_CHUNK: usize = 64;
    let partials: Vec<Vec<f32>> = x
        .par_chunks(ROWS_PER_CHUNK * d)
        .zip(g.par_chunks(ROWS_PER_CHUNK * d))
        .map(|(xs, gs)| {
            let mut acc = vec![0f32; 2 * d];
            for (row, g) in xs.chunks(d).zip(gs.chunks(d)) {
                let (mean, rstd) = moments(row, eps);
                for i in 0..d {
                    acc[i] += g[i] * (row[i] - mean) * rstd;
                    acc[d + i] += g[i];
                }
            }
            acc
        })
        .collect();
    let mut sums = vec![0f32; 2 * d];
    for partial in partials {
        sums.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
    }
    sums
}

/// LayerNorm over the last dimension: (x, weight, bias).
pub struct LayerNormOp {
    pub eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "bert-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, d) = f32_rows(s1, l1, self.name())?;
        let (w, _) = f32_rows(s2, l2, self.name())?;
        let (b, _) = f32_rows(s3, l3, self.name())?;
        if w.len() != d || b.len() != d {
            candle_core::bail!("{}: weight and bias must have {d} values", self.name())
        }
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(y, row)| normalize_row(row, w, b, self.eps, y));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(weight, &grad, &LayerNormBackwardInput { eps: self.eps })?;
        let dwb = x.apply_op2_no_bwd(&grad, &LayerNormBackwardParams { eps: self.eps })?; // (2, D)
        Ok((Some(dx), Some(dwb.get(0)?), Some(dwb.get(1)?)))
    }
}

/// dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) per row.
struct LayerNormBackwardInput {
    eps: f32,
}

impl CustomOp3 for LayerNormBackwardInput {
    fn name(&self) -> &'static str {
        "bert-layer-norm-backward-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, d) = f32_rows(s1, l1, self.name())?;
        let (w, _) = f32_rows(s2, l2, self.name())?;
        let (g, _) = f32_rows(s3, l3, self.name())?;
        if w.len() != d || g.len() != x.len() {
            candle_core::bail!("{}: shapes disagree", self.name())
        }
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(dx, (row, g))| input_gradient_row(row, w, g, self.eps, dx));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// (2, D): the weight gradient sum(g * xhat) and the bias gradient sum(g), over rows.
struct LayerNormBackwardParams {
    eps: f32,
}

impl CustomOp2 for LayerNormBackwardParams {
    fn name(&self) -> &'static str {
        "bert-layer-norm-backward-params"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, d) = f32_rows(s1, l1, self.name())?;
        let (g, _) = f32_rows(s2, l2, self.name())?;
        if g.len() != x.len() {
            candle_core::bail!("{}: shapes disagree", self.name())
        }
        let sums = parameter_gradients(x, g, d, self.eps);
        Ok((CpuStorage::F32(sums), Shape::from((2, d))))
    }
}
