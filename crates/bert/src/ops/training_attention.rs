//! Self-attention for training in one op with its own backward pass, over the query, key and value
//! projections `(B, T, C)` as the three Linear layers compute them: for each sequence and head,
//! `P = softmax(scale Q K^T + mask)`, the dropout mask `M` (drawn for the whole `(B, H, T, T)` at
//! once, as the composite form's dropout draws it), and `(P * M) V` written straight into the
//! `(B, T, C)` layout the output projection reads. The heads are read and written through strided
//! views: no split into `(B, H, T, D)` copies, no merge back, no separate mask, softmax and dropout
//! ops, and only `P` and `M` are kept for the backward pass. Dimension letters as in
//! [`crate::model::attention`].
//!
//! Backward, per head, with `G` the output's gradient: `dV = (P * M)^T G`, `dP = (G V^T) * M`,
//! `dS = P * (dP - rowsum(dP * P))`, `dQ = scale dS K`, `dK = scale dS^T Q`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::gemm::{matmul, View};
use crate::kernels::tile_gemm::SharedOut;
use crate::kernels::vector_math::softmax_scaled_masked;
use crate::ops::{contiguous_f32, with_f32_values, CResult};

/// `softmax(scale Q K^T + mask)` with dropout, times `V`, per head.
pub struct TrainingAttention {
    pub heads: usize,
    /// `1 / sqrt(head size)`.
    pub scale: f32,
    /// The additive mask, `(B, T)`: 0 for real tokens, a large negative number for padding.
    pub mask: Vec<f32>,
    /// The dropout mask over `(B, H, T, T)`: 0 where dropped, `1 / (1 - p)` where kept; none without
    /// dropout.
    pub dropout: Option<Vec<f32>>,
    /// `P` as the forward pass left it, for the backward pass.
    probs: Mutex<Vec<f32>>,
}

impl TrainingAttention {
    pub fn new(heads: usize, scale: f32, mask: Vec<f32>, dropout: Option<Vec<f32>>) -> Self {
        TrainingAttention {
            heads,
            scale,
            mask,
            dropout,
            probs: Mutex::new(Vec::new()),
        }
    }

    /// Head `h` of sequence `b` of a `(B, T, C)` tensor's values, `T x D`.
    fn head<'a>(&self, data: &'a [f32], t: usize, c: usize, b: usize, h: usize) -> View<'a> {
        let d = c / self.heads;
        View {
            data: &data[b * t * c + h * d..][..(t - 1) * c + d],
            rows: t,
            cols: d,
            row: c,
            col: 1,
        }
    }

    /// `P * M` of head `i` (of `B x H`) into `out`, or `P` itself without dropout; `probs` is head
    /// `i`'s `T x T` probabilities.
    fn dropped<'a>(
        &self,
        probs: &'a [f32],
        i: usize,
        t: usize,
        out: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let Some(mask) = &self.dropout else {
            return probs;
        };
        let m = &mask[i * t * t..][..t * t];
        out.clear();
        out.extend(probs.iter().zip(m).map(|(p, m)| p * m));
        out
    }
}

/// Writes a head's `T x D` rows into columns `h * D..` of a `(B, T, C)` output.
///
/// # Safety
/// No other head of the same sequence writes the same columns at once.
unsafe fn write_head(
    out: &SharedOut,
    rows: &[f32],
    b: usize,
    h: usize,
    t: usize,
    c: usize,
    d: usize,
) {
    for (ti, row) in rows.chunks(d).enumerate() {
        // SAFETY: head h of sequence b alone writes these columns of these rows.
        unsafe { out.write((b * t + ti) * c + h * d, row) };
    }
}

impl CustomOp3 for TrainingAttention {
    fn name(&self) -> &'static str {
        "bert-training-attention"
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
        let q = contiguous_f32(s1, l1, self.name())?;
        let k = contiguous_f32(s2, l2, self.name())?;
        let v = contiguous_f32(s3, l3, self.name())?;
        let &[b, t, c] = l1.dims() else {
            candle_core::bail!("training attention: expects (B, T, C), got {:?}", l1.dims())
        };
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() || c % self.heads != 0 {
            candle_core::bail!(
                "training attention: Q, K, V shapes {:?}, {:?}, {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let (heads, d) = (self.heads, c / self.heads);
        if t == 0 || d == 0 {
            candle_core::bail!(
                "training attention: no tokens or no head size in {:?}",
                l1.dims()
            )
        }
        if self.mask.len() != b * t
            || self
                .dropout
                .as_ref()
                .is_some_and(|m| m.len() != b * heads * t * t)
        {
            candle_core::bail!("training attention: masks do not fit {b} x {heads} x {t}")
        }
        let mut probs = vec![0f32; b * heads * t * t];
        let mut out = output_buffer(b * t * c);
        let shared = SharedOut(out.as_mut_ptr());
        probs.par_chunks_mut(t * t).enumerate().for_each(|(i, p)| {
            let (bi, h) = (i / heads, i % heads);
            matmul(self.head(q, t, c, bi, h), self.head(k, t, c, bi, h).t(), p);
            let mask = &self.mask[bi * t..(bi + 1) * t];
            p.chunks_mut(t)
                .for_each(|row| softmax_scaled_masked(row, self.scale, mask));
            let mut buffer = Vec::new();
            let weights = self.dropped(p, i, t, &mut buffer);
            let mut context = output_buffer(t * d);
            matmul(
                View::row_major(weights, t, t),
                self.head(v, t, c, bi, h),
                &mut context,
            );
            // SAFETY: each (sequence, head) pair runs once.
            unsafe { write_head(&shared, &context, bi, h, t, c, d) };
        });
        *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = probs;
        Ok((CpuStorage::F32(out), Shape::from((b, t, c))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, c) = q.dims3()?;
        let (heads, d) = (self.heads, c / self.heads);
        let probs = self.probs.lock().unwrap_or_else(|e| e.into_inner());
        let mut grads = [b * t * c; 3].map(output_buffer);
        let [dq, dk, dv] = grads.each_mut().map(|g| SharedOut(g.as_mut_ptr()));
        with_f32_values(&[q, k, v, grad], |values| {
            let [q, k, v, g] = [values[0], values[1], values[2], values[3]];
            (0..b * heads).into_par_iter().for_each(|i| {
                let (bi, h) = (i / heads, i % heads);
                let (qh, kh, vh, gh) = (
                    self.head(q, t, c, bi, h),
                    self.head(k, t, c, bi, h),
                    self.head(v, t, c, bi, h),
                    self.head(g, t, c, bi, h),
                );
                let p = &probs[i * t * t..][..t * t];
                let mut buffer = Vec::new();
                let weights = self.dropped(p, i, t, &mut buffer);
                let mut rows = output_buffer(t * d);
                matmul(View::row_major(weights, t, t).t(), gh, &mut rows);
                // SAFETY: each (sequence, head) pair runs once.
                unsafe { write_head(&dv, &rows, bi, h, t, c, d) };
                let mut ds = output_buffer(t * t);
                matmul(gh, vh.t(), &mut ds);
                if let Some(mask) = &self.dropout {
                    let m = &mask[i * t * t..][..t * t];
                    ds.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                }
                for (row, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let s: f32 = row.iter().zip(p).map(|(x, p)| x * p).sum();
                    row.iter_mut()
                        .zip(p)
                        .for_each(|(x, p)| *x = p * (*x - s) * self.scale);
                }
                matmul(View::row_major(&ds, t, t), kh, &mut rows);
                // SAFETY: as above.
                unsafe { write_head(&dq, &rows, bi, h, t, c, d) };
                matmul(View::row_major(&ds, t, t).t(), qh, &mut rows);
                // SAFETY: as above.
                unsafe { write_head(&dk, &rows, bi, h, t, c, d) };
            });
            Ok(())
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let device = q.device();
        let [dq, dk, dv] = grads.map(|g| Tensor::from_vec(g, (b, t, c), device));
        Ok((Some(dq?), Some(dk?), Some(dv?)))
    }
}
