//! f32 rows into the reduced number formats of [`crate::kernels::packed_layout`]: bf16 (rounded to nearest
//! even), int8 symmetric (weights: one scale per row, the largest magnitude at 127) and uint8
//! asymmetric (activations: one scale and zero point per row, the row's range, 0 included, over
//! 0..=255, which spends all 256 levels on a row such as GELU's output that is mostly positive).
//! AVX-512 forms where the CPU has them, scalar forms with the same rounding elsewhere.

use rayon::prelude::*;

/// A reduced number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bf16,
    /// Signed bytes, `x = q * scale`.
    Int8,
    /// Unsigned bytes, `x = (q - zero) * scale`.
    Uint8,
}

impl Format {
    pub fn bytes(self) -> usize {
        match self {
            Format::Bf16 => 2,
            Format::Int8 | Format::Uint8 => 1,
        }
    }
}

/// The quantization of one row: `x = (q - zero) * scale` (bf16: unused, 1 and 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowScale {
    pub scale: f32,
    pub zero: i32,
}

impl Default for RowScale {
    fn default() -> Self {
        RowScale {
            scale: 1.0,
            zero: 0,
        }
    }
}

/// Rows of a matrix in a reduced format, `k * format.bytes()` bytes each.
pub struct ConvertedRows {
    pub format: Format,
    pub bytes: Vec<u8>,
    pub scales: Vec<RowScale>,
}

impl ConvertedRows {
    /// Converts the rows of `k` values of `x`, in parallel.
    pub fn convert(x: &[f32], k: usize, format: Format) -> Self {
        let rows = x.len() / k.max(1);
        let mut bytes = vec![0u8; rows * k * format.bytes()];
        let scales = convert_rows(x, k, format, &mut bytes, k * format.bytes());
        ConvertedRows {
            format,
            bytes,
            scales,
        }
    }

    /// The values in f32 as the products see them: bf16 values, or the integers less the zero point.
    pub fn values(&self) -> Vec<f32> {
        match self.format {
            Format::Bf16 => self
                .bytes
                .chunks_exact(2)
                .map(|h| f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16))
                .collect(),
            Format::Int8 => self.bytes.iter().map(|&q| q as i8 as f32).collect(),
            Format::Uint8 => {
                let k = self.bytes.len() / self.scales.len().max(1);
                self.bytes
                    .chunks(k.max(1))
                    .zip(&self.scales)
                    .flat_map(|(row, s)| row.iter().map(move |&q| (q as i32 - s.zero) as f32))
                    .collect()
            }
        }
    }
}

/// Converts each row of `k` values of `x` into the first `k * format.bytes()` bytes of each `stride`
/// bytes of `out`, in parallel; returns the row scales.
pub fn convert_rows(
    x: &[f32],
    k: usize,
    format: Format,
    out: &mut [u8],
    stride: usize,
) -> Vec<RowScale> {
    let rows = x.len() / k.max(1);
    let mut scales = vec![RowScale::default(); rows];
    if rows == 0 || k == 0 {
        return scales;
    }
    out[..rows * stride]
        .par_chunks_mut(stride)
        .zip(x.par_chunks(k))
        .zip(scales.par_iter_mut())
        .for_each(|((out, row), scale)| {
            let out = &mut out[..k * format.bytes()];
            match format {
                Format::Bf16 => write_bf16(row, out),
                Format::Int8 => *scale = write_int8(row, out),
                Format::Uint8 => *scale = write_uint8(row, out),
            }
        });
    scales
}

/// The bf16 nearest to `x` (ties to even), as its 16 bits.
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// One row as bf16 into `out` (two little-endian bytes per value).
pub fn write_bf16(row: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512bf16() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::write_bf16(row, out) };
    }
    for (v, o) in row.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16_bits(*v).to_le_bytes());
    }
}

/// The symmetric scale of a row whose largest magnitude is `largest`, and its inverse.
fn symmetric(largest: f32) -> (RowScale, f32) {
    if largest == 0.0 || !largest.is_finite() {
        return (
            RowScale {
                scale: 0.0,
                zero: 0,
            },
            0.0,
        );
    }
    let scale = RowScale {
        scale: largest / 127.0,
        zero: 0,
    };
    (scale, 127.0 / largest)
}

/// The asymmetric scale and zero point of a row spanning `low..=high`, and the inverse scale.
fn asymmetric(low: f32, high: f32) -> (RowScale, f32) {
    let (low, high) = (low.min(0.0), high.max(0.0));
    let range = high - low;
    if range == 0.0 || !range.is_finite() {
        return (
            RowScale {
                scale: 0.0,
                zero: 0,
            },
            0.0,
        );
    }
    let inverse = 255.0 / range;
    let zero = ((-low * inverse).round_ties_even() as i32).clamp(0, 255);
    (
        RowScale {
            scale: range / 255.0,
            zero,
        },
        inverse,
    )
}

fn write_int8(row: &[f32], out: &mut [u8]) -> RowScale {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512f() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::write_int8(row, out) };
    }
    let (scale, inverse) = symmetric(row.iter().fold(0f32, |m, v| m.max(v.abs())));
    for (o, v) in out.iter_mut().zip(row) {
        *o = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
    }
    scale
}

fn write_uint8(row: &[f32], out: &mut [u8]) -> RowScale {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx512f() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::write_uint8(row, out) };
    }
    let low = row.iter().fold(0f32, |m, v| m.min(*v));
    let high = row.iter().fold(0f32, |m, v| m.max(*v));
    let (scale, inverse) = asymmetric(low, high);
    for (o, v) in out.iter_mut().zip(row) {
        *o = uint8_level(*v, inverse, scale.zero);
    }
    scale
}

fn uint8_level(v: f32, inverse: f32, zero: i32) -> u8 {
    ((v * inverse).round_ties_even() as i32 + zero).clamp(0, 255) as u8
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{asymmetric, bf16_bits, symmetric, uint8_level, RowScale};

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn write_bf16(row: &[f32], out: &mut [u8]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
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
    }

    /// Rounds to nearest even (the default MXCSR mode).
    #[inline(always)]
    unsafe fn levels(chunk: &[f32], times: __m512) -> __m512i {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe { _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(chunk.as_ptr()), times)) }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn write_int8(row: &[f32], out: &mut [u8]) -> RowScale {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let whole = row.len() / 16 * 16;
            let mut largest = _mm512_setzero_ps();
            for chunk in row[..whole].chunks_exact(16) {
                largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_loadu_ps(chunk.as_ptr())));
            }
            let largest = row[whole..]
                .iter()
                .fold(_mm512_reduce_max_ps(largest), |m, v| m.max(v.abs()));
            let (scale, inverse) = symmetric(largest);
            let times = _mm512_set1_ps(inverse);
            for (i, chunk) in row[..whole].chunks_exact(16).enumerate() {
                let q = _mm512_cvtsepi32_epi8(levels(chunk, times));
                _mm_storeu_si128(out.as_mut_ptr().add(16 * i) as *mut __m128i, q);
            }
            for (o, v) in out[whole..].iter_mut().zip(&row[whole..]) {
                *o = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
            }
            scale
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn write_uint8(row: &[f32], out: &mut [u8]) -> RowScale {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let whole = row.len() / 16 * 16;
            let (mut low, mut high) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for chunk in row[..whole].chunks_exact(16) {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                low = _mm512_min_ps(low, v);
                high = _mm512_max_ps(high, v);
            }
            let tail = &row[whole..];
            let low = tail
                .iter()
                .fold(_mm512_reduce_min_ps(low), |m, v| m.min(*v));
            let high = tail
                .iter()
                .fold(_mm512_reduce_max_ps(high), |m, v| m.max(*v));
            let (scale, inverse) = asymmetric(low, high);
            let (times, zero) = (_mm512_set1_ps(inverse), _mm512_set1_epi32(scale.zero));
            let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
            for (i, chunk) in row[..whole].chunks_exact(16).enumerate() {
                let q = _mm512_add_epi32(levels(chunk, times), zero);
                let q = _mm512_min_epi32(_mm512_max_epi32(q, floor), ceiling);
                _mm_storeu_si128(
                    out.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                );
            }
            for (o, v) in out[whole..].iter_mut().zip(tail) {
                *o = uint8_level(*v, inverse, scale.zero);
            }
            scale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..70)
            .map(|i| ((i * 37) % 23) as f32 * 0.31 - 1.2)
            .collect();
        for format in [Format::Bf16, Format::Int8, Format::Uint8] {
            let rows = ConvertedRows::convert(&x, 35, format);
            let values = rows.values();
            for (r, (row, scale)) in values.chunks(35).zip(&rows.scales).enumerate() {
                let step = match format {
                    Format::Bf16 => 0.0,
                    _ => scale.scale,
                };
                for (p, v) in row.iter().enumerate() {
                    let original = x[r * 35 + p];
                    let back = if format == Format::Bf16 {
                        *v
                    } else {
                        v * scale.scale
                    };
                    let allowed = (step / 2.0).max(original.abs() / 256.0) * 1.0001;
                    assert!(
                        (back - original).abs() <= allowed,
                        "{format:?}: {original} came back as {back}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_zero_row_quantizes_to_zero() {
        for format in [Format::Int8, Format::Uint8] {
            let rows = ConvertedRows::convert(&[0.0; 20], 20, format);
            assert!(rows.values().iter().all(|v| *v == 0.0));
        }
    }
}
