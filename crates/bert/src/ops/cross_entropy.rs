//! Cross-entropy over a vocabulary in one op, forward and backward, with optional label smoothing
//! (`transformers`' `LabelSmoother`). Composed from candle's ops, the loss over `(N, V)` logits made
//! some ten passes over `N x V` floats, each into a freshly allocated tensor (log-softmax, the gather,
//! the smoothing sum, and as many again backwards): for a decoder that predicts every target token of
//! a batch, most of a training step. Here the forward pass reads each row twice (its maximum, then the
//! log-sum-exp and the sums) and keeps nothing; the backward pass writes the gradient
//! `(softmax - (1 - eps) onehot - eps / V) / count` in one pass per row.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::ops::{contiguous_f32, f32_rows, CResult};

/// The mean cross-entropy of `(N, V)` logits against `labels` (one per row, negative: ignored),
/// smoothed by `epsilon`.
#[derive(Debug, Clone)]
pub struct CrossEntropy {
    pub labels: Vec<i64>,
    pub epsilon: f32,
}

impl CrossEntropy {
    /// Rows that count (their label is not ignored), at least 1 to divide by.
    fn count(&self) -> f64 {
        (self.labels.iter().filter(|&&l| l >= 0).count() as f64).max(1.0)
    }

    fn check(&self, rows: usize, width: usize, op: &str) -> CResult<()> {
        if self.labels.len() != rows {
            candle_core::bail!(
                "{op}: {} labels for {rows} rows of logits",
                self.labels.len()
            )
        }
        if let Some(bad) = self.labels.iter().find(|&&l| l >= width as i64) {
            candle_core::bail!("{op}: label {bad} is outside 0..{width}")
        }
        Ok(())
    }
}

/// A row's maximum and `log(sum(exp(x - max)))`.
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    (max, sum.ln())
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "bert-cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, v) = f32_rows(storage, layout, self.name())?;
        self.check(x.len() / v, v, self.name())?;
        let eps = f64::from(self.epsilon);
        let total: f64 = x
            .par_chunks(v)
            .zip(self.labels.par_iter())
            .filter(|(_, &label)| label >= 0)
            .map(|(row, &label)| {
                let (max, lse) = log_sum_exp(row);
                let lse = f64::from(max) + f64::from(lse);
                let nll = lse - f64::from(row[label as usize]);
                // -sum(log p) = V lse - sum(x)
                let sum: f64 = row.iter().map(|&x| f64::from(x)).sum();
                let smooth = v as f64 * lse - sum;
                (1.0 - eps) * nll + eps * smooth / v as f64
            })
            .sum();
        let loss = (total / self.count()) as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> CResult<Option<Tensor>> {
        let backward = CrossEntropyBackward(self.clone());
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad_res.contiguous()?, &backward)?,
        ))
    }
}

/// The gradient of [`CrossEntropy`] with respect to the logits, times the loss's gradient.
struct CrossEntropyBackward(CrossEntropy);

impl CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "bert-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, v) = f32_rows(s1, l1, self.name())?;
        let op = &self.0;
        op.check(x.len() / v, v, self.name())?;
        let grad = contiguous_f32(s2, l2, self.name())?;
        let scale = grad.first().copied().unwrap_or(0.0) / op.count() as f32;
        let (keep, spread) = (1.0 - op.epsilon, op.epsilon / v as f32);
        let mut out = output_buffer(x.len());
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v).zip(op.labels.par_iter()))
            .for_each(|(dx, (row, &label))| {
                if label < 0 {
                    dx.fill(0.0);
                    return;
                }
                let (max, lse) = log_sum_exp(row);
                for (d, &x) in dx.iter_mut().zip(row) {
                    *d = ((x - max - lse).exp() - spread) * scale;
                }
                dx[label as usize] -= keep * scale;
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// candle's composite form: log-softmax, the picked labels, the smoothing term.
    fn composite(logits: &Tensor, labels: &[i64], eps: f64) -> Tensor {
        let v = logits.dim(1).unwrap();
        let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1).unwrap();
        let valid: Vec<f32> = labels
            .iter()
            .map(|&l| f32::from(u8::from(l >= 0)))
            .collect();
        let count = valid.iter().sum::<f32>();
        let index: Vec<u32> = labels.iter().map(|&l| l.max(0) as u32).collect();
        let index = Tensor::from_vec(index, (labels.len(), 1), &Device::Cpu).unwrap();
        let valid = Tensor::from_vec(valid, labels.len(), &Device::Cpu).unwrap();
        let nll = (log_probs.gather(&index, 1).unwrap().squeeze(1).unwrap() * &valid).unwrap();
        let nll = (nll.sum_all().unwrap().neg().unwrap() / f64::from(count)).unwrap();
        let smooth = (log_probs.sum(D::Minus1).unwrap().neg().unwrap() * &valid).unwrap();
        let smooth = (smooth.sum_all().unwrap() / (f64::from(count) * v as f64)).unwrap();
        ((nll * (1.0 - eps)).unwrap() + (smooth * eps).unwrap()).unwrap()
    }

    #[test]
    fn equals_the_composite_loss_and_its_gradient_with_and_without_smoothing() {
        let values: Vec<f32> = (0..4 * 7)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let logits = Var::from_vec(values, (4, 7), &Device::Cpu).unwrap();
        let labels = vec![3i64, -100, 0, 6];
        for eps in [0.0, 0.1] {
            let theirs = composite(logits.as_tensor(), &labels, eps);
            let op = CrossEntropy {
                labels: labels.clone(),
                epsilon: eps as f32,
            };
            let ours = logits.as_tensor().apply_op1(op).unwrap();
            let (a, b): (f32, f32) = (ours.to_scalar().unwrap(), theirs.to_scalar().unwrap());
            assert!((a - b).abs() < 1e-5, "eps {eps}: {a} vs {b}");
            let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
            let (ga, gb) = (ga.get(&logits).unwrap(), gb.get(&logits).unwrap());
            let diff: f32 = (ga - gb)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-6, "eps {eps}: gradients differ by {diff}");
        }
        let bad = CrossEntropy {
            labels: vec![9, 0, 0, 0],
            epsilon: 0.0,
        };
        let err = logits.as_tensor().apply_op1(bad).unwrap_err();
        assert!(err.to_string().contains("label 9"), "{err}");
    }
}
