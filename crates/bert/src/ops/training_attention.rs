//! Self-attention for training in one op with its own backward pass, over the query, key and value
//! projections side by side, `(B, T, 3C)`, as one product of the three Linear layers' weights
//! computes them: for each sequence and head,
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

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::gemm::{matmul, View};
use crate::kernels::tile_gemm::SharedOut;
use crate::kernels::vector_math::softmax_scaled_masked;
use crate::ops::dropout_mask::DropoutMask;
use crate::ops::{contiguous_f32, with_f32_values, CResult};

/// `softmax(scale Q K^T + mask)` with dropout, times `V`, per head.
pub struct TrainingAttention {
    pub heads: usize,
    /// `1 / sqrt(head size)`.
    pub scale: f32,
    /// The additive mask, `(B, T)`: 0 for real tokens, a large negative number for padding.
    pub mask: Vec<f32>,
    /// The dropout mask over `(B, H, T, T)`; none without dropout.
    dropout: Option<DropoutMask>,
    /// `P` as the forward pass left it, for the backward pass.
    probs: Mutex<Vec<f32>>,
}

impl TrainingAttention {
    /// `dropout` as [`crate::nn::Dropout::mask`] draws it: 0 where dropped, `1 / (1 - p)` where kept.
    pub fn new(heads: usize, scale: f32, mask: Vec<f32>, dropout: Option<Vec<f32>>) -> Self {
        TrainingAttention {
            heads,
            scale,
            mask,
            dropout: dropout.map(|m| DropoutMask::new(&m)),
            probs: Mutex::new(Vec::new()),
        }
    }

    /// Head `h` of sequence `b` of part `part` (0 queries, 1 keys, 2 values) of the stacked
    /// `(B, T, 3C)` values, `T x D`.
    fn head<'a>(
        &self,
        qkv: &'a [f32],
        t: usize,
        c: usize,
        part: usize,
        b: usize,
        h: usize,
    ) -> View<'a> {
        let d = c / self.heads;
        View {
            data: &qkv[b * t * 3 * c + part * c + h * d..][..(t - 1) * 3 * c + d],
            rows: t,
            cols: d,
            row: 3 * c,
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
        out.resize(t * t, 0.0);
        mask.apply(probs, i * t * t, out);
        out
    }
}

/// Writes a head's `T x D` rows into columns `column..` of rows `b * T..` of an output whose rows
/// are `width` long.
///
/// # Safety
/// No other piece writes the same elements at once.
unsafe fn write_head(
    out: &SharedOut,
    rows: &[f32],
    b: usize,
    t: usize,
    width: usize,
    column: usize,
) {
    for (ti, row) in rows.chunks(rows.len() / t.max(1)).enumerate() {
        // SAFETY: the caller's promise.
        unsafe { out.write((b * t + ti) * width + column, row) };
    }
}

impl CustomOp1 for TrainingAttention {
    fn name(&self) -> &'static str {
        "bert-training-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, self.name())?;
        let &[b, t, c3] = layout.dims() else {
            candle_core::bail!(
                "training attention: expects (B, T, 3C), got {:?}",
                layout.dims()
            )
        };
        let c = c3 / 3;
        if c3 % 3 != 0 || c % self.heads != 0 || t == 0 || c == 0 {
            candle_core::bail!(
                "training attention: {:?} is not (B, T, 3C) with C a multiple of {} heads",
                layout.dims(),
                self.heads
            )
        }
        let (heads, d) = (self.heads, c / self.heads);
        let masks_fit = self.mask.len() == b * t
            && (self.dropout.as_ref()).is_none_or(|m| m.len() == b * heads * t * t);
        if !masks_fit {
            candle_core::bail!("training attention: masks do not fit {b} x {heads} x {t}")
        }
        let mut probs = vec![0f32; b * heads * t * t];
        let mut out = output_buffer(b * t * c);
        let shared = SharedOut(out.as_mut_ptr());
        probs.par_chunks_mut(t * t).enumerate().for_each(|(i, p)| {
            let (bi, h) = (i / heads, i % heads);
            let part = |which| self.head(qkv, t, c, which, bi, h);
            matmul(part(0), part(1).t(), p);
            let mask = &self.mask[bi * t..(bi + 1) * t];
            p.chunks_mut(t)
                .for_each(|row| softmax_scaled_masked(row, self.scale, mask));
            let mut buffer = Vec::new();
            let weights = self.dropped(p, i, t, &mut buffer);
            let mut context = output_buffer(t * d);
            matmul(View::row_major(weights, t, t), part(2), &mut context);
            // SAFETY: each (sequence, head) pair runs once and writes its own columns.
            unsafe { write_head(&shared, &context, bi, t, c, h * d) };
        });
        *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = probs;
        Ok((CpuStorage::F32(out), Shape::from((b, t, c))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (b, t, c3) = qkv.dims3()?;
        let c = c3 / 3;
        let (heads, d) = (self.heads, c / self.heads);
        let probs = self.probs.lock().unwrap_or_else(|e| e.into_inner());
        let mut dqkv = output_buffer(b * t * c3);
        let shared = SharedOut(dqkv.as_mut_ptr());
        with_f32_values(&[qkv, grad], |values| {
            let (qkv, g) = (values[0], values[1]);
            (0..b * heads).into_par_iter().for_each(|i| {
                let (bi, h) = (i / heads, i % heads);
                let part = |which| self.head(qkv, t, c, which, bi, h);
                let gh = View {
                    data: &g[bi * t * c + h * d..][..(t - 1) * c + d],
                    rows: t,
                    cols: d,
                    row: c,
                    col: 1,
                };
                let p = &probs[i * t * t..][..t * t];
                let mut buffer = Vec::new();
                let weights = self.dropped(p, i, t, &mut buffer);
                let mut rows = output_buffer(t * d);
                // Each (sequence, head) pair runs once and writes its own columns of dQ, dK, dV.
                let write = |rows: &[f32], which: usize| {
                    // SAFETY: as said above.
                    unsafe { write_head(&shared, rows, bi, t, c3, which * c + h * d) }
                };
                matmul(View::row_major(weights, t, t).t(), gh, &mut rows);
                write(&rows, 2);
                let mut ds = output_buffer(t * t);
                matmul(gh, part(2).t(), &mut ds);
                if let Some(mask) = &self.dropout {
                    mask.apply_in_place(&mut ds, i * t * t);
                }
                for (row, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let s: f32 = row.iter().zip(p).map(|(x, p)| x * p).sum();
                    row.iter_mut()
                        .zip(p)
                        .for_each(|(x, p)| *x = p * (*x - s) * self.scale);
                }
                matmul(View::row_major(&ds, t, t), part(1), &mut rows);
                write(&rows, 0);
                matmul(View::row_major(&ds, t, t).t(), part(0), &mut rows);
                write(&rows, 1);
            });
            Ok(())
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(Tensor::from_vec(dqkv, (b, t, c3), qkv.device())?))
    }
}
