//! Masked-LM inputs, as Google's `create_masked_lm_predictions`: 15% of the tokens (capped at
//! `max_predictions_per_seq`, at least one) are chosen, never `[CLS]`/`[SEP]`; of those 80% become
//! `[MASK]`, 10% a random vocabulary token, 10% stay. With whole-word masking, all pieces of a word are
//! chosen together. Masks are drawn from an [`Rng`] the caller seeds per instance and epoch, so each epoch
//! masks anew and a run is reproducible.

use crate::loss::IGNORE_INDEX;
use crate::pretraining::instances::PairInstance;
use crate::rng::Rng;

/// How tokens are masked.
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

/// An instance ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedInstance {
    pub input_ids: Vec<u32>,
    pub segment_ids: Vec<u32>,
    /// The original id where a token was chosen, [`IGNORE_INDEX`] elsewhere.
    pub mlm_labels: Vec<i64>,
    /// 1 when B is a random segment, 0 when it is the continuation (as `transformers` labels NSP).
    pub next_sentence_label: i64,
}

/// Chooses and replaces tokens of `instance`.
pub fn mask_instance(
    instance: &PairInstance,
    config: &MaskingConfig,
    rng: &mut Rng,
) -> MaskedInstance {
    let tokens = &instance.tokens;
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
    let mut input_ids = tokens.clone();
    let mut mlm_labels = vec![IGNORE_INDEX; tokens.len()];
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
            mlm_labels[i] = i64::from(tokens[i]);
            input_ids[i] = if rng.uniform() < 0.8 {
                config.mask_id
            } else if rng.uniform() < 0.5 {
                tokens[i]
            } else {
                config.replacement_ids[rng.below(config.replacement_ids.len())]
            };
        }
    }
    MaskedInstance {
        input_ids,
        segment_ids: instance.segment_ids.clone(),
        mlm_labels,
        next_sentence_label: i64::from(instance.is_random_next),
    }
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

    fn instance(rng: &mut Rng, len: usize) -> PairInstance {
        let mut tokens = vec![2];
        tokens.extend((0..len).map(|_| 5 + rng.below((VOCAB - 5) as usize) as u32));
        tokens.push(3);
        tokens.extend((0..len).map(|_| 5 + rng.below((VOCAB - 5) as usize) as u32));
        tokens.push(3);
        let segment_ids = (0..tokens.len()).map(|i| u32::from(i > len + 1)).collect();
        PairInstance {
            tokens,
            segment_ids,
            is_random_next: rng.uniform() < 0.5,
        }
    }

    #[test]
    fn rates_match_the_paper_on_a_large_sample() {
        let c = config(false);
        let mut rng = Rng::new(1);
        let (mut chosen, mut total, mut masked, mut kept, mut random) = (0, 0, 0, 0, 0);
        for _ in 0..5000 {
            let inst = instance(&mut rng, 30);
            let m = mask_instance(&inst, &c, &mut rng);
            let n = m.mlm_labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            assert_eq!(
                n,
                ((inst.tokens.len() as f64 * 0.15).round() as usize).min(20)
            );
            chosen += n;
            total += inst.tokens.len();
            for (i, &label) in m.mlm_labels.iter().enumerate() {
                if label == IGNORE_INDEX {
                    assert_eq!(m.input_ids[i], inst.tokens[i], "unchosen tokens stay");
                    continue;
                }
                assert!(
                    !c.special_ids.contains(&inst.tokens[i]),
                    "a special token was chosen"
                );
                assert_eq!(label, i64::from(inst.tokens[i]));
                match m.input_ids[i] {
                    4 => masked += 1,
                    id if id == inst.tokens[i] => kept += 1,
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
            let m = mask_instance(&inst, &c, &mut rng);
            for i in 1..inst.tokens.len() {
                let piece = c.is_continuation[inst.tokens[i] as usize];
                let prev_special = c.special_ids.contains(&inst.tokens[i - 1]);
                if piece && !prev_special {
                    let here = m.mlm_labels[i] != IGNORE_INDEX;
                    let before = m.mlm_labels[i - 1] != IGNORE_INDEX;
                    assert_eq!(here, before, "a word's pieces are masked together");
                }
            }
        }
    }

    #[test]
    fn the_same_seed_masks_the_same_way() {
        let c = config(false);
        let inst = instance(&mut Rng::new(9), 30);
        let a = mask_instance(&inst, &c, &mut Rng::new(5));
        let b = mask_instance(&inst, &c, &mut Rng::new(5));
        let other = mask_instance(&inst, &c, &mut Rng::new(6));
        assert_eq!(a, b);
        assert_ne!(a, other);
    }
}
