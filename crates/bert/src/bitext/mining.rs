//! Mining pairs from two collections in no particular order: each source sentence's best target by
//! margin among its nearest neighbours, and each target's best source among its own; all of these
//! candidates, best first, are kept one-to-one (a sentence already paired is skipped) while their
//! margin is above the threshold (LASER's "max" retrieval).

use crate::bitext::margin::Margin;
use crate::bitext::neighbours::{nearest, Neighbour};
use crate::bitext::{AlignOptions, Pair};

/// Pairs of rows of `source` and `target` (unit vectors, `dim` wide) by margin, one-to-one, best
/// first.
pub fn mine(source: &[f32], target: &[f32], dim: usize, options: &AlignOptions) -> Vec<Pair> {
    let k = options.neighbours.max(1);
    let forward = nearest(source, target, dim, k);
    let backward = nearest(target, source, dim, k);
    let margin = Margin::new(&forward, &backward);
    let best = |neighbours: &[Neighbour], pair: &dyn Fn(&Neighbour) -> (usize, usize)| {
        (neighbours.iter())
            .map(|n| {
                let (s, t) = pair(n);
                Pair {
                    source: s,
                    target: t,
                    score: margin.score(n.cosine, s, t),
                }
            })
            .max_by(|a, b| a.score.total_cmp(&b.score))
    };
    let mut candidates: Vec<Pair> = (forward.iter().enumerate())
        .filter_map(|(s, n)| best(n, &|n| (s, n.row)))
        .chain((backward.iter().enumerate()).filter_map(|(t, n)| best(n, &|n| (n.row, t))))
        .collect();
    candidates.sort_by(|a, b| {
        (b.score.total_cmp(&a.score))
            .then(a.source.cmp(&b.source))
            .then(a.target.cmp(&b.target))
    });
    let mut source_taken = vec![false; forward.len()];
    let mut target_taken = vec![false; backward.len()];
    let mut pairs = Vec::new();
    for pair in candidates {
        if pair.score <= options.threshold {
            break;
        }
        if source_taken[pair.source] || target_taken[pair.target] {
            continue;
        }
        source_taken[pair.source] = true;
        target_taken[pair.target] = true;
        pairs.push(pair);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitext::unit_vectors_at as at;

    #[test]
    fn pairs_each_sentence_with_its_translation_one_to_one() {
        // Targets are the sources shuffled and turned by 2 degrees; one extra target at 200 degrees.
        let source = at(&[0.0, 40.0, 80.0, 120.0]);
        let target = at(&[122.0, 2.0, 200.0, 82.0, 42.0]);
        let options = AlignOptions {
            neighbours: 2,
            threshold: 1.0,
        };
        let mut pairs = mine(&source, &target, 2, &options);
        pairs.sort_by_key(|p| p.source);
        let found: Vec<(usize, usize)> = pairs.iter().map(|p| (p.source, p.target)).collect();
        assert_eq!(found, [(0, 1), (1, 4), (2, 3), (3, 0)]);
        assert!(pairs.iter().all(|p| p.score > 1.0));
    }

    #[test]
    fn keeps_nothing_at_or_under_the_threshold() {
        let source = at(&[0.0, 90.0]);
        let target = at(&[1.0, 91.0]);
        let strict = AlignOptions {
            neighbours: 2,
            threshold: 10.0,
        };
        assert!(mine(&source, &target, 2, &strict).is_empty());
    }
}
