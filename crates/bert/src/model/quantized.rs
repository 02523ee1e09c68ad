//! Linear layers in reduced precision, for inference (`--dtype bf16|int8`).
//!
//! Weights are converted once, at load: rounded to bf16, or quantized to int8 symmetrically per output
//! channel (one scale per row of the `(out, in)` weight). Activations are converted on each call:
//! rounded to bf16, or quantized to int8 symmetrically per row (dynamic quantization, one scale per
//! token). Products accumulate in f32 (bf16) or i32 (int8); the bias is added in f32.
//!
//! With AMX ([`crate::model::amx`]) the weights are packed into tiles and the products run on the
//! tile units. Without it the same rounded values go through the f32 gemm, so both paths compute one
//! function up to the order of summation, and the accuracy tests hold on any CPU.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rayon::prelude::*;

use crate::model::amx::{self, TileOp, BLOCK, TILE_BYTES, TILE_BYTES_PER_ROW, TILE_ROWS};
use crate::model::gemm::{matmul_into, View};

/// The number format of a model's Linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown dtype {other:?}: expected f32, bf16 or int8"
            )),
        }
    }
}

impl Precision {
    /// The tile instruction for this precision (none for f32).
    fn tile_op(self) -> Option<TileOp> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(TileOp::Bf16),
            Precision::Int8 => Some(TileOp::Int8),
        }
    }
}

/// Bytes per element and elements per four-byte group of a tile row.
fn element_bytes(op: TileOp) -> usize {
    match op {
        TileOp::Bf16 => 2,
        TileOp::Int8 => 1,
    }
}

/// Depth (k values) of one tile.
fn tile_depth(op: TileOp) -> usize {
    TILE_BYTES_PER_ROW / element_bytes(op)
}

/// A 64-byte-aligned line, so that tile rows never straddle cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte-aligned byte buffer.
#[derive(Default)]
struct Aligned {
    lines: Vec<Line>,
}

impl Aligned {
    fn zeroed(bytes: usize) -> Self {
        Aligned {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
        }
    }

    /// Room for at least `bytes` (contents unspecified).
    fn reserve(&mut self, bytes: usize) {
        let lines = bytes.div_ceil(64);
        if self.lines.len() < lines {
            self.lines = vec![Line([0; 64]); lines];
        }
    }

    fn bytes(&self) -> &[u8] {
        let len = self.lines.len() * 64;
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.lines.len() * 64;
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, len) }
    }
}

/// A Linear layer's weight and bias, converted for one [`Precision`].
pub struct PackedLinear {
    precision: Precision,
    in_dim: usize,
    out_dim: usize,
    bias: Vec<f32>,
    /// int8: the scale of each output channel (`w = q * scale`); empty for bf16.
    scales: Vec<f32>,
    weights: Weights,
}

enum Weights {
    /// AMX tiles: for each 16-column block, its `k_tiles` tiles in order.
    Tiles { data: Aligned, k_tiles: usize },
    /// The rounded (bf16) or quantized (int8, as integers) values in f32, `(out, in)` row-major.
    Emulated(Vec<f32>),
}

impl fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self.weights {
            Weights::Tiles { .. } => "amx",
            Weights::Emulated(_) => "emulated",
        };
        write!(
            f,
            "PackedLinear({} {}x{} {path})",
            self.precision, self.out_dim, self.in_dim
        )
    }
}

impl PackedLinear {
    /// Converts an `(out_dim, in_dim)` weight and its bias, on AMX when the CPU has it.
    pub fn new(weight: &[f32], bias: &[f32], out_dim: usize, precision: Precision) -> Self {
        Self::with_tiles(weight, bias, out_dim, precision, amx::available())
    }

    /// As [`PackedLinear::new`], choosing the path: tiles (AMX must be available) or emulated.
    pub fn with_tiles(
        weight: &[f32],
        bias: &[f32],
        out_dim: usize,
        precision: Precision,
        tiles: bool,
    ) -> Self {
        assert_eq!(bias.len(), out_dim, "one bias per output");
        let in_dim = weight.len() / out_dim.max(1);
        assert_eq!(weight.len(), out_dim * in_dim, "weight is (out, in)");
        let op = precision.tile_op().expect("a reduced precision");
        let rows = ConvertedRows::convert(weight, in_dim, op);
        let weights = if tiles && amx::available() {
            pack_tiles(&rows, out_dim, in_dim, op)
        } else {
            Weights::Emulated(rows.values(op))
        };
        PackedLinear {
            precision,
            in_dim,
            out_dim,
            bias: bias.to_vec(),
            scales: match op {
                TileOp::Bf16 => Vec::new(),
                TileOp::Int8 => rows.scales,
            },
            weights,
        }
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x W^T + b` for `rows` inputs of `in_dim` values, row-major.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.in_dim, "input is (rows, in)");
        match &self.weights {
            Weights::Tiles { data, k_tiles } => self.forward_tiles(x, rows, data, *k_tiles),
            Weights::Emulated(w) => self.forward_emulated(x, rows, w),
        }
    }

    fn op(&self) -> TileOp {
        self.precision.tile_op().expect("a reduced precision")
    }

    fn forward_emulated(&self, x: &[f32], rows: usize, w: &[f32]) -> Vec<f32> {
        let (k, n) = (self.in_dim, self.out_dim);
        let b = View::row_major(w, n, k).t();
        let mut c = vec![0f32; rows * n];
        let converted = ConvertedRows::convert(x, k, self.op());
        let a = converted.values(self.op());
        match self.op() {
            TileOp::Bf16 => {
                for row in c.chunks_mut(n.max(1)) {
                    row.copy_from_slice(&self.bias);
                }
                matmul_into(View::row_major(&a, rows, k), b, &mut c, true);
            }
            TileOp::Int8 => {
                matmul_into(View::row_major(&a, rows, k), b, &mut c, false);
                for (row, sa) in c.chunks_mut(n.max(1)).zip(&converted.scales) {
                    for ((v, sw), bias) in row.iter_mut().zip(&self.scales).zip(&self.bias) {
                        *v = *v * (sa * sw) + bias;
                    }
                }
            }
        }
        c
    }

    fn forward_tiles(&self, x: &[f32], rows: usize, packed: &Aligned, k_tiles: usize) -> Vec<f32> {
        let op = self.op();
        let buffer = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let k_padded = k_tiles * tile_depth(op);
        let activations = Activations::convert(x, rows, self.in_dim, k_padded, op, buffer);
        let n = self.out_dim;
        // Every element is written once, by `finish_block`, so the output starts uninitialised.
        let mut c: Vec<f32> = Vec::with_capacity(rows * n);
        let out = SharedOut(c.as_mut_ptr());
        let row_blocks = rows.div_ceil(BLOCK);
        let col_blocks = n.div_ceil(BLOCK);
        // Rows per task: about 1 MiB of activations, so that a task's rows stay in L2 while each
        // column block's weights stream past them.
        let chunk = (((1 << 20) / activations.stride) / BLOCK).clamp(1, row_blocks);
        let row_chunks = row_blocks.div_ceil(chunk);
        let wanted = 4 * rayon::current_num_threads();
        let col_groups = wanted.div_ceil(row_chunks).clamp(1, col_blocks);
        let cols_per_group = col_blocks.div_ceil(col_groups);
        let tasks = row_chunks * col_groups;
        (0..tasks).into_par_iter().for_each(|task| {
            let (rc, cg) = (task / col_groups, task % col_groups);
            let row_range = rc * chunk..((rc + 1) * chunk).min(row_blocks);
            let col_range = cg * cols_per_group..((cg + 1) * cols_per_group).min(col_blocks);
            amx::with_tiles(|| {
                let mut block = [0u32; BLOCK * BLOCK];
                for jb in col_range.clone() {
                    for ib in row_range.clone() {
                        self.tile_block(&activations, packed, k_tiles, ib, jb, &mut block);
                        // Safety: tasks write disjoint (row block, column block) rectangles.
                        unsafe { self.finish_block(&block, &activations, ib, jb, rows, &out) };
                    }
                }
            })
        });
        // Safety: the tasks covered every (row block, column block), writing each element.
        unsafe { c.set_len(rows * n) };
        SCRATCH.with(|s| *s.borrow_mut() = activations.data);
        c
    }

    /// Runs the AMX kernel for output block (`ib`, `jb`).
    fn tile_block(
        &self,
        activations: &Activations,
        packed: &Aligned,
        k_tiles: usize,
        ib: usize,
        jb: usize,
        block: &mut [u32; BLOCK * BLOCK],
    ) {
        let a = &activations.data.bytes()[ib * BLOCK * activations.stride..];
        let column_tiles = k_tiles * TILE_BYTES;
        let b = packed.bytes();
        let b0 = &b[2 * jb * column_tiles..];
        let b1 = &b[(2 * jb + 1) * column_tiles..];
        debug_assert!(a.len() >= BLOCK * activations.stride && b1.len() >= column_tiles);
        #[cfg(target_arch = "x86_64")]
        unsafe {
            amx::block(
                self.op(),
                a.as_ptr(),
                activations.stride,
                b0.as_ptr(),
                b1.as_ptr(),
                k_tiles,
                block,
            )
        };
    }

    /// Writes block (`ib`, `jb`) of the output: the raw sums scaled (int8) plus the bias, rows and
    /// columns past the matrix dropped.
    ///
    /// # Safety
    /// `out` must point at `rows x out_dim` values and no other thread may write this block; the CPU
    /// must have AVX-512 (every CPU with AMX has).
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn finish_block(
        &self,
        block: &[u32; BLOCK * BLOCK],
        activations: &Activations,
        ib: usize,
        jb: usize,
        rows: usize,
        out: &SharedOut,
    ) {
        let n = self.out_dim;
        let (i0, j0) = (ib * BLOCK, jb * BLOCK);
        let width = BLOCK.min(n - j0);
        let bias = &self.bias[j0..j0 + width];
        for i in 0..BLOCK.min(rows - i0) {
            let sums = &block[i * BLOCK..i * BLOCK + width];
            let target = std::slice::from_raw_parts_mut(out.0.add((i0 + i) * n + j0), width);
            match self.op() {
                TileOp::Bf16 => {
                    for ((t, s), b) in target.iter_mut().zip(sums).zip(bias) {
                        *t = f32::from_bits(*s) + b;
                    }
                }
                TileOp::Int8 => {
                    let sa = activations.scales[i0 + i];
                    let scales = &self.scales[j0..j0 + width];
                    for (((t, s), b), sw) in target.iter_mut().zip(sums).zip(bias).zip(scales) {
                        *t = (*s as i32) as f32 * (sa * sw) + b;
                    }
                }
            }
        }
    }
}

/// The output matrix, written by several tasks at once (each its own blocks).
struct SharedOut(*mut f32);
unsafe impl Sync for SharedOut {}

thread_local! {
    /// The converted activations of the last call on this thread, kept for the next one.
    static SCRATCH: std::cell::RefCell<Aligned> = const {
        std::cell::RefCell::new(Aligned { lines: Vec::new() })
    };
}

/// Activations converted for the tiles: rows padded to whole blocks, `k` to whole tiles, zero filled.
struct Activations {
    data: Aligned,
    /// Bytes between rows.
    stride: usize,
    /// int8: each row's scale (`x = q * scale`).
    scales: Vec<f32>,
}

impl Activations {
    /// Converts `x` into `data` (grown as needed): rows padded to whole blocks and `k` to whole tiles,
    /// with zeros.
    fn convert(
        x: &[f32],
        rows: usize,
        k: usize,
        k_padded: usize,
        op: TileOp,
        mut data: Aligned,
    ) -> Self {
        let stride = k_padded * element_bytes(op);
        let padded_rows = rows.div_ceil(BLOCK) * BLOCK;
        data.reserve(padded_rows * stride);
        let bytes = data.bytes_mut();
        bytes[rows * stride..padded_rows * stride].fill(0);
        let used = k * element_bytes(op);
        if used < stride {
            for row in bytes[..rows * stride].chunks_exact_mut(stride) {
                row[used..].fill(0);
            }
        }
        let mut scales = vec![0f32; rows];
        let out_rows = bytes[..rows * stride].par_chunks_mut(stride);
        match op {
            TileOp::Bf16 => out_rows
                .zip(x.par_chunks(k))
                .for_each(|(out, row)| write_bf16(row, out)),
            TileOp::Int8 => out_rows
                .zip(x.par_chunks(k))
                .zip(scales.par_iter_mut())
                .for_each(|((out, row), scale)| *scale = write_int8(row, out)),
        }
        Activations {
            data,
            stride,
            scales,
        }
    }
}

/// Rows of a matrix converted for the tiles: bf16 (two bytes each) or int8 with a scale per row.
struct ConvertedRows {
    bytes: Vec<u8>,
    /// int8: each row's scale; bf16: empty.
    scales: Vec<f32>,
}

impl ConvertedRows {
    /// Converts the rows of `k` values of `x`, in parallel.
    fn convert(x: &[f32], k: usize, op: TileOp) -> Self {
        let width = k * element_bytes(op);
        let rows = x.len() / k.max(1);
        let mut bytes = vec![0u8; rows * width];
        let mut scales = Vec::new();
        match op {
            TileOp::Bf16 => bytes
                .par_chunks_mut(width.max(1))
                .zip(x.par_chunks(k.max(1)))
                .for_each(|(out, row)| write_bf16(row, out)),
            TileOp::Int8 => {
                scales = vec![0f32; rows];
                bytes
                    .par_chunks_mut(width.max(1))
                    .zip(x.par_chunks(k.max(1)))
                    .zip(scales.par_iter_mut())
                    .for_each(|((out, row), scale)| *scale = write_int8(row, out));
            }
        }
        ConvertedRows { bytes, scales }
    }

    /// The converted values in f32: the bf16 values, or the int8 integers (unscaled).
    fn values(&self, op: TileOp) -> Vec<f32> {
        match op {
            TileOp::Bf16 => self
                .bytes
                .chunks_exact(2)
                .map(|h| f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16))
                .collect(),
            TileOp::Int8 => self.bytes.iter().map(|&q| q as i8 as f32).collect(),
        }
    }
}

/// Packs the converted rows of an `(n, k)` weight into tiles: for each 16-column block, `k_tiles`
/// tiles whose row `r` holds, for each column, its four bytes of group `r` (2 bf16 or 4 int8
/// consecutive `k` values, which are adjacent in the weight's row). Columns and depth past the matrix
/// are zero.
fn pack_tiles(rows: &ConvertedRows, n: usize, k: usize, op: TileOp) -> Weights {
    let k_tiles = k.div_ceil(tile_depth(op));
    let width = k * element_bytes(op);
    let column_blocks = n.div_ceil(BLOCK) * 2;
    let block_bytes = k_tiles * TILE_BYTES;
    let mut data = Aligned::zeroed(column_blocks * block_bytes);
    data.bytes_mut()[..column_blocks * block_bytes]
        .par_chunks_mut(block_bytes)
        .enumerate()
        .for_each(|(cb, tiles)| {
            for col in 0..TILE_ROWS.min(n.saturating_sub(cb * TILE_ROWS)) {
                let j = cb * TILE_ROWS + col;
                let row = &rows.bytes[j * width..(j + 1) * width];
                for (g, group) in row.chunks(4).enumerate() {
                    let (t, r) = (g / TILE_ROWS, g % TILE_ROWS);
                    let at = t * TILE_BYTES + r * TILE_BYTES_PER_ROW + col * 4;
                    tiles[at..at + group.len()].copy_from_slice(group);
                }
            }
        });
    Weights::Tiles { data, k_tiles }
}

/// The bf16 nearest to `x` (ties to even), as its 16 bits.
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// One row of activations as bf16 into `out` (little-endian pairs of bytes).
fn write_bf16(row: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        return unsafe { write_bf16_avx512(row, out) };
    }
    for (v, o) in row.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16_bits(*v).to_le_bytes());
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn write_bf16_avx512(row: &[f32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let whole = row.len() / 32 * 32;
    let dst = out.as_mut_ptr() as *mut __m512i;
    for (i, chunk) in row[..whole].chunks_exact(32).enumerate() {
        let lo = _mm512_loadu_ps(chunk.as_ptr());
        let hi = _mm512_loadu_ps(chunk.as_ptr().add(16));
        let packed = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(dst.add(i), std::mem::transmute::<__m512bh, __m512i>(packed));
    }
    for (p, v) in row[whole..].iter().enumerate() {
        let at = 2 * (whole + p);
        out[at..at + 2].copy_from_slice(&bf16_bits(*v).to_le_bytes());
    }
}

/// One row quantized to int8 into `out`; returns its scale.
fn write_int8(row: &[f32], out: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return unsafe { write_int8_avx512(row, out) };
    }
    let (scale, inverse) = row_scale(row);
    for (o, v) in out.iter_mut().zip(row) {
        *o = (v * inverse).round_ties_even() as i8 as u8;
    }
    scale
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn write_int8_avx512(row: &[f32], out: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
    let whole = row.len() / 16 * 16;
    let mut largest = _mm512_setzero_ps();
    for chunk in row[..whole].chunks_exact(16) {
        largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_loadu_ps(chunk.as_ptr())));
    }
    let largest = row[whole..]
        .iter()
        .fold(_mm512_reduce_max_ps(largest), |m, v| m.max(v.abs()));
    let (scale, inverse) = scale_of(largest);
    let times = _mm512_set1_ps(inverse);
    for (i, chunk) in row[..whole].chunks_exact(16).enumerate() {
        // Rounds to nearest even (the default MXCSR mode), then saturates to int8.
        let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(chunk.as_ptr()), times));
        _mm_storeu_si128(
            out.as_mut_ptr().add(16 * i) as *mut __m128i,
            _mm512_cvtsepi32_epi8(q),
        );
    }
    for (o, v) in out[whole..].iter_mut().zip(&row[whole..]) {
        *o = (v * inverse).round_ties_even() as i8 as u8;
    }
    scale
}

/// The symmetric int8 scale of a row (largest magnitude maps to 127) and its inverse.
fn row_scale(row: &[f32]) -> (f32, f32) {
    scale_of(row.iter().fold(0f32, |m, v| m.max(v.abs())))
}

fn scale_of(largest: f32) -> (f32, f32) {
    if largest == 0.0 || !largest.is_finite() {
        return (0.0, 0.0);
    }
    (largest / 127.0, 127.0 / largest)
}

/// `x W^T + b` through a [`PackedLinear`], as a candle op (inference only: no backward pass).
#[derive(Debug, Clone)]
pub struct PackedLinearOp(pub Arc<PackedLinear>);

impl candle_core::CustomOp1 for PackedLinearOp {
    fn name(&self) -> &'static str {
        "bert-packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = crate::model::gemm::contiguous_f32(storage, layout, "packed linear")?;
        let [rows, in_dim] = layout.dims() else {
            candle_core::bail!("packed linear: expects a matrix, got {:?}", layout.dims())
        };
        if *in_dim != self.0.in_dim {
            candle_core::bail!(
                "packed linear: {rows}x{in_dim} input for a {}x{} weight",
                self.0.out_dim,
                self.0.in_dim
            )
        }
        let y = self.0.forward(x, *rows);
        Ok((
            candle_core::CpuStorage::F32(y),
            candle_core::Shape::from((*rows, self.0.out_dim)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` rounded to the nearest bf16, as f32.
    fn round_bf16(x: f32) -> f32 {
        f32::from_bits((bf16_bits(x) as u32) << 16)
    }

    /// Quantizes each row of `k` values; returns the integers (as f32) and the row scales.
    fn quantize_rows(x: &[f32], k: usize) -> (Vec<f32>, Vec<f32>) {
        let mut values = vec![0f32; x.len()];
        let scales = values
            .chunks_mut(k.max(1))
            .zip(x.chunks(k.max(1)))
            .map(|(out, row)| {
                let (scale, inverse) = row_scale(row);
                for (o, v) in out.iter_mut().zip(row) {
                    *o = (v * inverse).round_ties_even();
                }
                scale
            })
            .collect();
        (values, scales)
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// `x W^T + b` in f64 from the values each path is meant to see.
    fn reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, precision: Precision) -> Vec<f64> {
        let (n, k) = (b.len(), w.len() / b.len());
        let convert = |m: &[f32], cols: usize| -> (Vec<f32>, Vec<f32>) {
            match precision {
                Precision::Bf16 => (
                    m.iter().map(|&v| round_bf16(v)).collect(),
                    vec![1.0; m.len() / cols],
                ),
                _ => quantize_rows(m, cols),
            }
        };
        let (xq, xs) = convert(x, k);
        let (wq, ws) = convert(w, k);
        let mut out = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| xq[i * k + p] as f64 * wq[j * k + p] as f64)
                    .sum();
                out[i * n + j] = dot * xs[i] as f64 * ws[j] as f64 + b[j] as f64;
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
        let exact = reference(&x, &w, &b, rows, Precision::Bf16); // only to size the outputs
        let mut f32_out = vec![0f64; exact.len()];
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
                f32_out[i * n + j] = dot + b[j] as f64;
            }
        }
        let scale = f32_out.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (precision, tolerance) in [(Precision::Bf16, 0.02), (Precision::Int8, 0.05)] {
            let got = PackedLinear::new(&w, &b, n, precision).forward(&x, rows);
            let worst = got
                .iter()
                .zip(&f32_out)
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
