//! Self-attention for inference in one op over the stacked projections `(B, T, 3C)` (queries, keys
//! and values side by side, as one Linear layer computes them): for each sequence and head, the scores
//! `Q K^T` go into a per-thread buffer, are scaled, masked and normalised in place, and the buffer
//! times `V` lands directly in the `(B, T, C)` layout the next projection reads. Nothing of size
//! `T x T` is allocated per call and the heads are never split into copies. The products use our
//! AVX-512 gemm in f32, or the AMX tiles in bf16 ([`crate::kernels::tile_attention`]) for models loaded
//! in bf16 or int8. Training keeps the differentiable composite form.

use rayon::prelude::*;

use crate::kernels::buffer::output_buffer;
use crate::kernels::gemm::{matmul, View};
use crate::kernels::tile_attention;
use crate::kernels::tile_gemm::SharedOut;
use crate::kernels::vector_math::softmax_scaled_masked;
use crate::ops::contiguous_f32;

/// `softmax(scale Q K^T + mask) V` per head over stacked `(B, T, 3C)` projections.
#[derive(Debug, Clone)]
pub struct FusedAttention {
    pub heads: usize,
    /// `1 / sqrt(head size)`.
    pub scale: f32,
    /// The additive mask, `(B, T)`: 0 for real tokens, a large negative number for padding.
    pub mask: Vec<f32>,
    /// Whether the products run on AMX tiles in bf16 (else f32).
    pub tiles: bool,
}

thread_local! {
    /// The `T x T` scores of the head a thread is working on, kept across calls.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl FusedAttention {
    /// The context of head `h` of sequence `b` into `out` (`T x D`, row-major).
    fn head(&self, qkv: &[f32], t: usize, c: usize, b: usize, h: usize, out: &mut [f32]) {
        let d = c / self.heads;
        let stride = 3 * c;
        let part = |which: usize| View {
            data: &qkv[b * t * stride + which * c + h * d..][..(t - 1) * stride + d],
            rows: t,
            cols: d,
            row: stride,
            col: 1,
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let mask = &self.mask[b * t..(b + 1) * t];
        if self.tiles {
            return tile_attention::head(q, k, v, self.scale, mask, out, d);
        }
        SCORES.with(|scores| {
            let mut scores = std::mem::take(&mut *scores.borrow_mut());
            scores.resize(t * t, 0.0);
            matmul(q, k.t(), &mut scores);
            for row in scores.chunks_mut(t) {
                softmax_scaled_masked(row, self.scale, mask);
            }
            matmul(View::row_major(&scores, t, t), v, out);
            SCORES.with(|slot| *slot.borrow_mut() = scores);
        });
    }
}

impl candle_core::CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "bert-attention"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let qkv = contiguous_f32(storage, layout, "attention")?;
        let &[b, t, c3] = layout.dims() else {
            candle_core::bail!("attention: expects (B, T, 3C), got {:?}", layout.dims())
        };
        let c = c3 / 3;
        if c3 % 3 != 0 || c % self.heads != 0 {
            candle_core::bail!(
                "attention: {c3} is not 3 x C with C a multiple of {} heads",
                self.heads
            )
        }
        if self.mask.len() != b * t {
            candle_core::bail!(
                "attention: mask of {} values for {b} x {t}",
                self.mask.len()
            )
        }
        let d = c / self.heads;
        let mut out = output_buffer(b * t * c);
        let shared = SharedOut(out.as_mut_ptr());
        (0..b * self.heads).into_par_iter().for_each(|i| {
            let (bi, h) = (i / self.heads, i % self.heads);
            let mut context = output_buffer(t * d);
            self.head(qkv, t, c, bi, h, &mut context);
            for (ti, row) in context.chunks(d).enumerate() {
                // SAFETY: head h of sequence bi alone writes these columns of these rows, and
                // together the heads write every element.
                unsafe { shared.write((bi * t + ti) * c + h * d, row) };
            }
        });
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, t, c)),
        ))
    }
}
