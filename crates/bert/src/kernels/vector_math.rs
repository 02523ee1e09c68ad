//! The element-wise functions of the encoder (GELU and its derivative, the attention softmax) over
//! slices, with AVX-512 forms: `exp` and `erf` from libm are scalar calls, and once the matrix products
//! run on AMX these functions were a third of a bf16 forward pass. Without AVX-512, CPUs with AVX2 and
//! FMA run the same arithmetic as scalar code ([`exp`]) that the compiler vectorises in functions
//! compiled for those features.
//!
//! `exp` is Cephes' `expf` (range reduction by `ln 2`, a degree-6 polynomial, `2^n` by `vscalefps`):
//! within 2 ulp of libm. `erf` is Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7), as in the
//! scalar forms, so both paths compute the same function to f32 rounding.

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Cephes `expf`: `ln 2` in two parts (x - n ln 2 exact enough), and the polynomial of
/// `(e^r - 1 - r) / r^2`, highest power first.
const LN_2_HIGH: f32 = 0.693_359_4;
const LN_2_LOW: f32 = -2.121_944_4e-4;
const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// Abramowitz & Stegun 7.1.26: `erf(x) = 1 - t (a1 + t (a2 + ...)) e^{-x^2}`, `t = 1 / (1 + p |x|)`.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];

/// `erf`, Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7, below f32's resolution of 1 + erf).
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + ERF_P * z);
    let poly = t * (ERF_A[0] + t * (ERF_A[1] + t * (ERF_A[2] + t * (ERF_A[3] + t * ERF_A[4]))));
    let y = 1.0 - poly * (-z * z).exp();
    y.copysign(x)
}

/// `x Phi(x)`: BERT's `"gelu"`.
pub fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `d/dx (x Phi(x)) = Phi(x) + x phi(x)`.
pub fn gelu_derivative_scalar(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
    let pdf = FRAC_1_SQRT_2PI * (-0.5 * x * x).exp();
    cdf + x * pdf
}

fn has_avx512() -> bool {
    crate::kernels::cpu::avx512f()
}

fn has_avx2() -> bool {
    crate::kernels::cpu::avx2_fma()
}

/// `e^x` as the AVX-512 form computes it (Cephes `expf`), in scalar code without a libm call, so that
/// a loop of it vectorises: 0 below -87.3 (and within 0.3 above it, where `2^n` would be subnormal),
/// NaN kept.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(-87.3, 88.7); // NaN stays NaN
    let n = (clamped * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN_2_HIGH, clamped);
    let r = (-n).mul_add(LN_2_LOW, r);
    let mut p = EXP_POLYNOMIAL[0];
    for c in &EXP_POLYNOMIAL[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r + 1.0);
    // 2^n as 2^(n-1) * 2: n reaches 128, one past f32's largest power of two.
    let half = f32::from_bits(((n as i32 + 126).max(0) as u32) << 23);
    let e = y * half * 2.0;
    if x < -87.3 {
        0.0
    } else {
        e
    }
}

/// [`erf`] with the vectorisable [`exp`].
#[inline(always)]
fn erf_vectorisable(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / ERF_P.mul_add(z, 1.0);
    let mut poly = ERF_A[4];
    for a in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
        poly = poly.mul_add(t, a);
    }
    let y = (-poly * t).mul_add(exp(-z * z), 1.0);
    y.copysign(x)
}

/// `Phi(x)`, vectorisable.
#[inline(always)]
fn cdf_vectorisable(x: f32) -> f32 {
    0.5f32.mul_add(erf_vectorisable(x * FRAC_1_SQRT_2), 0.5)
}

/// `y = gelu(x)`, element by element.
pub fn gelu(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::gelu(x, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::gelu(x, y) };
    }
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_scalar(x);
    }
}

/// `x = gelu(x)`, element by element.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::gelu_in_place(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::gelu_in_place(x) };
    }
    x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
}

/// `dx = g gelu'(x)`, element by element.
pub fn gelu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dx.len() && g.len() == dx.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::gelu_backward(x, g, dx) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::gelu_backward(x, g, dx) };
    }
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        *dx = g * gelu_derivative_scalar(x);
    }
}

/// `row = softmax(scale row + mask)` in place (`mask` additive, as long as the row).
pub fn softmax_scaled_masked(row: &mut [f32], scale: f32, mask: &[f32]) {
    assert_eq!(row.len(), mask.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx512::softmax_scaled_masked(row, scale, mask) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { avx2::softmax_scaled_masked(row, scale, mask) };
    }
    softmax_body(row, scale, mask, f32::exp)
}

/// The scalar softmax, with the given `e^x` (libm's, or [`exp`] to vectorise).
#[inline(always)]
fn softmax_body(row: &mut [f32], scale: f32, mask: &[f32], exp: impl Fn(f32) -> f32) {
    let mut max = f32::NEG_INFINITY;
    for (x, m) in row.iter_mut().zip(mask) {
        *x = *x * scale + m;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= scale);
}

/// `y = e^(x - max)` for a row, returning the sum of `y` ([`exp`], vectorised where the CPU has AVX2
/// and FMA): the middle pass of a softmax.
pub fn exp_shifted(x: &[f32], max: f32, y: &mut [f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        return unsafe { avx2::exp_shifted(x, max, y) };
    }
    exp_shifted_body(x, max, y)
}

#[inline(always)]
fn exp_shifted_body(x: &[f32], max: f32, y: &mut [f32]) -> f32 {
    let mut sum = 0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp(v - max);
        sum += *o;
    }
    sum
}

/// The AVX2 + FMA forms: the scalar arithmetic above, vectorised by the compiler (8 lanes).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{cdf_vectorisable, exp, FRAC_1_SQRT_2PI};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * cdf_vectorisable(x);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_in_place(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v *= cdf_vectorisable(*v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
            *dx = g * x.mul_add(pdf, cdf_vectorisable(x));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted(x: &[f32], max: f32, y: &mut [f32]) -> f32 {
        super::exp_shifted_body(x, max, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_scaled_masked(row: &mut [f32], scale: f32, mask: &[f32]) {
        super::softmax_body(row, scale, mask, exp)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::gelu_vector;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{
        ERF_A, ERF_P, EXP_POLYNOMIAL, FRAC_1_SQRT_2, FRAC_1_SQRT_2PI, LN_2_HIGH, LN_2_LOW,
    };

    /// Sixteen lanes at a time, the tail through a lane mask.
    #[inline(always)]
    fn lanes(len: usize, mut body: impl FnMut(usize, __mmask16)) {
        let mut i = 0;
        while i + 16 <= len {
            body(i, 0xffff);
            i += 16;
        }
        if i < len {
            body(i, (1u32 << (len - i)) as __mmask16 - 1);
        }
    }

    /// `e^x` (Cephes `expf`); 0 below -87.3 (where f32 results turn subnormal).
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.3));
            let x = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
                _mm512_set1_ps(88.7),
            );
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN_2_HIGH), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN_2_LOW), r);
            let mut p = _mm512_set1_ps(EXP_POLYNOMIAL[0]);
            for c in &EXP_POLYNOMIAL[1..] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
            }
            let y = _mm512_fmadd_ps(
                p,
                _mm512_mul_ps(r, r),
                _mm512_add_ps(r, _mm512_set1_ps(1.0)),
            );
            _mm512_maskz_mov_ps(!underflow, _mm512_scalef_ps(y, n))
        }
    }

    /// `erf(x)` by Abramowitz & Stegun 7.1.26.
    #[inline(always)]
    unsafe fn erf(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let z = _mm512_abs_ps(x);
            let one = _mm512_set1_ps(1.0);
            let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), z, one));
            let mut poly = _mm512_set1_ps(ERF_A[4]);
            for a in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
                poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(a));
            }
            poly = _mm512_mul_ps(poly, t);
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
            let y = _mm512_fnmadd_ps(poly, e, one);
            // copysign: y >= 0, so or in the sign bit of x.
            let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign))
        }
    }

    /// `Phi(x) = (1 + erf(x / sqrt 2)) / 2`.
    #[inline(always)]
    unsafe fn cdf(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let half = _mm512_set1_ps(0.5);
            let e = erf(_mm512_mul_ps(x, _mm512_set1_ps(FRAC_1_SQRT_2)));
            _mm512_fmadd_ps(half, e, half)
        }
    }

    /// GELU of sixteen values, for kernels that apply it as they store a result.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_vector(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe { _mm512_mul_ps(x, cdf(x)) }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu(x: &[f32], y: &mut [f32]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            lanes(x.len(), |i, m| {
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, _mm512_mul_ps(v, cdf(v)));
            });
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_in_place(x: &mut [f32]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            lanes(x.len(), |i, m| {
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
                _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), m, _mm512_mul_ps(v, cdf(v)));
            });
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            lanes(x.len(), |i, m| {
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
                let grad = _mm512_maskz_loadu_ps(m, g.as_ptr().add(i));
                let half_sq = _mm512_mul_ps(_mm512_set1_ps(-0.5), _mm512_mul_ps(v, v));
                let pdf = _mm512_mul_ps(_mm512_set1_ps(FRAC_1_SQRT_2PI), exp(half_sq));
                let derivative = _mm512_fmadd_ps(v, pdf, cdf(v));
                _mm512_mask_storeu_ps(dx.as_mut_ptr().add(i), m, _mm512_mul_ps(grad, derivative));
            });
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_scaled_masked(row: &mut [f32], scale: f32, mask: &[f32]) {
        // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
        // for, and pointers and lengths inside the buffers they name.
        unsafe {
            let n = row.len();
            let p = row.as_mut_ptr();
            let times = _mm512_set1_ps(scale);
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            lanes(n, |i, m| {
                let v = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, p.add(i)),
                    times,
                    _mm512_maskz_loadu_ps(m, mask.as_ptr().add(i)),
                );
                _mm512_mask_storeu_ps(p.add(i), m, v);
                max = _mm512_mask_max_ps(max, m, max, v);
            });
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
            let mut sum = _mm512_setzero_ps();
            lanes(n, |i, m| {
                let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(i)), max));
                _mm512_mask_storeu_ps(p.add(i), m, e);
                sum = _mm512_mask_add_ps(sum, m, sum, e);
            });
            let scale = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            lanes(n, |i, m| {
                let v = _mm512_maskz_loadu_ps(m, p.add(i));
                _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(v, scale));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_libm_to_a_few_ulp_with_the_same_limits() {
        for i in -8800..=8800 {
            let x = i as f32 * 0.01 + 0.003;
            let (got, want) = (exp(x), x.exp());
            if x < -87.3 {
                assert_eq!(got, 0.0, "exp({x})");
            } else if x > -86.9 {
                assert!(
                    (got - want).abs() <= 4.0 * f32::EPSILON * want,
                    "exp({x}) {got} vs {want}"
                );
            }
        }
        assert!(exp(88.7).is_finite() && exp(88.7) > 3.2e38);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let mut y = vec![0f32; x.len()];
        let sum = exp_shifted(&x, 2.0, &mut y);
        let want: f32 = x.iter().map(|v| (v - 2.0).exp()).sum();
        assert!((sum - want).abs() <= 1e-5 * want, "{sum} vs {want}");
        assert!((y[36] - (x[36] - 2.0).exp()).abs() <= 1e-6 * y[36]);
    }

    #[test]
    fn vector_forms_match_the_scalar_ones() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let g: Vec<f32> = (0..1000).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let mut y = vec![0f32; x.len()];
        gelu(&x, &mut y);
        for (&x, &y) in x.iter().zip(&y) {
            let want = gelu_scalar(x);
            assert!(
                (y - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "gelu({x}) {y} vs {want}"
            );
        }
        gelu_backward(&x, &g, &mut y);
        for ((&x, &g), &y) in x.iter().zip(&g).zip(&y) {
            let want = g * gelu_derivative_scalar(x);
            assert!(
                (y - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "gelu'({x}) {y} vs {want}"
            );
        }
        for len in [1, 3, 16, 17, 128, 131] {
            let mask: Vec<f32> = (0..len)
                .map(|i| if i % 5 == 4 { f32::MIN } else { 0.0 })
                .collect();
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 11) as f32 * 0.7 - 3.0)
                .collect();
            let mut scalar = row.clone();
            softmax_scaled_masked(&mut row, 0.5, &mask);
            // The scalar form, by hand.
            let max = scalar
                .iter()
                .zip(&mask)
                .map(|(x, m)| x * 0.5 + m)
                .fold(f32::MIN, f32::max);
            let e: Vec<f32> = scalar
                .iter()
                .zip(&mask)
                .map(|(x, m)| (x * 0.5 + m - max).exp())
                .collect();
            let sum: f32 = e.iter().sum();
            scalar.iter_mut().zip(&e).for_each(|(s, e)| *s = e / sum);
            for (i, (a, b)) in row.iter().zip(&scalar).enumerate() {
                assert!((a - b).abs() <= 1e-6, "softmax[{i}] of {len}: {a} vs {b}");
                if mask[i] < 0.0 {
                    assert_eq!(*a, 0.0, "a masked position gets nothing");
                }
            }
        }
    }
}
