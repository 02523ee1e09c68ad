//! Single-precision matrix multiplication with AVX-512 on x86-64, for the Linear layers that carry
//! nearly all of BERT's arithmetic. candle's matmul (the `gemm` crate on stable Rust) uses AVX2 kernels
//! and reaches about 180 GFLOP/s on two Zen 4 cores, where AVX-512 reaches 300; this is the classic
//! blocked algorithm (B packed into 32-column strips, A into 12-row strips, a 12 x 32 register-tile
//! micro-kernel) with the row blocks split across threads.
//!
//! Matrices are strided views: element (i, j) of `a` is `a.data[i * a.row + j * a.col]`, so transposed
//! operands need no copy. Without AVX-512 (checked at run time) a plain blocked loop does the work.

use rayon::prelude::*;

use super::tile_gemm::SharedOut;

/// A read-only strided matrix view.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Stride between rows and between columns.
    pub row: usize,
    pub col: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row: cols,
            col: 1,
        }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row: self.col,
            col: self.row,
        }
    }

    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row + j * self.col]
    }
}

const MR: usize = 12;
const NR: usize = 32;
/// Depth of a packed panel: BERT's hidden size, so that most products take one pass over `c`.
const KC: usize = 768;
/// Most rows per block of `a` (192 x 768 floats: 590 KB, in L2); fewer when that leaves a thread idle.
const MC: usize = 192;
/// Columns per packed panel of `b` (768 x 4096 floats: 12.6 MB, bounded for the vocabulary-wide
/// masked-LM decoder).
const NC: usize = 4096;

/// `c = a b`, with `c` row-major `a.rows x b.cols`.
pub fn matmul(a: View, b: View, c: &mut [f32]) {
    matmul_into(a, b, c, false)
}

/// `c = a b`, or `c += a b` when `accumulate`.
pub fn matmul_into(a: View, b: View, c: &mut [f32], accumulate: bool) {
    let epilogue = Epilogue {
        accumulate,
        ..Epilogue::STORE
    };
    matmul_with(a, b, c, epilogue)
}

/// What a product is combined with as it is stored: `c = gelu?(a b + bias + c?)`. Done inside the
/// product, while each tile is in registers, this saves a Linear layer's separate passes over its
/// output (a bias broadcast before, an activation after).
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Add to what `c` holds (otherwise `c`'s values are never read, and may be uninitialised).
    pub accumulate: bool,
    /// Added to every row: a Linear layer's bias, one value per column.
    pub bias: Option<&'a [f32]>,
    /// GELU (the exact, erf form) applied last.
    pub gelu: bool,
}

impl<'a> Epilogue<'a> {
    /// `c = a b`.
    pub const STORE: Epilogue<'static> = Epilogue {
        accumulate: false,
        bias: None,
        gelu: false,
    };

    /// The epilogue for columns `j0..` only.
    fn at_column(self, j0: usize) -> Self {
        Epilogue {
            bias: self.bias.map(|b| &b[j0..]),
            ..self
        }
    }

    /// Finishes `values`, the product for the columns of `out` (for edges and the dot-product path).
    fn finish(self, values: &[f32], out: &mut [f32]) {
        for (j, (o, v)) in out.iter_mut().zip(values).enumerate() {
            let y = *v + self.bias.map_or(0.0, |b| b[j]);
            *o = if self.accumulate { y + *o } else { y };
        }
        if self.gelu {
            let n = out.len().min(values.len());
            super::vector_math::gelu_in_place(&mut out[..n]);
        }
    }
}

/// `c = epilogue(a b)`; see [`Epilogue`].
pub fn matmul_with(a: View, b: View, c: &mut [f32], epilogue: Epilogue) {
    assert_eq!(c.len(), a.rows * b.cols, "output size");
    matmul_strided(a, b, c, b.cols, epilogue)
}

/// As [`matmul_with`], into an output whose rows are `ldc` apart: the product fills columns
/// `0..b.cols` of each, so that products over column blocks of one output (layers loaded side by
/// side) need no copy.
pub fn matmul_strided(a: View, b: View, c: &mut [f32], ldc: usize, epilogue: Epilogue) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(ldc >= n, "output rows shorter than the product's");
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "output size");
    let c = &mut c[..(m - 1) * ldc + n];
    assert!(epilogue.bias.is_none_or(|b| b.len() == n), "bias size");
    if k == 0 {
        let zeros = vec![0f32; n];
        c.chunks_mut(ldc)
            .for_each(|row| epilogue.finish(&zeros, &mut row[..n]));
        return;
    }
    let cpu = crate::kernels::cpu::avx512f() || crate::kernels::cpu::avx2_fma();
    if m <= FEW_ROWS && a.col == 1 && b.row == 1 && cpu {
        return by_dots(a, b, c, ldc, epilogue);
    }
    if !crate::kernels::cpu::avx512f() {
        return portable(a, b, c, ldc, epilogue);
    }
    blocked(a, b, c, ldc, epilogue);
}

/// Without AVX-512: the `gemm` crate's kernels (those of candle's matmul, AVX2 and FMA where the CPU
/// has them) for the product, on the current thread pool, then the bias and GELU over each row.
fn portable(a: View, b: View, c: &mut [f32], ldc: usize, epilogue: Epilogue) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let threads = rayon::current_num_threads();
    let parallelism = match threads {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    // SAFETY: every index the product reads, `i * row + p * col` for i < m, p < k (and so for b), is
    // inside its view's data (a View's invariant), and the output holds `(m - 1) * ldc + n` values
    // (checked by the caller); without `accumulate` the output is written before it is read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            epilogue.accumulate,
            a.data.as_ptr(),
            a.col as isize,
            a.row as isize,
            b.data.as_ptr(),
            b.col as isize,
            b.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    };
    if epilogue.bias.is_none() && !epilogue.gelu {
        return;
    }
    c.par_chunks_mut(ldc).for_each(|row| {
        let row = &mut row[..n];
        if let Some(bias) = epilogue.bias {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        if epilogue.gelu {
            super::vector_math::gelu_in_place(row);
        }
    });
}

/// At most this many rows of `a` take the dot-product path.
const FEW_ROWS: usize = 32;

/// For a few rows (up to [`FEW_ROWS`]) against a transposed `b` (a Linear layer's weight), each output is a
/// dot product of an `a` row with a contiguous `b` column, and the columns are split across threads.
/// Packing `b`, which the blocked path does on every call, would cost as much as the product itself.
/// Four rows and six columns go together: 24 independent sums hide the FMA latency, and each `a` row
/// is read once per six columns (it was once per two, and those re-reads from L2 bounded a 16-token
/// forward). GELU goes over whole rows at the end, sixteen lanes at a time, rather than six values
/// per block.
fn by_dots(a: View, b: View, c: &mut [f32], ldc: usize, epilogue: Epilogue) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let column = |j: usize| &b.data[j * b.col..j * b.col + k];
    let row = |i: usize| &a.data[i * a.row..i * a.row + k];
    let gelu = epilogue.gelu;
    let epilogue = Epilogue {
        gelu: false,
        ..epilogue
    };
    let out = SharedOut(c.as_mut_ptr());
    // Each thread takes whole column groups and writes their columns of every row.
    (0..n.div_ceil(COLUMNS))
        .into_par_iter()
        .with_min_len(4)
        .for_each(|group| {
            let j = COLUMNS * group;
            let width = COLUMNS.min(n - j);
            let w: [&[f32]; COLUMNS] = std::array::from_fn(|d| column((j + d).min(n - 1)));
            let next: [&[f32]; COLUMNS] =
                std::array::from_fn(|d| column((j + COLUMNS + d).min(n - 1)));
            let passes = m.div_ceil(ROWS);
            for (pass, i0) in (0..m).step_by(ROWS).enumerate() {
                let rows: [&[f32]; ROWS] = std::array::from_fn(|d| row((i0 + d).min(m - 1)));
                // Each pass fetches some of the next group's columns, so memory stays busy throughout.
                let mut ahead = [next[0]; COLUMNS];
                let mut count = 0;
                for c in (pass..COLUMNS).step_by(passes) {
                    ahead[count] = next[c];
                    count += 1;
                }
                let sums = dots(rows, w, &ahead[..count]);
                for (d, row_sums) in sums.iter().enumerate().take(m - i0) {
                    // SAFETY: columns j..j + width of every row belong to this group alone.
                    let row = unsafe { out.slice((i0 + d) * ldc + j, width) };
                    epilogue.at_column(j).finish(row_sums, row);
                }
            }
        });
    if gelu {
        for i in 0..m {
            super::vector_math::gelu_in_place(&mut c[i * ldc..i * ldc + n]);
        }
    }
}

/// Rows and columns of one [`dots`] block.
const ROWS: usize = 4;
const COLUMNS: usize = 6;

/// The dot products of `ROWS` rows with `COLUMNS` columns, all of length `k`; `ahead`, the columns
/// the next call will read, are fetched into the cache meanwhile (the weights stream from memory once,
/// and without this the first row block of each group waits on them).
fn dots(
    rows: [&[f32]; ROWS],
    columns: [&[f32]; COLUMNS],
    ahead: &[&[f32]],
) -> [[f32; COLUMNS]; ROWS] {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512f() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { dots_avx512(rows, columns, ahead) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { dots_avx2(rows, columns, ahead) };
    }
    let _ = ahead;
    rows.map(|r| columns.map(|c| dot_portable(r, c)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(
    rows: [&[f32]; ROWS],
    columns: [&[f32]; COLUMNS],
    ahead: &[&[f32]],
) -> [[f32; COLUMNS]; ROWS] {
    // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
    // for, and pointers and lengths inside the buffers they name.
    unsafe {
        use std::arch::x86_64::*;
        let k = columns[0].len();
        let mut sums = [[_mm512_setzero_ps(); COLUMNS]; ROWS];
        let mut p = 0;
        while p + 16 <= k {
            for next in ahead {
                // A hint only: an address past the end of `next` is not read.
                _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().wrapping_add(p).cast());
            }
            let w: [__m512; COLUMNS] =
                std::array::from_fn(|c| _mm512_loadu_ps(columns[c].as_ptr().add(p)));
            for (r, row) in rows.iter().enumerate() {
                let x = _mm512_loadu_ps(row.as_ptr().add(p));
                for c in 0..COLUMNS {
                    sums[r][c] = _mm512_fmadd_ps(x, w[c], sums[r][c]);
                }
            }
            p += 16;
        }
        let mut out = [[0f32; COLUMNS]; ROWS];
        for r in 0..ROWS {
            for c in 0..COLUMNS {
                let tail: f32 = (p..k).map(|q| rows[r][q] * columns[c][q]).sum();
                out[r][c] = _mm512_reduce_add_ps(sums[r][c]) + tail;
            }
        }
        out
    }
}

/// [`dots`] with AVX2 and FMA: sixteen 256-bit registers hold two rows' sums at a time (twelve
/// accumulators), so the block is two passes of two rows over the same columns, the second reading
/// them from the cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(
    rows: [&[f32]; ROWS],
    columns: [&[f32]; COLUMNS],
    ahead: &[&[f32]],
) -> [[f32; COLUMNS]; ROWS] {
    // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
    // for, and pointers and lengths inside the buffers they name.
    unsafe {
        use std::arch::x86_64::*;
        let k = columns[0].len();
        let mut out = [[0f32; COLUMNS]; ROWS];
        for half in 0..ROWS / 2 {
            let pair = [rows[2 * half], rows[2 * half + 1]];
            let mut sums = [[_mm256_setzero_ps(); COLUMNS]; 2];
            let mut p = 0;
            while p + 8 <= k {
                if half == 0 && p % 16 == 0 {
                    for next in ahead {
                        // A hint only: an address past the end of `next` is not read.
                        _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().wrapping_add(p).cast());
                    }
                }
                let x = pair.map(|r| _mm256_loadu_ps(r.as_ptr().add(p)));
                for c in 0..COLUMNS {
                    let w = _mm256_loadu_ps(columns[c].as_ptr().add(p));
                    sums[0][c] = _mm256_fmadd_ps(x[0], w, sums[0][c]);
                    sums[1][c] = _mm256_fmadd_ps(x[1], w, sums[1][c]);
                }
                p += 8;
            }
            for r in 0..2 {
                for c in 0..COLUMNS {
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), sums[r][c]);
                    let tail: f32 = (p..k).map(|q| pair[r][q] * columns[c][q]).sum();
                    out[2 * half + r][c] = lanes.iter().sum::<f32>() + tail;
                }
            }
        }
        out
    }
}

/// The dot product of two equal-length slices (AVX-512 where the CPU has it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512f() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { dot_avx512(a, b) };
    }
    dot_portable(a, b)
}

/// Eight running sums, which the compiler turns into vector code.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
    // for, and pointers and lengths inside the buffers they name.
    unsafe {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                s1,
            );
            i += 32;
        }
        while i + 16 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }
}

/// Packs `b[p0..p0+kc, j0..j0+nc]` into strips of NR columns: strip s holds, for each p, NR values.
/// Every value is written (the buffer is not zeroed first: that was a pass of its own).
fn pack_b(b: View, p0: usize, kc: usize, (j0, nc): (usize, usize), packed: &mut Vec<f32>) {
    let strips = nc.div_ceil(NR);
    packed.resize(strips * kc * NR, 0.0);
    packed
        .par_chunks_mut(kc * NR)
        .enumerate()
        .for_each(|(s, strip)| {
            let j0 = j0 + s * NR;
            let width = NR.min(nc - s * NR);
            if width < NR {
                strip.fill(0.0);
            }
            if b.col == 1 {
                for (p, dst) in strip.chunks_exact_mut(NR).enumerate() {
                    let start = (p0 + p) * b.row + j0;
                    copy_short(&b.data[start..start + width], dst);
                }
            } else if b.row == 1 {
                // A transpose (a Linear layer's weight): each column is contiguous, so it is read
                // in runs and spread across the strip, DEPTH_RUN depths at a time so that the part
                // of the strip being written stays in L1.
                for (run, dsts) in strip.chunks_mut(DEPTH_RUN * NR).enumerate() {
                    let p = p0 + run * DEPTH_RUN;
                    let depths = dsts.len() / NR;
                    for j in 0..width {
                        let start = (j0 + j) * b.col + p;
                        for (dst, v) in dsts
                            .chunks_exact_mut(NR)
                            .zip(&b.data[start..start + depths])
                        {
                            dst[j] = *v;
                        }
                    }
                }
            } else {
                for (p, dst) in strip.chunks_exact_mut(NR).enumerate() {
                    for (j, d) in dst.iter_mut().enumerate().take(width) {
                        *d = b.at(p0 + p, j0 + j);
                    }
                }
            }
        });
}

/// Depths of a transposed `b` packed at a time.
const DEPTH_RUN: usize = 64;

/// Copies `src` to the start of `dst`: a full strip row (MR or NR values) as a fixed-size copy the
/// compiler inlines, where `copy_from_slice` of a length it cannot see calls `memmove` per row.
#[inline(always)]
fn copy_short(src: &[f32], dst: &mut [f32]) {
    match (src.len(), dst.len()) {
        (MR, MR) => copy_fixed::<MR>(src, dst),
        (NR, NR) => copy_fixed::<NR>(src, dst),
        (n, _) => dst[..n].copy_from_slice(src),
    }
}

#[inline(always)]
fn copy_fixed<const N: usize>(src: &[f32], dst: &mut [f32]) {
    let src: &[f32; N] = src.try_into().expect("N values");
    let dst: &mut [f32; N] = dst.try_into().expect("N values");
    *dst = *src;
}

/// Packs `a[i0..i0+mc, p0..p0+kc]` into strips of MR rows: strip r holds, for each p, MR values.
fn pack_a(a: View, i0: usize, mc: usize, p0: usize, kc: usize, packed: &mut [f32]) {
    let strips = mc.div_ceil(MR);
    for (r, strip) in packed[..strips * kc * MR].chunks_mut(kc * MR).enumerate() {
        let first = i0 + r * MR;
        let rows = MR.min(mc.saturating_sub(r * MR));
        if rows < MR {
            strip.fill(0.0);
        }
        if a.row == 1 {
            // A transpose: the strip's rows are adjacent at each depth.
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                let start = (p0 + p) * a.col + first;
                copy_short(&a.data[start..start + rows], dst);
            }
        } else {
            // Writing the strip in order (reading the rows strided) is faster than the reverse.
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                for (i, d) in dst.iter_mut().enumerate().take(rows) {
                    *d = a.at(first + i, p0 + p);
                }
            }
        }
    }
}

thread_local! {
    /// Packing buffers, kept per thread across calls: allocating them afresh each time costs page
    /// faults that show in a training step.
    static PACKED_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PACKED_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
fn blocked(a: View, b: View, c: &mut [f32], ldc: usize, epilogue: Epilogue) {
    // Taken out for the call: a nested call on this thread (from inside another parallel loop) finds
    // an empty buffer instead of a borrowed one.
    let mut packed = PACKED_B.with(|p| std::mem::take(&mut *p.borrow_mut()));
    blocked_with(a, b, c, ldc, &mut packed, epilogue);
    PACKED_B.with(|p| *p.borrow_mut() = packed);
}

#[cfg(target_arch = "x86_64")]
fn blocked_with(
    a: View,
    b: View,
    c: &mut [f32],
    ldc: usize,
    packed_b: &mut Vec<f32>,
    epilogue: Epilogue,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    // At least two row blocks per thread, so that short inputs still use every thread.
    let per_block = m.div_ceil(2 * rayon::current_num_threads());
    let mc = (per_block.div_ceil(MR) * MR).clamp(MR, MC);
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            pack_b(b, p0, kc, (j0, nc), packed_b);
            // The bias goes in with the first pass over `c`, the activation with the last.
            let pass = Epilogue {
                accumulate: p0 > 0 || epilogue.accumulate,
                bias: epilogue.bias.filter(|_| p0 == 0),
                gelu: epilogue.gelu && p0 + kc == k,
            };
            let packed_b = &*packed_b;
            c.par_chunks_mut(mc * ldc)
                .enumerate()
                .for_each(|(block, c_block)| {
                    PACKED_A.with(|packed_a| {
                        let mut packed_a = packed_a.borrow_mut();
                        packed_a.resize(MC.div_ceil(MR) * MR * KC, 0.0);
                        let i0 = block * mc;
                        let rows = mc.min(m - i0);
                        pack_a(a, i0, rows, p0, kc, &mut packed_a[..]);
                        let panel = Panel {
                            a: &packed_a[..],
                            b: packed_b,
                            kc,
                            epilogue: pass,
                        };
                        panel.multiply(c_block, ldc, rows, (j0, nc));
                    });
                });
        }
    }
}

/// One packed block of `a` (rows x kc) and one packed panel of `b` (kc x nc).
struct Panel<'a> {
    a: &'a [f32],
    b: &'a [f32],
    kc: usize,
    /// How this pass over `c` stores its products.
    epilogue: Epilogue<'a>,
}

impl Panel<'_> {
    /// Their product into columns `j0..j0 + nc` of the block `c` of `rows` rows, `ldc` apart.
    #[cfg(target_arch = "x86_64")]
    fn multiply(&self, c: &mut [f32], ldc: usize, rows: usize, (j0, nc): (usize, usize)) {
        let kc = self.kc;
        for s in 0..nc.div_ceil(NR) {
            let cols = NR.min(nc - s * NR);
            let b_strip = &self.b[s * kc * NR..(s + 1) * kc * NR];
            for r in 0..rows.div_ceil(MR) {
                let strip_rows = MR.min(rows - r * MR);
                let a_strip = &self.a[r * kc * MR..(r + 1) * kc * MR];
                let c_tile = &mut c[r * MR * ldc + j0 + s * NR..];
                let epilogue = self.epilogue.at_column(j0 + s * NR);
                if strip_rows == MR && cols == NR {
                    // SAFETY: AVX-512F was detected; the strips hold kc * MR and kc * NR values,
                    // c_tile holds MR rows of stride ldc from here, a bias NR values from here.
                    unsafe { kernel_12x32(kc, a_strip, b_strip, c_tile, ldc, epilogue) };
                    continue;
                }
                let mut tile = [0f32; MR * NR];
                // SAFETY: as above, into a dense MR x NR tile.
                unsafe { kernel_12x32(kc, a_strip, b_strip, &mut tile, NR, Epilogue::STORE) };
                for i in 0..strip_rows {
                    epilogue.finish(&tile[i * NR..i * NR + cols], &mut c_tile[i * ldc..][..cols]);
                }
            }
        }
    }
}

/// The 12 x 32 tile of `a_strip (kc x 12) * b_strip (kc x 32)`, in 24 AVX-512 accumulators, stored
/// into `c` at row stride `ldc` through `epilogue` (whose bias, if any, starts at this tile's column).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_12x32(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
    // for, and pointers and lengths inside the buffers they name.
    unsafe {
        use std::arch::x86_64::*;
        debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR && c.len() >= (MR - 1) * ldc + NR);
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(pb);
            let b1 = _mm512_loadu_ps(pb.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*pa.add(i));
                row[0] = _mm512_fmadd_ps(x, b0, row[0]);
                row[1] = _mm512_fmadd_ps(x, b1, row[1]);
            }
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
        let bias = epilogue.bias.map(|b| {
            debug_assert!(b.len() >= NR);
            [
                _mm512_loadu_ps(b.as_ptr()),
                _mm512_loadu_ps(b.as_ptr().add(16)),
            ]
        });
        for (i, row) in acc.iter().enumerate() {
            let out = c.as_mut_ptr().add(i * ldc);
            let (mut lo, mut hi) = (row[0], row[1]);
            if let Some([b0, b1]) = bias {
                lo = _mm512_add_ps(lo, b0);
                hi = _mm512_add_ps(hi, b1);
            }
            if epilogue.accumulate {
                lo = _mm512_add_ps(lo, _mm512_loadu_ps(out));
                hi = _mm512_add_ps(hi, _mm512_loadu_ps(out.add(16)));
            }
            if epilogue.gelu {
                lo = super::vector_math::gelu_vector(lo);
                hi = super::vector_math::gelu_vector(hi);
            }
            _mm512_storeu_ps(out, lo);
            _mm512_storeu_ps(out.add(16), hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols).map(|p| a.at(i, p) * b.at(p, j)).sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_naive_product_on_odd_shapes_and_transposed_views() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (13, 7, 33),
            (97, 300, 65),
            (200, 513, 40),
            (12, 256, 32),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bt = values(n * k, 3);
            let at = values(k * m, 4);
            for (va, vb) in [
                (View::row_major(&a, m, k), View::row_major(&b, k, n)),
                (View::row_major(&a, m, k), View::row_major(&bt, n, k).t()),
                (View::row_major(&at, k, m).t(), View::row_major(&b, k, n)),
            ] {
                let mut c = vec![f32::NAN; m * n];
                matmul(va, vb, &mut c);
                let want = naive(va, vb);
                let mut from_one = vec![1f32; m * n];
                matmul_into(va, vb, &mut from_one, true);
                let worst_added = from_one
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - 1.0 - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst_added < 1e-3,
                    "accumulating {m}x{k}x{n}: {worst_added}"
                );
                let worst = c
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-3, "{m}x{k}x{n}: {worst}");
            }
        }
    }

    #[test]
    fn epilogue_adds_the_bias_and_applies_gelu_on_every_path() {
        // Few rows (dot products), full and edge tiles, and a depth past one panel (two passes).
        for &(m, k, n) in &[(3, 40, 13), (13, 7, 33), (40, 300, 70), (30, 1000, 64)] {
            let (a, w, bias) = (values(m * k, 5), values(n * k, 6), values(n, 7));
            let (va, vb) = (View::row_major(&a, m, k), View::row_major(&w, n, k).t());
            let plain = naive(va, vb);
            for gelu in [false, true] {
                let mut c = vec![f32::NAN; m * n];
                let epilogue = Epilogue {
                    accumulate: false,
                    bias: Some(&bias),
                    gelu,
                };
                matmul_with(va, vb, &mut c, epilogue);
                for (i, (got, product)) in c.iter().zip(&plain).enumerate() {
                    let y = product + bias[i % n];
                    let want = if gelu {
                        crate::kernels::vector_math::gelu_scalar(y)
                    } else {
                        y
                    };
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{m}x{k}x{n} gelu {gelu} at {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
