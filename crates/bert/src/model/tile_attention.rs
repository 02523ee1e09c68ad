//! One attention head on AMX bf16 tiles, for models loaded with `--dtype bf16|int8`: the scores
//! `Q K^T` and the context `P V` are bf16 products with f32 sums (as PyTorch's bf16 autocast computes
//! them), the scale, mask and softmax in f32. At 512 tokens the two products are a sixth of BERT's
//! arithmetic; left in f32 they took more time than every Linear layer on the tiles together.
//!
//! Operands are packed per head into thread-local buffers: `Q` and `P` as bf16 rows (the tiles' A
//! side); `K` and `V` into B tiles, whose rows hold, for each of 16 columns, two consecutive `k`
//! values (for `K^T`: two adjacent values of a key's row; for `V`: one column's values at two adjacent
//! positions).

use std::cell::RefCell;

use crate::model::amx::{self, TileOp, BLOCK, TILE_BYTES, TILE_BYTES_PER_ROW, TILE_ROWS};
use crate::model::gemm::View;
use crate::model::number_formats::{bf16_bits, write_bf16};
use crate::model::quantized::Aligned;
use crate::model::vector_math::softmax_scaled_masked;

/// bf16 values per tile row (the depth of one tile).
const DEPTH: usize = TILE_BYTES_PER_ROW / 2;

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
        let d_tiles = d.div_ceil(DEPTH);
        let t_tiles = t.div_ceil(DEPTH);
        let q_stride = rows_bf16(q, d_tiles * DEPTH, &mut s.queries);
        pack_rows(k, d_tiles, &mut s.keys);
        let t_padded = t.div_ceil(BLOCK) * BLOCK;
        s.scores.resize(t * t_padded, 0.0);
        amx::with_tiles(|| {
            product(
                &s.queries,
                q_stride,
                &s.keys,
                d_tiles,
                t,
                t,
                |i, j0, row| s.scores[i * t_padded + j0..][..row.len()].copy_from_slice(row),
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
        let p_stride = rows_bf16(probabilities, t_tiles * DEPTH, &mut s.probabilities);
        pack_columns(v, t_tiles, &mut s.values);
        amx::with_tiles(|| {
            product(
                &s.probabilities,
                p_stride,
                &s.values,
                t_tiles,
                t,
                d,
                |i, j0, row| out[i * out_stride + j0..][..row.len()].copy_from_slice(row),
            )
        });
    })
}

/// The rows of `m` as bf16, each padded with zeros to `width` values, rows to whole blocks; returns
/// the bytes between rows.
fn rows_bf16(m: View, width: usize, buffer: &mut Aligned) -> usize {
    let stride = width * 2;
    let rows = m.rows.div_ceil(BLOCK) * BLOCK;
    buffer.reserve(rows * stride);
    let bytes = &mut buffer.bytes_mut()[..rows * stride];
    bytes.fill(0);
    for (i, out) in bytes.chunks_exact_mut(stride).take(m.rows).enumerate() {
        let row = &m.data[i * m.row..][..m.cols];
        write_bf16(row, &mut out[..m.cols * 2]);
    }
    stride
}

/// B tiles for the product with `m^T` (`m` is `n x k`): column `j` is row `j` of `m`, whose adjacent
/// values pair up as they are.
fn pack_rows(m: View, k_tiles: usize, buffer: &mut Aligned) {
    let blocks = m.rows.div_ceil(BLOCK) * 2;
    let block_bytes = k_tiles * TILE_BYTES;
    buffer.reserve(blocks * block_bytes);
    let bytes = &mut buffer.bytes_mut()[..blocks * block_bytes];
    bytes.fill(0);
    let mut row_bytes = vec![0u8; k_tiles * DEPTH * 2];
    for j in 0..m.rows {
        write_bf16(&m.data[j * m.row..][..m.cols], &mut row_bytes[..m.cols * 2]);
        let column = &mut bytes[(j / TILE_ROWS) * block_bytes..][..block_bytes];
        for (g, pair) in row_bytes.chunks_exact(4).enumerate() {
            let at = (g / TILE_ROWS) * TILE_BYTES + (g % TILE_ROWS) * TILE_BYTES_PER_ROW;
            column[at + (j % TILE_ROWS) * 4..][..4].copy_from_slice(pair);
        }
    }
}

/// B tiles for the product with `m` (`m` is `k x n`): column `j` of `m`, its values at positions
/// `2r` and `2r + 1` paired.
fn pack_columns(m: View, k_tiles: usize, buffer: &mut Aligned) {
    let blocks = m.cols.div_ceil(BLOCK) * 2;
    let block_bytes = k_tiles * TILE_BYTES;
    buffer.reserve(blocks * block_bytes);
    let bytes = &mut buffer.bytes_mut()[..blocks * block_bytes];
    bytes.fill(0);
    for pair in 0..m.rows.div_ceil(2) {
        let upper = &m.data[2 * pair * m.row..][..m.cols];
        let lower = (2 * pair + 1 < m.rows).then(|| &m.data[(2 * pair + 1) * m.row..][..m.cols]);
        let tile = (pair / TILE_ROWS) * TILE_BYTES + (pair % TILE_ROWS) * TILE_BYTES_PER_ROW;
        for j in 0..m.cols {
            let low_half = bf16_bits(upper[j]) as u32;
            let high_half = lower.map_or(0, |l| bf16_bits(l[j]) as u32);
            let at = (j / TILE_ROWS) * block_bytes + tile + (j % TILE_ROWS) * 4;
            bytes[at..at + 4].copy_from_slice(&(low_half | high_half << 16).to_le_bytes());
        }
    }
}

/// `A B` for A's bf16 rows (`rows` of them, `a_stride` bytes apart) and B's packed tiles (`n`
/// columns), handing each output row piece to `emit(row, first column, values)`. Tiles must be
/// configured.
fn product(
    a: &Aligned,
    a_stride: usize,
    b: &Aligned,
    k_tiles: usize,
    rows: usize,
    n: usize,
    mut emit: impl FnMut(usize, usize, &[f32]),
) {
    let mut block = [0u32; BLOCK * BLOCK];
    let column_tiles = k_tiles * TILE_BYTES;
    for jb in 0..n.div_ceil(BLOCK) {
        let b0 = &b.bytes()[2 * jb * column_tiles..];
        let b1 = &b.bytes()[(2 * jb + 1) * column_tiles..];
        let width = BLOCK.min(n - jb * BLOCK);
        for ib in 0..rows.div_ceil(BLOCK) {
            let a_block = &a.bytes()[ib * BLOCK * a_stride..];
            #[cfg(target_arch = "x86_64")]
            // Safety: the buffers hold whole blocks (rows and columns padded), tiles are configured.
            unsafe {
                amx::block(
                    TileOp::Bf16,
                    a_block.as_ptr(),
                    a_stride,
                    b0.as_ptr(),
                    b1.as_ptr(),
                    k_tiles,
                    &mut block,
                )
            };
            for i in 0..BLOCK.min(rows - ib * BLOCK) {
                let sums = &block[i * BLOCK..i * BLOCK + width];
                let values: &[f32] = bytemuck_f32(sums);
                emit(ib * BLOCK + i, jb * BLOCK, values);
            }
        }
    }
}

/// The f32 values whose bits the tiles stored.
fn bytemuck_f32(bits: &[u32]) -> &[f32] {
    // Safety: u32 and f32 have the same size and alignment, and every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const f32, bits.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::number_formats::bf16_bits;

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
