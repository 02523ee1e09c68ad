//! AdamW's arithmetic as one in-place CPU pass per parameter: the gradient's parts (shards,
//! micro-batches) summed and scaled block by block into a buffer on the stack, and both moments and the
//! parameter updated while the block is in cache; and the gradient norm, read the same way. Written
//! with candle's tensor ops, a step allocated a dozen parameter-sized temporaries; as three passes with
//! the shards' gradients added first, it read the gradient four times and allocated their sum. For a
//! 22M-parameter model either was a fifth of a fine-tuning step.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::with_f32_values;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;
/// Elements of the gradient summed at once into a buffer on the stack.
const BLOCK: usize = 512;
/// Lanes of the sum of squares (independent sums, so that the loop vectorises).
const LANES: usize = 16;

/// `out = scale * sum of parts[start..start + out.len()]`.
fn sum_block(parts: &[&[f32]], start: usize, scale: f32, out: &mut [f32]) {
    let end = start + out.len();
    out.copy_from_slice(&parts[0][start..end]);
    for part in &parts[1..] {
        out.iter_mut()
            .zip(&part[start..end])
            .for_each(|(o, &g)| *o += g);
    }
    if scale != 1.0 {
        out.iter_mut().for_each(|o| *o *= scale);
    }
}

/// The sum of squares of a block, in [`LANES`] f32 sums added up in f64.
fn block_squares(values: &[f32]) -> f64 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        lanes
            .iter_mut()
            .zip(chunk)
            .for_each(|(lane, &x)| *lane += x * x);
    }
    let lanes: f64 = lanes.iter().map(|&l| f64::from(l)).sum();
    lanes + rest.iter().map(|&x| f64::from(x * x)).sum::<f64>()
}

/// Calls `f(start, block)` for every block of `scale * sum of parts` from `start` to `end`.
fn for_each_block(
    parts: &[&[f32]],
    scale: f32,
    start: usize,
    end: usize,
    mut f: impl FnMut(usize, &[f32]),
) {
    let mut buffer = [0f32; BLOCK];
    for at in (start..end).step_by(BLOCK) {
        let block = &mut buffer[..BLOCK.min(end - at)];
        sum_block(parts, at, scale, block);
        f(at, block);
    }
}

/// The sum of the squares of `scale` times the sum of `parts` (tensors of one shape).
pub fn squared_norm(parts: &[&Tensor], scale: f64) -> Result<f64> {
    if parts.is_empty() {
        return Ok(0.0);
    }
    with_f32_values(parts, |parts| {
        let len = parts[0].len();
        Ok((0..len.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut total = 0f64;
                let end = (c * CHUNK + CHUNK).min(len);
                for_each_block(parts, scale as f32, c * CHUNK, end, |_, g| {
                    total += block_squares(g);
                });
                total
            })
            .sum())
    })
}

/// One AdamW update's constants.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub beta1: f64,
    pub beta2: f64,
    /// Multiplies the summed gradient first (averaging, clipping).
    pub grad_scale: f64,
    /// Multiplies the parameter first (`1 - lr * weight_decay`).
    pub decay: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bias2_sqrt: f64,
    pub eps: f64,
}

/// A parameter's moment estimates, updated in place.
pub struct Moments<'a> {
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
}

/// The in-place op over a parameter: the gradient's parts are read, the moments written.
struct AdamWStep<'g, 'm> {
    grads: &'g [&'g [f32]],
    moments: Mutex<Option<Moments<'m>>>,
    update: Update,
}

impl InplaceOp1 for AdamWStep<'_, '_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let param = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(values), Some((start, end))) => &mut values[start..end],
            _ => bail!("adamw: expects a contiguous f32 parameter"),
        };
        let Some(Moments {
            exp_avg,
            exp_avg_sq,
        }) = self.moments.lock().ok().and_then(|mut m| m.take())
        else {
            bail!("adamw: the moments were already used")
        };
        let len = param.len();
        if exp_avg.len() != len
            || exp_avg_sq.len() != len
            || self.grads.iter().any(|g| g.len() != len)
        {
            bail!("adamw: mismatched parameter, gradient and moment sizes");
        }
        let u = self.update;
        let (b1, b2) = (u.beta1 as f32, u.beta2 as f32);
        let (decay, step_size) = (u.decay as f32, u.step_size as f32);
        let (bias2_sqrt, eps) = (u.bias2_sqrt as f32, u.eps as f32);
        param
            .par_chunks_mut(CHUNK)
            .zip(exp_avg.par_chunks_mut(CHUNK))
            .zip(exp_avg_sq.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((p, m), v))| {
                let start = c * CHUNK;
                for_each_block(
                    self.grads,
                    u.grad_scale as f32,
                    start,
                    start + p.len(),
                    |at, g| {
                        let i = at - start;
                        let (p, m, v) = (&mut p[i..], &mut m[i..], &mut v[i..]);
                        for ((&g, (p, m)), v) in g.iter().zip(p.iter_mut().zip(m.iter_mut())).zip(v)
                        {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            *p = *p * decay - step_size * *m / (v.sqrt() / bias2_sqrt + eps);
                        }
                    },
                );
            });
        Ok(())
    }
}

/// Applies `update` to `param` and its moments in place, the gradient being `update.grad_scale` times
/// the sum of `grads`.
pub fn adamw_update(
    param: &Tensor,
    grads: &[&Tensor],
    moments: Moments<'_>,
    update: &Update,
) -> Result<()> {
    with_f32_values(grads, |grads| {
        param.inplace_op1(&AdamWStep {
            grads,
            moments: Mutex::new(Some(moments)),
            update: *update,
        })?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    #[test]
    fn the_norm_and_the_update_read_the_scaled_sum_of_the_parts() {
        // Longer than a parallel chunk and not a multiple of a block, so every edge is crossed.
        let n = CHUNK + BLOCK + 7;
        let d = Device::Cpu;
        let (a, b) = (values(n, 1.0), values(n, 2.0));
        let parts = [
            Tensor::new(&a[..], &d).unwrap(),
            Tensor::new(&b[..], &d).unwrap(),
        ];
        let parts: Vec<&Tensor> = parts.iter().collect();
        let scale = 0.25;
        let g: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) * scale).collect();
        let expected: f64 = g.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let norm = squared_norm(&parts, f64::from(scale)).unwrap();
        assert!(
            (norm - expected).abs() < 1e-4 * expected,
            "{norm} vs {expected}"
        );

        let p0 = values(n, 3.0);
        let (mut m, mut v) = (
            values(n, 4.0),
            values(n, 5.0).iter().map(|x| x * x).collect::<Vec<_>>(),
        );
        let param = candle_core::Var::new(&p0[..], &d).unwrap();
        let update = Update {
            beta1: 0.9,
            beta2: 0.999,
            grad_scale: f64::from(scale),
            decay: 0.99,
            step_size: 1e-3,
            bias2_sqrt: 0.05,
            eps: 1e-6,
        };
        let (m0, v0) = (m.clone(), v.clone());
        let moments = Moments {
            exp_avg: &mut m,
            exp_avg_sq: &mut v,
        };
        adamw_update(param.as_tensor(), &parts, moments, &update).unwrap();
        let p: Vec<f32> = param.as_tensor().to_vec1().unwrap();
        for i in [0, 1, BLOCK, CHUNK - 1, CHUNK, n - 1] {
            let m1 = 0.9 * m0[i] + 0.1 * g[i];
            let v1 = 0.999 * v0[i] + 0.001 * g[i] * g[i];
            let p1 = p0[i] * 0.99 - 1e-3 * m1 / (v1.sqrt() / 0.05 + 1e-6);
            assert!(
                (m[i] - m1).abs() < 1e-6 && (v[i] - v1).abs() < 1e-6,
                "moments at {i}"
            );
            assert!(
                (p[i] - p1).abs() < 1e-6,
                "parameter at {i}: {} vs {p1}",
                p[i]
            );
        }
    }
}
