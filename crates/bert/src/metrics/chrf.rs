//! Corpus chrF as sacreBLEU computes it by default (version 2): character n-grams of orders 1 to 6
//! with whitespace removed, matches counted per order over the whole corpus, precision and recall
//! averaged over the orders that occur, and their F-score with recall weighted by beta = 2.

use std::collections::HashMap;

const ORDER: usize = 6;
const BETA: f64 = 2.0;

/// Per order: hypothesis n-grams, reference n-grams, matches.
type Statistics = [[usize; 3]; ORDER];

fn char_ngrams(line: &str, n: usize) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    let starts: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
    for i in 0..starts.len().saturating_sub(n - 1) {
        let end = starts.get(i + n).copied().unwrap_or(line.len());
        *counts.entry(&line[starts[i]..end]).or_insert(0) += 1;
    }
    counts
}

fn statistics(hypothesis: &str, reference: &str) -> Statistics {
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let (hypothesis, reference) = (squeeze(hypothesis), squeeze(reference));
    let mut stats = [[0; 3]; ORDER];
    for (n, slot) in (1..=ORDER).zip(&mut stats) {
        let (hyp, reference) = (char_ngrams(&hypothesis, n), char_ngrams(&reference, n));
        let matches = hyp
            .iter()
            .map(|(gram, &count)| count.min(reference.get(gram).copied().unwrap_or(0)))
            .sum();
        let reference_count = reference.values().sum();
        // sacreBLEU counts no hypothesis n-grams of an order the reference is too short for.
        let hyp_count = if reference_count > 0 {
            hyp.values().sum()
        } else {
            0
        };
        *slot = [hyp_count, reference_count, matches];
    }
    stats
}

/// sacreBLEU's `_compute_f_score` without epsilon smoothing.
fn f_score(stats: &Statistics) -> f64 {
    let factor = BETA * BETA;
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for &[hyp, reference, matches] in stats {
        if hyp > 0 && reference > 0 {
            precision += matches as f64 / hyp as f64;
            recall += matches as f64 / reference as f64;
            orders += 1;
        }
    }
    if orders > 0 {
        precision /= orders as f64;
        recall /= orders as f64;
    }
    if precision + recall == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + factor) * precision * recall / (factor * precision + recall)
}

/// Corpus chrF (0..100) of `hypotheses` against one reference each.
pub fn corpus_chrf(hypotheses: &[&str], references: &[&str]) -> f64 {
    let mut total: Statistics = [[0; 3]; ORDER];
    for (hypothesis, reference) in hypotheses.iter().zip(references) {
        for (sum, part) in total.iter_mut().zip(statistics(hypothesis, reference)) {
            for (s, p) in sum.iter_mut().zip(part) {
                *s += p;
            }
        }
    }
    f_score(&total)
}

/// chrF of one hypothesis against its reference.
pub fn sentence_chrf(hypothesis: &str, reference: &str) -> f64 {
    f_score(&statistics(hypothesis, reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_text_scores_100_whatever_the_spaces() {
        assert!((corpus_chrf(&["le chat  noir"], &["le chat noir"]) - 100.0).abs() < 1e-9);
        assert_eq!(corpus_chrf(&["abc"], &["xyz"]), 0.0);
        assert_eq!(
            char_ngrams("été", 2).len(),
            2,
            "n-grams of characters, not bytes"
        );
    }
}
