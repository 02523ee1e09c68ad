//! bf16 matrix products on AMX tiles for operands that change on every call: attention's `Q K^T` and
//! `P V`, and the Linear layers of mixed-precision training (`--bf16`), forward and backward. Operands
//! are f32 strided views in any orientation; each is rounded to bf16 into the layout the tiles load,
//! products are summed in f32.
//!
//! The A side (`m x k`) becomes bf16 rows, `k` contiguous: a copy when the view's rows are contiguous,
//! a gather when it is a transpose. The B side (`k x n`) becomes 1 KiB tiles whose row `r` holds, for 16
//! columns, the pair of values at depths `2r` and `2r + 1`: from a view whose columns are contiguous
//! (a transposed weight) the pair is adjacent already; from one whose rows are contiguous, two rows are
//! interleaved, 16 columns per instruction. Without AMX, [`matmul_bf16`] rounds the operands and runs the
//! f32 gemm: the same numbers up to summation order.

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::amx::{self, TileOp, BLOCK, TILE_BYTES, TILE_BYTES_PER_ROW, TILE_ROWS};
use crate::kernels::buffer::Aligned;
use crate::kernels::gemm::{matmul, View};
use crate::kernels::number_formats::{bf16_bits, write_bf16};

/// bf16 values per tile row (the depth of one tile).
pub const DEPTH: usize = TILE_BYTES_PER_ROW / 2;

/// `a b` with both operands rounded to bf16 and f32 sums; `m x n`, row-major.
pub fn matmul_bf16(a: View, b: View) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return Vec::new();
    }
    if !amx::available() {
        return emulated(a, b);
    }
    let k_tiles = a.cols.div_ceil(DEPTH).max(1);
    let (mut a_rows, mut b_tiles) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let a_stride = rows_bf16(a, k_tiles * DEPTH, &mut a_rows);
    pack_b(b, k_tiles, &mut b_tiles);
    // Every element is written once by the pieces below, so the output starts uninitialised.
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let out = SharedOut(c.as_mut_ptr());
    let row_blocks = m.div_ceil(BLOCK);
    let rows_per_piece = row_blocks.div_ceil((4 * rayon::current_num_threads()).min(row_blocks));
    let pieces = pieces(row_blocks, n.div_ceil(BLOCK), rows_per_piece);
    pieces.into_par_iter().for_each(|(rows, cols)| {
        amx::with_tiles(|| {
            let a = Operand {
                bytes: &a_rows,
                stride: a_stride,
            };
            product(
                a,
                b_tiles.bytes(),
                k_tiles,
                (m, n),
                (rows, cols),
                |i, j0, values| {
                    // SAFETY: the pieces cover disjoint blocks of `c`.
                    unsafe { out.write(i * n + j0, values) }
                },
            )
        })
    });
    // SAFETY: the pieces covered every block of `c`.
    unsafe { c.set_len(m * n) };
    SCRATCH.with(|s| *s.borrow_mut() = (a_rows, b_tiles));
    c
}

thread_local! {
    /// The converted operands of the last call on this thread, kept for the next one (fresh buffers
    /// cost page faults that were a third of a mixed-precision training step).
    static SCRATCH: std::cell::RefCell<(Aligned, Aligned)> = std::cell::RefCell::new(Default::default());
}

/// The emulated product: bf16-rounded copies through the f32 gemm.
fn emulated(a: View, b: View) -> Vec<f32> {
    let round = |v: View| -> Vec<f32> {
        let mut values = Vec::with_capacity(v.rows * v.cols);
        for i in 0..v.rows {
            for j in 0..v.cols {
                values.push(f32::from_bits((bf16_bits(v.at(i, j)) as u32) << 16));
            }
        }
        values
    };
    let (ra, rb) = (round(a), round(b));
    let mut c = vec![0f32; a.rows * b.cols];
    matmul(
        View::row_major(&ra, a.rows, a.cols),
        View::row_major(&rb, b.rows, b.cols),
        &mut c,
    );
    c
}

/// An output matrix written by several pieces at once, each its own blocks.
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the pointer is only written through `write` and `slice`, whose callers promise that no two
// threads touch the same elements.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `at..at + values.len()` must be inside the output and written by no other piece.
    pub(crate) unsafe fn write(&self, at: usize, values: &[f32]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.0.add(at), values.len());
        }
    }

    /// The output's `len` values from `at`, to write in place.
    ///
    /// # Safety
    /// As for [`SharedOut::write`], and the slice must not outlive the output.
    #[allow(clippy::mut_from_ref)] // each piece takes a disjoint part
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// The pieces a product over `row_blocks x col_blocks` output blocks is cut into for the threads:
/// row groups of `rows_per_piece` blocks, each cut into column groups so that there are about four
/// pieces per thread.
pub(crate) fn pieces(
    row_blocks: usize,
    col_blocks: usize,
    rows_per_piece: usize,
) -> Vec<(Range<usize>, Range<usize>)> {
    let rows_per_piece = rows_per_piece.clamp(1, row_blocks.max(1));
    let row_groups = row_blocks.div_ceil(rows_per_piece);
    let wanted = 4 * rayon::current_num_threads();
    let cols_per_piece =
        col_blocks.div_ceil(wanted.div_ceil(row_groups).clamp(1, col_blocks.max(1)));
    let range = |g: usize, per: usize, total: usize| g * per..((g + 1) * per).min(total);
    (0..row_groups)
        .flat_map(|r| {
            (0..col_blocks.div_ceil(cols_per_piece)).map(move |g| {
                (
                    range(r, rows_per_piece, row_blocks),
                    range(g, cols_per_piece, col_blocks),
                )
            })
        })
        .collect()
}

/// bf16 rows for the A side and the bytes between them.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub(crate) bytes: &'a Aligned,
    pub(crate) stride: usize,
}

/// The rows of `m` as bf16, each padded with zeros to `width` values, rows to whole blocks; returns
/// the bytes between rows.
pub(crate) fn rows_bf16(m: View, width: usize, buffer: &mut Aligned) -> usize {
    let stride = width * 2;
    let rows = m.rows.div_ceil(BLOCK) * BLOCK;
    buffer.reserve(rows * stride);
    let bytes = &mut buffer.bytes_mut()[..rows * stride];
    if rows != m.rows || width != m.cols {
        bytes.fill(0); // padding rows or columns: the rest is overwritten
    }
    if m.col == 1 {
        for (i, out) in bytes.chunks_exact_mut(stride).take(m.rows).enumerate() {
            write_bf16(&m.data[i * m.row..][..m.cols], &mut out[..m.cols * 2]);
        }
    } else {
        gather_rows(m, stride, bytes);
    }
    stride
}

/// The rows of a view whose rows are not contiguous (a transpose) as bf16, 16 rows by 32 columns at a
/// time: the 32 source lines each such block reads stay in L1 while its 16 rows are gathered.
fn gather_rows(m: View, stride: usize, bytes: &mut [u8]) {
    const ROWS: usize = 16;
    const COLS: usize = 32;
    for i0 in (0..m.rows).step_by(ROWS) {
        for p0 in (0..m.cols).step_by(COLS) {
            let width = COLS.min(m.cols - p0);
            for i in i0..(i0 + ROWS).min(m.rows) {
                let out = &mut bytes[i * stride + 2 * p0..][..2 * width];
                gather_bf16(m, i, p0, out);
            }
        }
    }
}

/// `out.len() / 2` values of row `i` from column `p0` of a transposed view, as bf16.
fn gather_bf16(m: View, i: usize, p0: usize, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512bf16() && m.col * 16 < i32::MAX as usize / 4 {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::gather_bf16(m, i, p0, out) };
    }
    for (p, o) in out.chunks_exact_mut(2).enumerate() {
        o.copy_from_slice(&bf16_bits(m.at(i, p0 + p)).to_le_bytes());
    }
}

/// Packs B (`k x n`) into tiles: for each 16-column block, `k_tiles` tiles in order.
pub(crate) fn pack_b(b: View, k_tiles: usize, buffer: &mut Aligned) {
    let blocks = b.cols.div_ceil(BLOCK) * 2;
    let block_bytes = k_tiles * TILE_BYTES;
    buffer.reserve(blocks * block_bytes);
    let bytes = &mut buffer.bytes_mut()[..blocks * block_bytes];
    if !b.cols.is_multiple_of(BLOCK) || b.rows != k_tiles * DEPTH {
        bytes.fill(0); // padding columns or depth: the rest is overwritten
    }
    if b.row == 1 {
        pack_contiguous_columns(b, block_bytes, bytes);
    } else if b.col == 1 {
        pack_contiguous_rows(b, block_bytes, bytes);
    } else {
        for j in 0..b.cols {
            for p in 0..b.rows {
                let at = tile_slot(j, p / 2, block_bytes) + 2 * (p % 2);
                bytes[at..at + 2].copy_from_slice(&bf16_bits(b.at(p, j)).to_le_bytes());
            }
        }
    }
}

/// Where column `j`'s pair `pair` (depths `2 pair`, `2 pair + 1`) goes.
fn tile_slot(j: usize, pair: usize, block_bytes: usize) -> usize {
    (j / TILE_ROWS) * block_bytes
        + (pair / TILE_ROWS) * TILE_BYTES
        + (pair % TILE_ROWS) * TILE_BYTES_PER_ROW
        + (j % TILE_ROWS) * 4
}

/// B's columns are contiguous (`b.row == 1`): each column's adjacent values pair up as they are.
fn pack_contiguous_columns(b: View, block_bytes: usize, bytes: &mut [u8]) {
    let mut column = vec![0u8; b.rows.div_ceil(2) * 4];
    for j in 0..b.cols {
        write_bf16(&b.data[j * b.col..][..b.rows], &mut column[..b.rows * 2]);
        for (pair, values) in column.chunks_exact(4).enumerate() {
            let at = tile_slot(j, pair, block_bytes);
            bytes[at..at + 4].copy_from_slice(values);
        }
    }
}

/// B's rows are contiguous (`b.col == 1`): rows `2r` and `2r + 1` interleave into tile row `r`.
fn pack_contiguous_rows(b: View, block_bytes: usize, bytes: &mut [u8]) {
    for pair in 0..b.rows.div_ceil(2) {
        let upper = &b.data[2 * pair * b.row..][..b.cols];
        let lower = (2 * pair + 1 < b.rows).then(|| &b.data[(2 * pair + 1) * b.row..][..b.cols]);
        for j0 in (0..b.cols).step_by(TILE_ROWS) {
            let at = tile_slot(j0, pair, block_bytes);
            interleave_bf16(upper, lower, j0, &mut bytes[at..at + TILE_BYTES_PER_ROW]);
        }
    }
}

/// Columns `j0..j0 + 16` of two rows as 16 bf16 pairs (`upper[j]`, `lower[j]`); zeros past the ends.
fn interleave_bf16(upper: &[f32], lower: Option<&[f32]>, j0: usize, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512bf16() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::interleave_bf16(upper, lower, j0, out) };
    }
    for (c, o) in out.chunks_exact_mut(4).enumerate() {
        let j = j0 + c;
        if j >= upper.len() {
            break;
        }
        let low = bf16_bits(upper[j]) as u32;
        let high = lower.map_or(0, |l| bf16_bits(l[j]) as u32);
        o.copy_from_slice(&(low | high << 16).to_le_bytes());
    }
}

/// One output block's raw sums, row after row: f32 bits (bf16 products) or i32 (int8).
pub(crate) type Block = [u32; BLOCK * BLOCK];

/// Runs the tile kernel `op` over output blocks `row_blocks x col_blocks` (column blocks outer, so that
/// a column block's tiles stay in cache across the rows), handing each block to `f(ib, jb, block)`.
/// Tiles must be configured.
pub(crate) fn for_each_block(
    op: TileOp,
    a: Operand,
    b: &[u8],
    k_tiles: usize,
    (row_blocks, col_blocks): (Range<usize>, Range<usize>),
    mut f: impl FnMut(usize, usize, &Block),
) {
    let mut block = [0u32; BLOCK * BLOCK];
    let column_tiles = k_tiles * TILE_BYTES;
    for jb in col_blocks {
        let b0 = &b[2 * jb * column_tiles..];
        let b1 = &b[(2 * jb + 1) * column_tiles..];
        for ib in row_blocks.clone() {
            let a_block = &a.bytes.bytes()[ib * BLOCK * a.stride..];
            debug_assert!(a_block.len() >= BLOCK * a.stride && b1.len() >= column_tiles);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the buffers hold whole blocks (rows and columns padded), tiles are configured.
            unsafe {
                amx::block(
                    op,
                    a_block.as_ptr(),
                    a.stride,
                    b0.as_ptr(),
                    b1.as_ptr(),
                    k_tiles,
                    &mut block,
                )
            };
            f(ib, jb, &block);
        }
    }
}

/// The bf16 product `A B` (`m x n`) over the given blocks, handing each output row piece to
/// `emit(row, first column, values)`. Tiles must be configured.
pub(crate) fn product(
    a: Operand,
    b: &[u8],
    k_tiles: usize,
    (m, n): (usize, usize),
    blocks: (Range<usize>, Range<usize>),
    mut emit: impl FnMut(usize, usize, &[f32]),
) {
    for_each_block(TileOp::Bf16, a, b, k_tiles, blocks, |ib, jb, block| {
        let width = BLOCK.min(n - jb * BLOCK);
        for i in 0..BLOCK.min(m - ib * BLOCK) {
            let sums = &block[i * BLOCK..i * BLOCK + width];
            // SAFETY: u32 and f32 have one size and alignment; the tiles stored f32 bits.
            let values = unsafe { std::slice::from_raw_parts(sums.as_ptr() as *const f32, width) };
            emit(ib * BLOCK + i, jb * BLOCK, values);
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::kernels::gemm::View;

    /// Up to 32 values of row `i` of a transposed view from column `p0`, gathered at the view's column
    /// stride, as bf16 into `out`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn gather_bf16(m: View, i: usize, p0: usize, out: &mut [u8]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let steps = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(m.col as i32),
            );
            let row = m.data.as_ptr().add(i * m.row);
            let end = p0 + out.len() / 2;
            let load = |p: usize| -> __m512 {
                let lanes = end.saturating_sub(p).min(16);
                let mask = ((1u32 << lanes) - 1) as __mmask16;
                // Lanes past the row are masked off and never read.
                let at = row.wrapping_add(p * m.col);
                _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, steps, at)
            };
            let (lo, hi) = (load(p0), load(p0 + 16));
            let packed: [u8; 64] = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            out.copy_from_slice(&packed[..out.len()]);
        }
    }

    /// Sixteen bf16 pairs from two rows, interleaved by a 16-bit permutation.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn interleave_bf16(upper: &[f32], lower: Option<&[f32]>, j0: usize, out: &mut [u8]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let lanes = upper.len().saturating_sub(j0).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            let up = _mm512_maskz_loadu_ps(mask, upper.as_ptr().add(j0));
            let down = match lower {
                Some(l) => _mm512_maskz_loadu_ps(mask, l.as_ptr().add(j0)),
                None => _mm512_setzero_ps(),
            };
            // cvtne2ps puts `up` in the low 16 halves, `down` in the high 16: pair them up.
            let halves = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(down, up));
            let order = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            _mm512_storeu_si512(
                out.as_mut_ptr() as *mut __m512i,
                _mm512_permutexvar_epi16(order, halves),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(x: f32) -> f64 {
        f32::from_bits((bf16_bits(x) as u32) << 16) as f64
    }

    #[test]
    fn every_orientation_matches_the_bf16_reference() {
        let values: Vec<f32> = (0..200 * 90)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect();
        for &(m, k, n) in &[(1, 1, 1), (5, 33, 17), (40, 70, 45), (33, 64, 100)] {
            for (transpose_a, transpose_b) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let view = |rows: usize, cols: usize, offset: usize, transpose: bool| {
                    let data = &values[offset..offset + rows * cols];
                    if transpose {
                        View::row_major(data, cols, rows).t()
                    } else {
                        View::row_major(data, rows, cols)
                    }
                };
                let a = view(m, k, 0, transpose_a);
                let b = view(k, n, 7000, transpose_b);
                let got = matmul_bf16(a, b);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|p| round(a.at(i, p)) * round(b.at(p, j))).sum();
                        let g = got[i * n + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{m}x{k}x{n} transposed {transpose_a}/{transpose_b} ({i},{j}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
