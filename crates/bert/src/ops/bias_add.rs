//! `x + bias` over the rows of a `(N, V)` matrix, with a backward pass that sums the output gradient's
//! rows into the bias gradient one row after another. candle's broadcast add reduces over the first
//! dimension with a strided index per element, which for a vocabulary-sized output (the masked-LM
//! head's logits of every target token) was the largest part of the head's backward pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::ops::{f32_rows, CResult};

/// `x (N, V) + bias (V)`.
pub struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bert-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, v) = f32_rows(s1, l1, self.name())?;
        let (bias, width) = f32_rows(s2, l2, self.name())?;
        if width != v || bias.len() != v {
            candle_core::bail!("{}: a bias of {} for rows of {v}", self.name(), bias.len())
        }
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .for_each(|(y, row)| {
                for ((o, &a), &b) in y.iter_mut().zip(row).zip(bias) {
                    *o = a + b;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let v = bias.elem_count();
        let values = grad.flatten_all()?.to_vec1::<f32>()?;
        // Each thread sums a band of rows; the bands' sums are added in order (the same sum on
        // every run with the same threads).
        let band = (values.len() / v)
            .div_ceil(rayon::current_num_threads().max(1))
            .max(1);
        let bands: Vec<Vec<f32>> = values
            .par_chunks(band * v)
            .map(|rows| {
                let mut sum = vec![0f32; v];
                for row in rows.chunks(v) {
                    sum.iter_mut().zip(row).for_each(|(s, &g)| *s += g);
                }
                sum
            })
            .collect();
        let mut sum = vec![0f32; v];
        for part in &bands {
            sum.iter_mut().zip(part).for_each(|(s, &p)| *s += p);
        }
        let grad_bias = Tensor::from_vec(sum, bias.shape(), bias.device())?;
        Ok((Some(grad), Some(grad_bias)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn equals_candles_broadcast_add_forward_and_backward() {
        let x = Var::from_vec(
            (0..12).map(|i| i as f32 * 0.5).collect(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        let b = Var::from_vec(vec![1.0f32, -2.0, 3.0], 3, &Device::Cpu).unwrap();
        let weights = Tensor::from_vec(
            (0..12).map(|i| (i % 5) as f32).collect(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        let ours = x.as_tensor().apply_op2(b.as_tensor(), BiasAdd).unwrap();
        let theirs = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
        assert_eq!(
            ours.to_vec2::<f32>().unwrap(),
            theirs.to_vec2::<f32>().unwrap()
        );
        let loss = |t: &Tensor| (t * &weights).unwrap().sum_all().unwrap();
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&theirs).backward().unwrap(),
        );
        for var in [&x, &b] {
            let (a, c) = (g1.get(var).unwrap(), g2.get(var).unwrap());
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                c.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
