//! Linear layers in reduced precision, for inference (`--dtype bf16|int8`): the products over the
//! converted weights of [`crate::kernels::packed_layout`].
//!
//! Activations are converted on each call: rounded to bf16, or quantized to uint8 per row with a zero
//! point (dynamic quantization, one scale per token; see [`crate::kernels::number_formats`]). Products
//! accumulate in f32 (bf16) or i32 (int8, the zero point taken out with the weight's column sums); the
//! bias is added in f32.
//!
//! With AMX ([`crate::kernels::amx`]) the products run on the tile units. Without it the same rounded
//! values go through the f32 gemm, so both paths compute one function up to the order of summation,
//! and the accuracy tests hold on any CPU.

use rayon::prelude::*;

use crate::kernels::amx::{self, TileOp, BLOCK};
use crate::kernels::buffer::Aligned;
use crate::kernels::gemm::{matmul_into, View};
use crate::kernels::number_formats::{convert_rows, ConvertedRows, RowScale};
use crate::kernels::packed_layout::{PackedLinear, Weights};
use crate::kernels::tile_gemm::{for_each_block, pieces, Operand, SharedOut};
use crate::kernels::vector_math;

impl PackedLinear {
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x W^T + b` for `rows` inputs of `in_dim` values, row-major.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_then(x, rows, false)
    }

    /// `gelu(x W^T + b)` (exact GELU), the activation applied as each output block is stored.
    pub fn forward_gelu(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_then(x, rows, true)
    }

    pub(crate) fn forward_then(&self, x: &[f32], rows: usize, gelu: bool) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.in_dim, "input is (rows, in)");
        match &self.weights {
            Weights::Tiles { data, k_tiles } => {
                self.forward_tiles(x, rows, data.bytes(), *k_tiles, gelu)
            }
            Weights::Emulated(w) => {
                let mut y = self.forward_emulated(x, rows, w.values());
                if gelu {
                    y.iter_mut().for_each(|v| *v = vector_math::gelu_scalar(*v));
                }
                y
            }
        }
    }

    fn op(&self) -> TileOp {
        self.precision.tile_op().expect("a reduced precision")
    }

    fn forward_emulated(&self, x: &[f32], rows: usize, w: &[f32]) -> Vec<f32> {
        let (k, n) = (self.in_dim, self.out_dim);
        let b = View::row_major(w, n, k).t();
        let converted = ConvertedRows::convert(x, k, self.op().formats().1);
        let a_values = converted.values();
        let a = View::row_major(&a_values, rows, k);
        let mut c = vec![0f32; rows * n];
        match self.op() {
            TileOp::Bf16 => {
                for row in c.chunks_mut(n.max(1)) {
                    row.copy_from_slice(&self.bias);
                }
                matmul_into(a, b, &mut c, true);
            }
            TileOp::Int8 => {
                matmul_into(a, b, &mut c, false);
                for (row, sa) in c.chunks_mut(n.max(1)).zip(&converted.scales) {
                    for ((v, sw), bias) in row.iter_mut().zip(&self.scales).zip(&self.bias) {
                        *v = *v * (sa.scale * sw) + bias;
                    }
                }
            }
        }
        c
    }

    fn forward_tiles(
        &self,
        x: &[f32],
        rows: usize,
        packed: &[u8],
        k_tiles: usize,
        gelu: bool,
    ) -> Vec<f32> {
        let op = self.op();
        let buffer = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let k_padded = k_tiles * op.depth();
        let activations = Activations::convert(x, rows, self.in_dim, k_padded, op, buffer);
        let n = self.out_dim;
        // Every element is written once, by `finish_block`, so the output starts uninitialised.
        let mut c: Vec<f32> = Vec::with_capacity(rows * n);
        let out = SharedOut(c.as_mut_ptr());
        let row_blocks = rows.div_ceil(BLOCK);
        // Rows per piece: about 1 MiB of activations, so that a piece's rows stay in L2 while each
        // column block's weights stream past them.
        let rows_per_piece = ((1 << 20) / activations.stride) / BLOCK;
        let pieces = pieces(row_blocks, n.div_ceil(BLOCK), rows_per_piece);
        let a = Operand {
            bytes: &activations.data,
            stride: activations.stride,
        };
        pieces.into_par_iter().for_each(|blocks| {
            amx::with_tiles(|| {
                for_each_block(op, a, packed, k_tiles, blocks, |ib, jb, block| {
                    // SAFETY: pieces write disjoint (row block, column block) rectangles.
                    unsafe { self.finish_block(block, &activations, (ib, jb), rows, &out, gelu) };
                })
            })
        });
        // SAFETY: the pieces covered every (row block, column block), writing each element.
        unsafe { c.set_len(rows * n) };
        SCRATCH.with(|s| *s.borrow_mut() = activations.data);
        c
    }

    /// Writes block (`ib`, `jb`) of the output: the raw sums, less the zero point's share and scaled
    /// (int8), plus the bias, through GELU if asked; rows and columns past the matrix dropped.
    ///
    /// # Safety
    /// `out` must point at `rows x out_dim` values and no other thread may write this block; the CPU
    /// must have AVX-512 (every CPU with AMX has).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn finish_block(
        &self,
        block: &[u32; BLOCK * BLOCK],
        activations: &Activations,
        (ib, jb): (usize, usize),
        rows: usize,
        out: &SharedOut,
        gelu: bool,
    ) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            use std::arch::x86_64::*;
            let n = self.out_dim;
            let (i0, j0) = (ib * BLOCK, jb * BLOCK);
            let width = BLOCK.min(n - j0);
            // The block's two 16-column halves, each with the lanes inside the matrix.
            let lanes_of = |h: usize| ((1u32 << width.saturating_sub(h).min(16)) - 1) as __mmask16;
            let halves = [(0, lanes_of(0)), (16, lanes_of(16))];
            let bias = self.bias.as_ptr().add(j0);
            for i in 0..BLOCK.min(rows - i0) {
                let sums = block.as_ptr().add(i * BLOCK);
                let target = out.0.add((i0 + i) * n + j0);
                for (h, lanes) in halves.into_iter().filter(|&(_, lanes)| lanes != 0) {
                    let b = _mm512_maskz_loadu_ps(lanes, bias.add(h));
                    let raw = _mm512_loadu_si512(sums.add(h) as *const __m512i);
                    let value = match self.op() {
                        TileOp::Bf16 => _mm512_add_ps(_mm512_castsi512_ps(raw), b),
                        TileOp::Int8 => {
                            let RowScale { scale, zero } = activations.scales[i0 + i];
                            let column_sums = _mm512_maskz_loadu_epi32(
                                lanes,
                                self.column_sums.as_ptr().add(j0 + h),
                            );
                            let weight_scales =
                                _mm512_maskz_loadu_ps(lanes, self.scales.as_ptr().add(j0 + h));
                            let centred = _mm512_sub_epi32(
                                raw,
                                _mm512_mullo_epi32(_mm512_set1_epi32(zero), column_sums),
                            );
                            let scales = _mm512_mul_ps(_mm512_set1_ps(scale), weight_scales);
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), scales, b)
                        }
                    };
                    let value = if gelu {
                        vector_math::gelu_vector(value)
                    } else {
                        value
                    };
                    _mm512_mask_storeu_ps(target.add(h), lanes, value);
                }
            }
        }
    }
}

thread_local! {
    /// The converted activations of the last call on this thread, kept for the next one.
    static SCRATCH: std::cell::RefCell<Aligned> = const {
        std::cell::RefCell::new(Aligned::new())
    };
}

/// Activations converted for the tiles: rows padded to whole blocks, `k` to whole tiles, zero filled.
struct Activations {
    data: Aligned,
    /// Bytes between rows.
    stride: usize,
    /// int8: each row's scale and zero point.
    scales: Vec<RowScale>,
}

impl Activations {
    /// Converts `x` into `data` (grown as needed): rows padded to whole blocks and `k` to whole tiles,
    /// with zeros (zero bytes: the padding's products vanish whatever the zero point).
    fn convert(
        x: &[f32],
        rows: usize,
        k: usize,
        k_padded: usize,
        op: TileOp,
        mut data: Aligned,
    ) -> Self {
        let format = op.formats().1;
        let stride = k_padded * format.bytes();
        let padded_rows = rows.div_ceil(BLOCK) * BLOCK;
        data.reserve(padded_rows * stride);
        let bytes = data.bytes_mut();
        bytes[rows * stride..padded_rows * stride].fill(0);
        let used = k * format.bytes();
        if used < stride {
            for row in bytes[..rows * stride].chunks_exact_mut(stride) {
                row[used..].fill(0);
            }
        }
        let scales = convert_rows(x, k, format, bytes, stride);
        Activations {
            data,
            stride,
            scales,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::number_formats::Format;
    use crate::kernels::packed_layout::Precision;

    /// `n` pseudo-random values in [-0.5, 0.5).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The values a path should see, by the textbook formulas: (dequantized values, per row).
    fn rounded(m: &[f32], cols: usize, format: Format) -> Vec<f64> {
        m.chunks(cols)
            .flat_map(|row| {
                let (low, high) = row
                    .iter()
                    .fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
                let largest = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                row.iter().map(move |&v| match format {
                    Format::Bf16 => {
                        let bits = v.to_bits();
                        let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
                        f32::from_bits(rounded) as f64
                    }
                    // Levels are `round(v * inverse)`, as the code computes them (the zero point
                    // of uint8 adds and comes out again).
                    Format::Int8 => {
                        (v * (127.0 / largest)).round_ties_even() as f64 * (largest / 127.0) as f64
                    }
                    Format::Uint8 => {
                        let range = high - low;
                        (v * (255.0 / range)).round_ties_even() as f64 * (range / 255.0) as f64
                    }
                })
            })
            .collect()
    }

    /// `x W^T + b` in f64 from the rounded values.
    fn reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, precision: Precision) -> Vec<f64> {
        let (n, k) = (b.len(), w.len() / b.len());
        let (wf, xf) = precision.tile_op().unwrap().formats();
        let (xq, wq) = (rounded(x, k, xf), rounded(w, k, wf));
        let mut out = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| xq[i * k + p] * wq[j * k + p]).sum();
                out[i * n + j] = dot + b[j] as f64;
            }
        }
        out
    }

    #[test]
    fn both_paths_compute_the_rounded_product_on_odd_shapes() {
        let paths: &[bool] = if amx::available() {
            &[true, false]
        } else {
            &[false]
        };
        for precision in [Precision::Bf16, Precision::Int8] {
            for &(rows, n, k) in &[
                (1, 1, 1),
                (3, 17, 33),
                (33, 40, 70),
                (70, 96, 128),
                (16, 2, 768),
            ] {
                let x = values(rows * k, 1 + rows as u32);
                let w = values(n * k, 7 + n as u32);
                let b = values(n, 3);
                let want = reference(&x, &w, &b, rows, precision);
                for &tiles in paths {
                    let linear = PackedLinear::with_tiles(&w, &b, n, precision, tiles);
                    let got = linear.forward(&x, rows);
                    for (g, r) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()),
                            "{precision} tiles={tiles} {rows}x{n}x{k}: {g} vs {r}"
                        );
                    }
                    let activated = linear.forward_gelu(&x, rows);
                    for (a, g) in activated.iter().zip(&got) {
                        let want = vector_math::gelu_scalar(*g);
                        assert!(
                            (a - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{precision} tiles={tiles} {rows}x{n}x{k} with GELU: {a} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reduced_precision_stays_near_f32() {
        let (rows, n, k) = (40, 64, 256);
        let x = values(rows * k, 11);
        let w = values(n * k, 12);
        let b = values(n, 13);
        let mut exact = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
                exact[i * n + j] = dot + b[j] as f64;
            }
        }
        let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (precision, tolerance) in [(Precision::Bf16, 0.02), (Precision::Int8, 0.05)] {
            let got = PackedLinear::new(&w, &b, n, precision).forward(&x, rows);
            let worst = got
                .iter()
                .zip(&exact)
                .fold(0f64, |m, (g, e)| m.max((*g as f64 - e).abs()));
            assert!(
                worst <= tolerance * scale,
                "{precision}: error {worst} of {scale}"
            );
            assert!(worst > 0.0, "{precision} rounded nothing");
        }
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert!("f16".parse::<Precision>().unwrap_err().contains("bf16"));
    }
}
