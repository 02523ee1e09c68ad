//! Exact nearest neighbours by cosine: every stored vector is unit length, so the score is a dot
//! product. Rows are scanned in parallel blocks (rayon), each keeping its own top k, with AVX-512
//! dot products where the CPU has them; the scan is bound by memory bandwidth, not arithmetic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::kernels::gemm::dot;

/// A row and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// Ordered by score (then by earlier row), for the heaps.
#[derive(PartialEq)]
struct Ranked(Hit);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .score
            .total_cmp(&other.0.score)
            .then_with(|| other.0.row.cmp(&self.0.row))
    }
}

/// Rows per parallel block.
const BLOCK: usize = 8192;

/// The `k` rows of `vectors` (row-major, `dim` wide) with the highest dot product with `query`,
/// best first; ties go to the earlier row.
pub fn top_k(vectors: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
    assert_eq!(query.len(), dim, "query width");
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let rows = vectors.len() / dim;
    let blocks: Vec<BinaryHeap<Reverse<Ranked>>> = (0..rows.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let first = b * BLOCK;
            let last = (first + BLOCK).min(rows);
            let mut heap = BinaryHeap::with_capacity(k + 1);
            for row in first..last {
                let score = dot(&vectors[row * dim..(row + 1) * dim], query);
                keep(&mut heap, Hit { row, score }, k);
            }
            heap
        })
        .collect();
    let mut all = BinaryHeap::with_capacity(k + 1);
    for hit in blocks.into_iter().flatten() {
        keep(&mut all, hit.0 .0, k);
    }
    let mut hits: Vec<Hit> = all.into_iter().map(|r| r.0 .0).collect();
    hits.sort_by_key(|h| Reverse(Ranked(*h)));
    hits
}

/// Adds `hit` to a min-heap of the best `k`.
fn keep(heap: &mut BinaryHeap<Reverse<Ranked>>, hit: Hit, k: usize) {
    if heap.len() < k {
        heap.push(Reverse(Ranked(hit)));
    } else if heap.peek().is_some_and(|worst| Ranked(hit) > worst.0) {
        heap.pop();
        heap.push(Reverse(Ranked(hit)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_equals_sorting_every_score() {
        let (rows, dim) = (20_000, 37);
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let vectors: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        let mut all: Vec<Hit> = (0..rows)
            .map(|row| Hit {
                row,
                score: crate::kernels::gemm::dot_portable(
                    &vectors[row * dim..(row + 1) * dim],
                    &query,
                ),
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        let hits = top_k(&vectors, dim, &query, 10);
        let rows_of = |h: &[Hit]| h.iter().map(|h| h.row).collect::<Vec<_>>();
        assert_eq!(rows_of(&hits), rows_of(&all[..10]));
        for (h, a) in hits.iter().zip(&all) {
            assert!((h.score - a.score).abs() < 1e-5);
        }
        assert_eq!(
            top_k(&vectors, dim, &query, rows + 5).len(),
            rows,
            "k past the rows"
        );
        assert!(top_k(&[], dim, &query, 3).is_empty());
    }

    #[test]
    fn ties_go_to_the_earlier_row() {
        let vectors = [1.0, 0.0, 0.5, 0.5, 1.0, 0.0];
        let hits = top_k(&vectors, 2, &[1.0, 0.0], 2);
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), vec![0, 2]);
    }
}
