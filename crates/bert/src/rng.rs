//! A small seedable random generator (SplitMix64). candle's CPU generator cannot be seeded, and dropout
//! masks and freshly initialised head weights must be reproducible from a seed.

/// The purposes a training run draws random numbers for, each its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Instance building and shuffling, per epoch.
    Instances,
    /// Masking, per epoch: the epoch's own stream, then one generator per example.
    Masks,
    /// Held-out instances.
    EvalInstances,
    /// Held-out masks.
    EvalMasks,
    /// Dropout.
    Dropout,
    /// The order of fine-tuning examples, per epoch.
    Shuffle,
    /// The order of the batches of similar length (`group_by_length`), per epoch.
    LengthGroups,
}

/// SplitMix64: tiny, fast, and good enough for dropout masks and weight initialisation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The generator's whole state: `Rng::new(rng.state())` continues the same stream.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The generator of one purpose (`stream`) and item (`index`) under a run's seed, independent of every
    /// other (stream, index) pair and of `Rng::new(seed)`.
    pub fn stream(seed: u64, stream: Stream, index: u64) -> Self {
        Self::derived(seed, stream as u64 + 1, index)
    }

    /// A generator for one item of a stream, independent of the others: `(seed, a, b)` mixed.
    pub fn derived(seed: u64, a: u64, b: u64) -> Self {
        let mut mix = Rng::new(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let first = mix.next_u64();
        Rng::new(first ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// `n` values, each `dropped` with probability `p` and `kept` otherwise: exactly what `n` draws of
    /// `uniform() < p` give, and the generator ends where they would leave it. SplitMix64's `i`-th output
    /// depends only on its position, so the draws are computed side by side (vectorised with AVX-512).
    pub fn bernoulli(&mut self, n: usize, p: f64, dropped: f32, kept: f32) -> Vec<f32> {
        let start = self.state;
        self.state = start.wrapping_add((n as u64).wrapping_mul(GAMMA));
        // uniform() < p  <=>  (z >> 11) < p * 2^53 (both sides exact in f64)  <=>  the integer
        // (z >> 11) < ceil(p * 2^53): compared as integers, which vectorise without AVX-512.
        let limit = (p * (1u64 << 53) as f64).ceil() as u64;
        let mut out = vec![kept; n];
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx512dq() {
            // SAFETY: the CPU has AVX-512F and DQ, checked just above.
            unsafe { bernoulli_avx512(start, limit, dropped, &mut out) };
            return out;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx2_fma() {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { bernoulli_avx2(start, limit, dropped, &mut out) };
            return out;
        }
        bernoulli_into(start, limit, dropped, &mut out);
        out
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// SplitMix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sets `out[i]` to `dropped` where draw `i` after `start`, its top 53 bits, falls under `limit`.
#[inline(always)]
fn bernoulli_into(start: u64, limit: u64, dropped: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let z = mix(start.wrapping_add((i as u64 + 1).wrapping_mul(GAMMA)));
        if (z >> 11) < limit {
            *o = dropped;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn bernoulli_avx512(start: u64, limit: u64, dropped: f32, out: &mut [f32]) {
    // Compiled with AVX-512 enabled: the same loop, vectorised.
    bernoulli_into(start, limit, dropped, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bernoulli_avx2(start: u64, limit: u64, dropped: f32, out: &mut [f32]) {
    // The same loop, 4 lanes (64-bit multiplies built from 32-bit ones).
    bernoulli_into(start, limit, dropped, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_masks_are_the_scalar_draws() {
        for (n, p) in [(0, 0.1), (1, 0.5), (37, 0.1), (1000, 0.25)] {
            let mut scalar = Rng::new(99);
            let want: Vec<f32> = (0..n)
                .map(|_| if scalar.uniform() < p { 0.0 } else { 2.0 })
                .collect();
            let mut batched = Rng::new(99);
            assert_eq!(batched.bernoulli(n, p, 0.0, 2.0), want, "n {n} p {p}");
            assert_eq!(
                batched.next_u64(),
                scalar.next_u64(),
                "the stream continues alike"
            );
        }
    }

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| a.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
