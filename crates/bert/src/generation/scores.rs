//! What happens to the next-token scores before a token is chosen, as `transformers`' logits
//! processors do it: tokens that would repeat an n-gram or end the output too early are forbidden
//! (`-inf`), and for sampling the scores are tempered and cut to the top k and the top p.

use crate::generation::config::GenerationConfig;
use crate::rng::Rng;

/// The rules every decoding method applies to the scores of one sequence.
pub struct Constraints<'a> {
    config: &'a GenerationConfig,
    /// Tokens before the first generated one (the decoder's start token).
    prompt_length: usize,
}

impl<'a> Constraints<'a> {
    pub fn new(config: &'a GenerationConfig, prompt_length: usize) -> Self {
        Constraints {
            config,
            prompt_length,
        }
    }

    /// Forbids, in `scores` (one per vocabulary token), what may not follow `sequence`.
    pub fn apply(&self, sequence: &[u32], scores: &mut [f32]) {
        let n = self.config.no_repeat_ngram_size;
        if n > 0 {
            for token in repeated_ngram_ends(sequence, n) {
                if let Some(score) = scores.get_mut(token as usize) {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
        let generated = sequence.len().saturating_sub(self.prompt_length);
        if self
            .config
            .min_new_tokens
            .is_some_and(|min| generated < min)
        {
            for &eos in &self.config.eos_token_id {
                if let Some(score) = scores.get_mut(eos as usize) {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// The tokens that would complete an n-gram already in `sequence`: those following each earlier
/// occurrence of its last `n - 1` tokens.
fn repeated_ngram_ends(sequence: &[u32], n: usize) -> Vec<u32> {
    let len = sequence.len();
    if len < n {
        return Vec::new();
    }
    let prefix = &sequence[len + 1 - n..];
    sequence
        .windows(n)
        .filter(|window| &window[..n - 1] == prefix)
        .map(|window| window[n - 1])
        .collect()
}

/// `log_softmax` of one row, in f32.
pub fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = sum.ln();
    for s in scores.iter_mut() {
        *s = *s - max - log_sum;
    }
}

/// The index of the largest score (the first of equals, as `argmax` gives).
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// Sampling's transformations of the scores (temperature, top k, top p), then a draw.
pub fn sample(config: &GenerationConfig, scores: &mut [f32], rng: &mut Rng) -> u32 {
    if config.temperature != 1.0 {
        for s in scores.iter_mut() {
            *s /= config.temperature;
        }
    }
    if config.top_k > 0 && config.top_k < scores.len() {
        keep_top_k(scores, config.top_k);
    }
    if config.top_p < 1.0 {
        keep_top_p(scores, config.top_p);
    }
    draw(scores, rng)
}

/// Forbids every score below the k-th largest (equals to it are kept).
fn keep_top_k(scores: &mut [f32], k: usize) {
    let mut sorted = scores.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for s in scores.iter_mut().filter(|s| **s < threshold) {
        *s = f32::NEG_INFINITY;
    }
}

/// Keeps the most likely tokens whose probabilities sum to at least `p`: in ascending order, the
/// tokens whose cumulative probability stays at or below `1 - p` are forbidden (the last is kept).
fn keep_top_p(scores: &mut [f32], p: f32) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let probs = probabilities(scores);
    let mut cumulative = 0.0f32;
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if cumulative <= 1.0 - p && rank + 1 < order.len() {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

fn probabilities(scores: &[f32]) -> Vec<f32> {
    let mut probs = scores.to_vec();
    log_softmax(&mut probs);
    probs.iter_mut().for_each(|p| *p = p.exp());
    probs
}

/// A token drawn with probability `softmax(scores)`.
fn draw(scores: &[f32], rng: &mut Rng) -> u32 {
    let probs = probabilities(scores);
    let total: f64 = probs.iter().map(|&p| f64::from(p)).sum();
    let mut target = rng.uniform() * total;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        last = i;
        target -= f64::from(p);
        if target < 0.0 {
            return i as u32;
        }
    }
    last as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_ngram_is_forbidden_and_eos_waits_for_min_new_tokens() {
        // After `5 6 ... 5`, 6 would repeat the bigram `5 6`.
        assert_eq!(repeated_ngram_ends(&[2, 5, 6, 7, 5], 2), [6]);
        assert_eq!(repeated_ngram_ends(&[2, 5, 6, 7, 5], 3), Vec::<u32>::new());
        let config = GenerationConfig {
            min_new_tokens: Some(2),
            no_repeat_ngram_size: 2,
            eos_token_id: vec![3],
            ..Default::default()
        };
        let mut scores = vec![0.0; 8];
        Constraints::new(&config, 1).apply(&[2, 5, 6, 5], &mut scores);
        assert_eq!(scores[6], f32::NEG_INFINITY);
        assert_eq!(scores[3], 0.0, "three new tokens: the end is allowed");
        Constraints::new(&config, 1).apply(&[2, 5], &mut scores);
        assert_eq!(scores[3], f32::NEG_INFINITY);
    }

    #[test]
    fn top_k_and_top_p_keep_the_likely_tokens_and_sampling_is_seeded() {
        let mut scores = vec![1.0, 4.0, 3.0, 2.0];
        keep_top_k(&mut scores, 2);
        assert_eq!(scores, [f32::NEG_INFINITY, 4.0, 3.0, f32::NEG_INFINITY]);
        // Probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps the first two.
        let mut scores = vec![4.0, 3.0, 2.0, 1.0];
        keep_top_p(&mut scores, 0.7);
        assert!(scores[..2].iter().all(|s| s.is_finite()), "{scores:?}");
        assert!(scores[2..].iter().all(|s| s.is_infinite()), "{scores:?}");
        let config = GenerationConfig {
            do_sample: true,
            ..Default::default()
        };
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| sample(&config, &mut [0.0, 1.0, 0.5], &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert!(draws(7).iter().any(|&t| t != draws(7)[0]), "draws vary");
    }
}
