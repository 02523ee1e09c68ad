//! Masked-LM inputs, as Google's `create_masked_lm_predictions`: 15% of the tokens (capped at
//! `max_predictions_per_seq`, at least one) are chosen, never `[CLS]`/`[SEP]`; of those 80% become
//! `[MASK]`, 10% a random vocabulary token, 10% stay. With whole-word masking, all pieces of a word are
//! chosen together. Masks are drawn from an [`Rng`] the caller seeds, so a run is reproducible.
//! Pretraining masks its sentence pairs with it; distillation its masked-LM text.

use crate::error::{Error, Result};
use crate::loss::IGNORE_INDEX;
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// How tokens are chosen for masked-LM prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskingOptions {
    pub masked_lm_prob: f64,
    pub max_predictions_per_seq: usize,
    pub whole_word: bool,
}

impl Default for MaskingOptions {
    /// BERT's: 15% of the tokens, at most 20 a sequence, pieces chosen one by one.
    fn default() -> Self {
        MaskingOptions {
            masked_lm_prob: 0.15,
            max_predictions_per_seq: 20,
            whole_word: false,
        }
    }
}

/// How tokens are masked, over one vocabulary.
#[derive(Debug, Clone)]
pub struct MaskingConfig {
    pub masked_lm_prob: f64,
    pub max_predictions_per_seq: usize,
    pub whole_word: bool,
    pub mask_id: u32,
    /// Ids a random replacement may take: the vocabulary without special tokens.
    pub replacement_ids: Vec<u32>,
    /// Ids never chosen for prediction (`[CLS]`, `[SEP]`, `[PAD]`, ...).
    pub special_ids: Vec<u32>,
    /// For each vocabulary id, whether the token continues a word (`##` piece).
    pub is_continuation: Vec<bool>,
}

impl MaskingConfig {
    /// Masking over `tokenizer`'s vocabulary; an error when it lacks BERT's special tokens (named)
    /// or ordinary ones, or when the options are out of range.
    pub fn new(tokenizer: &Tokenizer, options: MaskingOptions) -> Result<Self> {
        let special = tokenizer.special_tokens();
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the vocabulary has no `{token}` token, which masked-LM training needs"
                ))
            })
        };
        let (cls, sep, mask, pad) = (
            id(&special.cls)?,
            id(&special.sep)?,
            id(&special.mask)?,
            id(&special.pad)?,
        );
        let unk = tokenizer.token_to_id(&special.unk);
        let vocab_size = tokenizer.vocab_size();
        let special_ids: Vec<u32> = [Some(cls), Some(sep), Some(mask), Some(pad), unk]
            .into_iter()
            .flatten()
            .collect();
        let tokens: Vec<String> = (0..vocab_size as u32)
            .map(|i| tokenizer.id_to_token(i).unwrap_or_default())
            .collect();
        let config = MaskingConfig {
            masked_lm_prob: options.masked_lm_prob,
            max_predictions_per_seq: options.max_predictions_per_seq,
            whole_word: options.whole_word,
            mask_id: mask,
            replacement_ids: (0..vocab_size as u32)
                .filter(|i| !special_ids.contains(i) && !is_bracketed(&tokens[*i as usize]))
                .collect(),
            is_continuation: tokens.iter().map(|t| t.starts_with("##")).collect(),
            special_ids,
        };
        if config.replacement_ids.is_empty() {
            return Err(Error::InvalidInput(
                "the vocabulary has no ordinary tokens to train on".into(),
            ));
        }
        if !(config.masked_lm_prob > 0.0 && config.masked_lm_prob <= 1.0)
            || config.max_predictions_per_seq == 0
        {
            return Err(Error::InvalidInput(
                "--masked-lm-prob must be in (0, 1] and --max-predictions-per-seq at least 1"
                    .into(),
            ));
        }
        Ok(config)
    }
}

/// Added tokens such as `[unused0]` are never random replacements.
fn is_bracketed(token: &str) -> bool {
    token.starts_with('[') && token.ends_with(']')
}

/// A sequence with some tokens chosen for prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Masked {
    pub input_ids: Vec<u32>,
    /// The original id where a token was chosen, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

/// Chooses and replaces tokens of `tokens`.
pub fn mask_tokens(tokens: &[u32], config: &MaskingConfig, rng: &mut Rng) -> Masked {
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    for (i, &id) in tokens.iter().enumerate() {
        if config.special_ids.contains(&id) {
            continue;
        }
        let continues = config
            .is_continuation
            .get(id as usize)
            .copied()
            .unwrap_or(false);
        match candidates.last_mut() {
            Some(word) if config.whole_word && continues && word.last() == Some(&(i - 1)) => {
                word.push(i)
            }
            _ => candidates.push(vec![i]),
        }
    }
    rng.shuffle(&mut candidates);
    // Python 3's `round`, which Google's script uses: halves go to the even neighbour.
    let wanted = ((tokens.len() as f64 * config.masked_lm_prob).round_ties_even() as usize)
        .max(1)
        .min(config.max_predictions_per_seq);
    let mut input_ids = tokens.to_vec();
    let mut labels = vec![IGNORE_INDEX; tokens.len()];
    let mut chosen = 0;
    for word in candidates {
        if chosen >= wanted {
            break;
        }
        if chosen + word.len() > wanted {
            continue;
        }
        for i in word {
            chosen += 1;
            labels[i] = i64::from(tokens[i]);
            input_ids[i] = if rng.uniform() < 0.8 {
                config.mask_id
            } else if rng.uniform() < 0.5 {
                tokens[i]
            } else {
                config.replacement_ids[rng.below(config.replacement_ids.len())]
            };
        }
    }
    Masked { input_ids, labels }
}

/// The chosen tokens of a padded batch whose rows hold `labels` (then padding to `t`): their
/// positions in the flattened (B*T) tokens and their original ids.
pub fn chosen_positions<'a>(
    labels: impl IntoIterator<Item = &'a [i64]>,
    t: usize,
) -> (Vec<u32>, Vec<i64>) {
    (labels.into_iter().enumerate())
        .flat_map(|(row, labels)| {
            (labels.iter().enumerate())
                .filter(|(_, &l)| l != IGNORE_INDEX)
                .map(move |(i, &l)| ((row * t + i) as u32, l))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: u32 = 1000;

    fn config(whole_word: bool) -> MaskingConfig {
        MaskingConfig {
            masked_lm_prob: 0.15,
            max_predictions_per_seq: 20,
            whole_word,
            mask_id: 4,
            replacement_ids: (5..VOCAB).collect(),
            special_ids: vec![0, 1, 2, 3, 4],
            // Odd ids are `##` pieces.
            is_continuation: (0..VOCAB).map(|i| i >= 5 && i % 2 == 1).collect(),
        }
    }

    /// `[CLS] A [SEP] B [SEP]` with `len` random ordinary tokens in each segment.
    fn instance(rng: &mut Rng, len: usize) -> Vec<u32> {
        let mut tokens = vec![2];
        tokens.extend((0..len).map(|_| 5 + rng.below((VOCAB - 5) as usize) as u32));
        tokens.push(3);
        tokens.extend((0..len).map(|_| 5 + rng.below((VOCAB - 5) as usize) as u32));
        tokens.push(3);
        tokens
    }

    #[test]
    fn rates_match_the_paper_on_a_large_sample() {
        let c = config(false);
        let mut rng = Rng::new(1);
        let (mut chosen, mut total, mut masked, mut kept, mut random) = (0, 0, 0, 0, 0);
        for _ in 0..5000 {
            let inst = instance(&mut rng, 30);
            let m = mask_tokens(&inst, &c, &mut rng);
            let n = m.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            assert_eq!(n, ((inst.len() as f64 * 0.15).round() as usize).min(20));
            chosen += n;
            total += inst.len();
            for (i, &label) in m.labels.iter().enumerate() {
                if label == IGNORE_INDEX {
                    assert_eq!(m.input_ids[i], inst[i], "unchosen tokens stay");
                    continue;
                }
                assert!(
                    !c.special_ids.contains(&inst[i]),
                    "a special token was chosen"
                );
                assert_eq!(label, i64::from(inst[i]));
                match m.input_ids[i] {
                    4 => masked += 1,
                    id if id == inst[i] => kept += 1,
                    id => {
                        assert!(
                            !c.special_ids.contains(&id),
                            "random replacement is never special"
                        );
                        random += 1
                    }
                }
            }
        }
        let rate = |x: usize| x as f64 / chosen as f64;
        assert!((chosen as f64 / total as f64 - 0.15).abs() < 0.01);
        assert!((rate(masked) - 0.8).abs() < 0.01, "mask {}", rate(masked));
        assert!((rate(kept) - 0.1).abs() < 0.01, "kept {}", rate(kept));
        assert!((rate(random) - 0.1).abs() < 0.01, "random {}", rate(random));
    }

    #[test]
    fn whole_word_masking_takes_every_piece() {
        let c = config(true);
        let mut rng = Rng::new(2);
        for _ in 0..500 {
            let inst = instance(&mut rng, 40);
            let m = mask_tokens(&inst, &c, &mut rng);
            for i in 1..inst.len() {
                let piece = c.is_continuation[inst[i] as usize];
                let prev_special = c.special_ids.contains(&inst[i - 1]);
                if piece && !prev_special {
                    let here = m.labels[i] != IGNORE_INDEX;
                    let before = m.labels[i - 1] != IGNORE_INDEX;
                    assert_eq!(here, before, "a word's pieces are masked together");
                }
            }
        }
    }

    #[test]
    fn the_same_seed_masks_the_same_way() {
        let c = config(false);
        let inst = instance(&mut Rng::new(9), 30);
        let a = mask_tokens(&inst, &c, &mut Rng::new(5));
        let b = mask_tokens(&inst, &c, &mut Rng::new(5));
        let other = mask_tokens(&inst, &c, &mut Rng::new(6));
        assert_eq!(a, b);
        assert_ne!(a, other);
    }
}
