//! One attention head on AMX bf16 tiles, for models loaded with `--dtype bf16|int8`: the scores
//! `Q K^T` and the context `P V` are bf16 products with f32 sums (as PyTorch's bf16 autocast computes
//! them), the scale, mask and softmax in f32. At 512 tokens the two products are a sixth of BERT's
//! arithmetic; left in f32 they took more time than every Linear layer on the tiles together.
//!
//! Operands are packed per head ([`crate::kernels::tile_gemm`]) into thread-local buffers: `Q` and `P` as
//! bf16 rows, `K^T` and `V` into B tiles.

use std::cell::RefCell;

use crate::kernels::amx::{self, BLOCK};
use crate::kernels::buffer::Aligned;
use crate::kernels::gemm::View;
use crate::kernels::tile_gemm::{pack_b, product, rows_bf16, Operand, DEPTH};
use crate::kernels::vector_math::softmax_scaled_masked;

#[derive(Default)]
struct Scratch {
    queries: Aligned,
    keys: Aligned,
    scores: Vec<f32>,
    probabilities: Aligned,
    values: Aligned,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `softmax(scale Q K^T + mask) V` for one head: `q`, `k`, `v` are `t x d` views; the context goes
/// into `out`, row `i` at `out[i * out_stride..][..d]`. AMX must be available.
pub fn head(
    q: View,
    k: View,
    v: View,
    scale: f32,
    mask: &[f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let (t, d) = (q.rows, q.cols);
    SCRATCH.with(|scratch| {
        let s = &mut *scratch.borrow_mut();
        let (d_tiles, t_tiles) = (d.div_ceil(DEPTH), t.div_ceil(DEPTH));
        let blocks = |n: usize| 0..n.div_ceil(BLOCK);
        let stride = rows_bf16(q, d_tiles * DEPTH, &mut s.queries);
        pack_b(k.t(), d_tiles, &mut s.keys);
        let t_padded = t.div_ceil(BLOCK) * BLOCK;
        s.scores.resize(t * t_padded, 0.0);
        let queries = Operand {
            bytes: &s.queries,
            stride,
        };
        let scores = &mut s.scores;
        amx::with_tiles(|| {
            product(
                queries,
                s.keys.bytes(),
                d_tiles,
                (t, t),
                (blocks(t), blocks(t)),
                |i, j0, row| scores[i * t_padded + j0..][..row.len()].copy_from_slice(row),
            )
        });
        for row in s.scores.chunks_mut(t_padded) {
            softmax_scaled_masked(&mut row[..t], scale, mask);
        }
        let probabilities = View {
            data: &s.scores,
            rows: t,
            cols: t,
            row: t_padded,
            col: 1,
        };
        let stride = rows_bf16(probabilities, t_tiles * DEPTH, &mut s.probabilities);
        pack_b(v, t_tiles, &mut s.values);
        let probabilities = Operand {
            bytes: &s.probabilities,
            stride,
        };
        amx::with_tiles(|| {
            product(
                probabilities,
                s.values.bytes(),
                t_tiles,
                (t, d),
                (blocks(t), blocks(d)),
                |i, j0, row| out[i * out_stride + j0..][..row.len()].copy_from_slice(row),
            )
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::number_formats::bf16_bits;

    fn round(x: f32) -> f64 {
        f32::from_bits((bf16_bits(x) as u32) << 16) as f64
    }

    #[test]
    fn a_head_matches_the_bf16_reference() {
        if !amx::available() {
            eprintln!("no AMX: the tile attention is not used on this CPU");
            return;
        }
        for (t, d) in [(5, 64), (40, 64), (70, 32)] {
            let stride = 3 * d + 3; // heads sit inside wider rows
            let data: Vec<f32> = (0..t * stride)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let view = |offset: usize| View {
                data: &data[offset..],
                rows: t,
                cols: d,
                row: stride,
                col: 1,
            };
            let (q, k, v) = (view(0), view(d), view(2 * d));
            let mask: Vec<f32> = (0..t)
                .map(|j| if j == t - 1 { f32::MIN } else { 0.0 })
                .collect();
            let scale = 0.125;
            let mut out = vec![0f32; t * d];
            head(q, k, v, scale, &mask, &mut out, d);
            for i in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        let dot: f64 = (0..d).map(|p| round(q.at(i, p)) * round(k.at(j, p))).sum();
                        dot * scale as f64 + mask[j] as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..t)
                        .map(|j| round((e[j] / sum) as f32) * round(v.at(j, c)))
                        .sum();
                    let got = out[i * d + c] as f64;
                    // One bf16 rounding of a probability may differ (f32 vs f64 softmax): 2^-8 of it.
                    assert!(
                        (got - want).abs() < 2e-3,
                        "t {t} d {d} ({i}, {c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
