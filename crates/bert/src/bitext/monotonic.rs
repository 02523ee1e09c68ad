//! Aligning two documents known to be translations of each other: the pairs keep the documents'
//! order (source `i` before `i'` means target `j` before `j'`), and sentences may go unpaired (a
//! sentence split in two, or missing from one side). Among all such alignments, the one whose
//! pairs' margins, less the threshold, add up to the most (dynamic programming over the two
//! documents, `rows(source) x rows(target)` steps).

use crate::bitext::margin::Margin;
use crate::bitext::neighbours::{nearest, similarities};
use crate::bitext::{AlignOptions, Pair};
use crate::error::{Error, Result};

/// The most pairs of sentences aligned in one call: the table of moves holds one byte per pair.
pub const MAX_CELLS: usize = 1 << 30;

/// What the best alignment of a prefix did last.
#[derive(Clone, Copy, PartialEq)]
enum Move {
    SkipSource,
    SkipTarget,
    Pair,
}

/// The best monotonic one-to-one alignment of `source` and `target` (unit vectors, `dim` wide), in
/// document order; only pairs with a margin above the threshold.
pub fn align_in_order(
    source: &[f32],
    target: &[f32],
    dim: usize,
    options: &AlignOptions,
) -> Result<Vec<Pair>> {
    let (n, m) = (source.len() / dim.max(1), target.len() / dim.max(1));
    if n.saturating_mul(m) > MAX_CELLS {
        return Err(Error::InvalidInput(format!(
            "{n} x {m} sentences are too many to align in order at once (at most {MAX_CELLS} \
             pairs): cut the documents into parts (chapters) and align those"
        )));
    }
    let k = options.neighbours.max(1);
    let margin = Margin::new(
        &nearest(source, target, dim, k),
        &nearest(target, source, dim, k),
    );
    let cosines = similarities(source, target, dim, 0, n); // n x m
    let gain = |i: usize, j: usize| margin.score(cosines[i * m + j], i, j) - options.threshold;
    // current[j]: the best total over source[..=i] and target[..j]; previous[j] the same for the
    // rows before i. A move per cell, to walk the best alignment back.
    let mut moves = vec![Move::SkipSource; n * m];
    let mut previous = vec![0f32; m + 1];
    let mut current = vec![0f32; m + 1];
    for i in 0..n {
        current[0] = 0.0;
        for j in 0..m {
            let g = gain(i, j);
            let (mut total, mut step) = (previous[j + 1], Move::SkipSource);
            if current[j] > total {
                (total, step) = (current[j], Move::SkipTarget);
            }
            if g > 0.0 && previous[j] + g > total {
                (total, step) = (previous[j] + g, Move::Pair);
            }
            current[j + 1] = total;
            moves[i * m + j] = step;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        match moves[(i - 1) * m + (j - 1)] {
            Move::Pair => {
                let score = margin.score(cosines[(i - 1) * m + (j - 1)], i - 1, j - 1);
                pairs.push(Pair {
                    source: i - 1,
                    target: j - 1,
                    score,
                });
                (i, j) = (i - 1, j - 1);
            }
            Move::SkipSource => i -= 1,
            Move::SkipTarget => j -= 1,
        }
    }
    pairs.reverse();
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitext::unit_vectors_at as at;

    #[test]
    fn keeps_the_order_and_skips_what_has_no_translation() {
        // The target lacks the source's third sentence and has an extra one after the first.
        let source = at(&[0.0, 60.0, 120.0, 180.0, 240.0]);
        let target = at(&[2.0, 300.0, 62.0, 182.0, 242.0]);
        let options = AlignOptions {
            neighbours: 2,
            threshold: 1.0,
        };
        let pairs = align_in_order(&source, &target, 2, &options).unwrap();
        let found: Vec<(usize, usize)> = pairs.iter().map(|p| (p.source, p.target)).collect();
        assert_eq!(found, [(0, 0), (1, 2), (3, 3), (4, 4)]);
    }

    #[test]
    fn never_crosses_even_for_a_better_score() {
        // The translations are in crossed order (source 0 is target 1, source 1 is target 0): an
        // alignment in order can keep only one of the two pairs.
        let source = at(&[0.0, 90.0]);
        let target = at(&[91.0, 1.0]);
        let options = AlignOptions {
            neighbours: 1,
            threshold: 0.5,
        };
        let pairs = align_in_order(&source, &target, 2, &options).unwrap();
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert!(pairs.windows(2).all(|w| w[0].target < w[1].target));
    }
}
