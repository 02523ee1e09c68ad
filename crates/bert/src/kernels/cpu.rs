//! What this CPU can do, and the environment switches that turn our own kernels off for comparison.
//! Every kernel asks here, so one file says which instruction sets are used and when.
//!
//! - `BERT_GEMM=candle`: Linear layers use candle's matmul and broadcast add instead of our fused op
//!   and [`crate::kernels::gemm`].
//! - `BERT_AMX=off`: bf16 and int8 products take the emulated path instead of AMX tiles.

use std::sync::OnceLock;

/// AVX-512 Foundation: the f32 gemm, the vectorised element-wise kernels, number conversions.
#[inline]
pub fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 with FMA: the element-wise kernels' 8-lane form where AVX-512 is missing (scalar code the
/// compiler vectorises inside a function compiled for these features).
#[inline]
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 DQ (64-bit integer multiplies): the vectorised random draws of dropout masks.
#[inline]
pub fn avx512dq() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 BF16: rounding f32 to bf16 in one instruction.
#[inline]
pub fn avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether Linear layers run as our fused op ([`crate::ops::linear::LinearOp`]: the bias added as the
/// product is stored, the bias gradient summed row by row) rather than as candle's matmul and
/// broadcast add, unless the environment sets `BERT_GEMM=candle` (to compare the two). The product
/// itself is our gemm with AVX-512, the `gemm` crate's (candle's) without.
pub fn linear_op_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| std::env::var("BERT_GEMM").map_or(true, |v| v != "candle"))
}

/// Whether our gemm's own blocked kernel ([`crate::kernels::gemm`]) runs the products: where the
/// CPU has AVX-512 (else the `gemm` crate's kernels are as fast), unless `BERT_GEMM=candle`.
pub fn fast_gemm_available() -> bool {
    linear_op_wanted() && avx512f()
}

/// Whether AMX tiles may be used: the CPU has them with bf16 and int8, and the environment does not
/// set `BERT_AMX=off` (to compare with the emulated path). The kernel's permission is asked for by
/// [`crate::kernels::amx::available`].
pub fn amx_wanted() -> bool {
    std::env::var("BERT_AMX").map_or(true, |v| v != "off") && cpu_has_amx()
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8.
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    let wanted = (1 << 22) | (1 << 24) | (1 << 25);
    leaf.edx & wanted == wanted
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx() -> bool {
    false
}
