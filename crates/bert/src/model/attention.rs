//! Self-attention for inference in one op: for each sequence and head, the scores `Q K^T` go into a
//! per-thread buffer, the padding mask is added and the softmax taken in place, and the buffer times
//! `V` lands directly in the `(B, T, C)` layout the next projection reads. Nothing of size `T x T`
//! is allocated per call, the heads are never split into copies, and the products use our AVX-512
//! gemm. Training keeps the differentiable composite form.

use rayon::prelude::*;

use crate::model::gemm::{contiguous_f32, matmul, View};
use crate::model::vector_math::softmax_masked;

/// The query, key and value projections of a batch, `(B, T, C)` each.
struct Projections<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    t: usize,
    c: usize,
}

/// `softmax(Q K^T + mask) V` per head over `(B, T, C)` projections; `q` already scaled.
#[derive(Debug, Clone)]
pub struct FusedAttention {
    pub heads: usize,
    /// The additive mask, `(B, T)`: 0 for real tokens, a large negative number for padding.
    pub mask: Vec<f32>,
}

thread_local! {
    /// The `T x T` scores of the head a thread is working on, kept across calls.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl FusedAttention {
    /// The context of head `h` of sequence `b`: `T x D`, row-major.
    fn head(&self, p: &Projections, b: usize, h: usize) -> Vec<f32> {
        let (q, k, v, t, c) = (p.q, p.k, p.v, p.t, p.c);
        let d = c / self.heads;
        let at = |data| head_view(data, b * t * c + h * d, t, c, d);
        let mask = &self.mask[b * t..(b + 1) * t];
        let mut context = vec![0f32; t * d];
        SCORES.with(|scores| {
            let mut scores = std::mem::take(&mut *scores.borrow_mut());
            scores.resize(t * t, 0.0);
            matmul(at(q), at(k).t(), &mut scores);
            for row in scores.chunks_mut(t) {
                softmax_masked(row, mask);
            }
            matmul(View::row_major(&scores, t, t), at(v), &mut context);
            SCORES.with(|slot| *slot.borrow_mut() = scores);
        });
        context
    }
}

/// Head columns `start..start + d` of `t` rows of width `c`, as a `t x d` view.
fn head_view(data: &[f32], start: usize, t: usize, c: usize, d: usize) -> View<'_> {
    View {
        data: &data[start..start + (t - 1) * c + d],
        rows: t,
        cols: d,
        row: c,
        col: 1,
    }
}

fn data<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<(&'a [f32], usize, usize, usize)> {
    let data = contiguous_f32(storage, layout, "attention")?;
    let [b, t, c] = layout.dims() else {
        candle_core::bail!(
            "attention: inputs must be (B, T, C), got {:?}",
            layout.dims()
        )
    };
    Ok((data, *b, *t, *c))
}

impl candle_core::CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "bert-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (q, b, t, c) = data(s1, l1)?;
        let (k, ..) = data(s2, l2)?;
        let (v, ..) = data(s3, l3)?;
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() || c % self.heads != 0 {
            candle_core::bail!(
                "attention: q, k, v shapes differ or C is not a multiple of the heads"
            )
        }
        if self.mask.len() != b * t {
            candle_core::bail!(
                "attention: mask of {} values for {b} x {t}",
                self.mask.len()
            )
        }
        let d = c / self.heads;
        let heads: Vec<Vec<f32>> = (0..b * self.heads)
            .into_par_iter()
            .map(|i| {
                let p = Projections { q, k, v, t, c };
                self.head(&p, i / self.heads, i % self.heads)
            })
            .collect();
        let mut out = vec![0f32; b * t * c];
        for (i, context) in heads.iter().enumerate() {
            let (bi, h) = (i / self.heads, i % self.heads);
            for (ti, row) in context.chunks(d).enumerate() {
                let start = (bi * t + ti) * c + h * d;
                out[start..start + d].copy_from_slice(row);
            }
        }
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, t, c)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_softmax_ignores_padding_and_sums_to_one() {
        let mut row = [1.0, 2.0, 3.0];
        softmax_masked(&mut row, &[0.0, 0.0, -1e9]);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[2] < 1e-6);
        assert!((row[1] / row[0] - 1f32.exp()).abs() < 1e-4);
    }
}
