//! The end of every encoder sub-block in training, `LayerNorm(dropout(d) + residual)`, as one op with
//! its own backward pass. The composite form keeps four `(N, C)` tensors for the backward pass (the
//! dropout mask, `d * mask`, the sum and the projection `d` it consumes); this one keeps the mask as
//! one byte per value and recomputes the sum from `d` and the residual, which the graph keeps anyway
//! (the inputs of this op and of the projection before it). The arithmetic is the composite form's,
//! in the same order: the same values to the last bit.
//!
//! Forward, per row: `z = d * m + r`, `y = (z - mean(z)) * rstd(z) * w + b`.
//! Backward, with `G` the output's gradient: `dz` as LayerNorm's ([`input_gradient_row`]),
//! `dd = dz * m`, `dr = dz`, and the weight and bias gradients summed over rows.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::ops::dropout_mask::DropoutMask;
use crate::ops::layer_norm::{input_gradient_row, normalize_row, parameter_gradients};
use crate::ops::{f32_rows, with_f32_values, CResult};

/// `LayerNorm(d * m + r)` over `(d, r, [weight; bias])`, the last a `(2, C)` stack.
pub struct ResidualLayerNorm {
    eps: f32,
    /// The dropout mask over `d`; none without dropout.
    dropout: Option<DropoutMask>,
}

impl ResidualLayerNorm {
    /// `dropout` as [`crate::nn::Dropout::mask`] gives it: 0 where dropped, `1 / (1 - p)` where kept.
    pub fn new(eps: f32, dropout: Option<Vec<f32>>) -> Self {
        ResidualLayerNorm {
            eps,
            dropout: dropout.map(|m| DropoutMask::new(&m)),
        }
    }

    /// `z = d * m + r` for rows starting at value `start`, into `z`.
    fn sum_rows(&self, d: &[f32], r: &[f32], start: usize, z: &mut [f32]) {
        match &self.dropout {
            Some(mask) => {
                mask.apply(d, start, z);
                z.iter_mut().zip(r).for_each(|(z, r)| *z += r);
            }
            None => {
                for (z, (d, r)) in z.iter_mut().zip(d.iter().zip(r)) {
                    *z = d + r;
                }
            }
        }
    }

    fn check(&self, n: usize, r: usize, width: usize, wb: usize) -> CResult<()> {
        if r != n || wb != 2 * width || self.dropout.as_ref().is_some_and(|m| m.len() != n) {
            candle_core::bail!(
                "residual layer norm: {n} values, a residual of {r}, {wb} weight and bias values \
                 for rows of {width}, or a dropout mask of another size"
            )
        }
        Ok(())
    }
}

impl CustomOp3 for ResidualLayerNorm {
    fn name(&self) -> &'static str {
        "bert-residual-layer-norm"
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
        let (d, c) = f32_rows(s1, l1, self.name())?;
        let (r, _) = f32_rows(s2, l2, self.name())?;
        let (wb, _) = f32_rows(s3, l3, self.name())?;
        self.check(d.len(), r.len(), c, wb.len())?;
        let (w, b) = wb.split_at(c);
        let mut out = output_buffer(d.len());
        out.par_chunks_mut(c).enumerate().for_each(|(row, y)| {
            let at = row * c;
            let mut z = vec![0f32; c];
            self.sum_rows(&d[at..at + c], &r[at..at + c], at, &mut z);
            normalize_row(&z, w, b, self.eps, y);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        d: &Tensor,
        r: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = d.dim(candle_core::D::Minus1)?;
        let n = d.elem_count();
        let mut z = output_buffer(n);
        let mut dz = output_buffer(n);
        let mut dd = output_buffer(n);
        let sums = with_f32_values(&[d, r, wb, grad], |v| {
            let (d, r, w, g) = (v[0], v[1], &v[2][..c], v[3]);
            z.par_chunks_mut(c)
                .zip(dz.par_chunks_mut(c).zip(dd.par_chunks_mut(c)))
                .enumerate()
                .for_each(|(row, (z, (dz, dd)))| {
                    let at = row * c;
                    self.sum_rows(&d[at..at + c], &r[at..at + c], at, z);
                    input_gradient_row(z, w, &g[at..at + c], self.eps, dz);
                    match &self.dropout {
                        Some(mask) => mask.apply(dz, at, dd),
                        None => dd.copy_from_slice(dz),
                    }
                });
            Ok(parameter_gradients(&z, g, c, self.eps))
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let device = d.device();
        Ok((
            Some(Tensor::from_vec(dd, d.shape(), device)?),
            Some(Tensor::from_vec(dz, d.shape(), device)?),
            Some(Tensor::from_vec(sums, (2, c), device)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layer_norm::LayerNormOp;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32 * 2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// The fused op against the composite form it replaces (mask multiply, add, LayerNorm), forward
    /// and every gradient, bit for bit.
    #[test]
    fn equals_the_composite_form_bit_for_bit() {
        let (rows, c) = (70, 24); // more rows than one chunk of the parameter sums
        let cpu = &Device::Cpu;
        let d = Var::from_vec(values(rows * c, 1), (rows, c), cpu).unwrap();
        let r = Var::from_vec(values(rows * c, 2), (rows, c), cpu).unwrap();
        let w = Var::from_vec(values(c, 3), c, cpu).unwrap();
        let b = Var::from_vec(values(c, 4), c, cpu).unwrap();
        let mask: Vec<f32> = (0..rows * c)
            .map(|i| if i % 7 == 3 { 0.0 } else { 1.0 / 0.9 })
            .collect();
        let weights = Tensor::from_vec(values(rows * c, 5), (rows, c), cpu).unwrap();
        let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();

        for dropout in [Some(mask.clone()), None] {
            let wb = Tensor::stack(&[w.as_tensor(), b.as_tensor()], 0).unwrap();
            let op = ResidualLayerNorm::new(1e-12, dropout.clone());
            let fused = d.as_tensor().apply_op3(r.as_tensor(), &wb, op).unwrap();
            let dropped = match &dropout {
                Some(m) => {
                    (d.as_tensor() * Tensor::from_vec(m.clone(), (rows, c), cpu).unwrap()).unwrap()
                }
                None => d.as_tensor().clone(),
            };
            let composite = (dropped + r.as_tensor())
                .unwrap()
                .apply_op3(w.as_tensor(), b.as_tensor(), LayerNormOp { eps: 1e-12 })
                .unwrap();
            assert_eq!(
                fused.to_vec2::<f32>().unwrap(),
                composite.to_vec2::<f32>().unwrap()
            );
            let (g1, g2) = (
                loss(&fused).backward().unwrap(),
                loss(&composite).backward().unwrap(),
            );
            for var in [&d, &r, &w, &b] {
                let flat = |g: &candle_core::backprop::GradStore| {
                    let t = g.get(var).unwrap();
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                };
                assert_eq!(flat(&g1), flat(&g2));
            }
        }
    }

    #[test]
    fn refuses_operands_that_do_not_fit() {
        let cpu = &Device::Cpu;
        let d = Tensor::zeros((2, 4), candle_core::DType::F32, cpu).unwrap();
        let wb = Tensor::zeros((2, 4), candle_core::DType::F32, cpu).unwrap();
        let op = ResidualLayerNorm::new(1e-12, Some(vec![1.0; 5]));
        let err = d.apply_op3(&d, &wb, op).unwrap_err().to_string();
        assert!(err.contains("dropout mask"), "{err}");
    }
}
