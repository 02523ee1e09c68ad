//! Exact nearest neighbours by cosine between two sets of unit vectors: the similarities of a block
//! of rows against every row of the other side as one matrix product, then the `k` best of each row.

use rayon::prelude::*;

use crate::kernels::gemm::{matmul, View};

/// Rows of `a` whose similarities are computed together (a block of `BLOCK x rows(b)` scores).
const BLOCK: usize = 256;

/// A neighbour: its row and its cosine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub row: usize,
    pub cosine: f32,
}

/// `a (n x dim) b^T (dim x m)`, rows `first..first + rows` of it, row-major.
pub fn similarities(a: &[f32], b: &[f32], dim: usize, first: usize, rows: usize) -> Vec<f32> {
    let m = b.len() / dim.max(1);
    let mut out = vec![0f32; rows * m];
    if rows == 0 || m == 0 || dim == 0 {
        return out;
    }
    let block = View::row_major(&a[first * dim..(first + rows) * dim], rows, dim);
    matmul(block, View::row_major(b, m, dim).t(), &mut out);
    out
}

/// For each row of `a`, its `k` nearest rows of `b` (at most all of them), best first; ties go to the
/// earlier row.
pub fn nearest(a: &[f32], b: &[f32], dim: usize, k: usize) -> Vec<Vec<Neighbour>> {
    let n = a.len() / dim.max(1);
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .flat_map_iter(|block| {
            let first = block * BLOCK;
            let rows = BLOCK.min(n - first);
            let scores = similarities(a, b, dim, first, rows);
            let m = b.len() / dim.max(1);
            (0..rows)
                .map(|r| best(&scores[r * m..(r + 1) * m], k))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `k` highest of `scores`, best first.
fn best(scores: &[f32], k: usize) -> Vec<Neighbour> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_score);
        order.truncate(k);
    }
    order.sort_by(by_score);
    (order.into_iter())
        .map(|row| Neighbour {
            row,
            cosine: scores[row],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_k_best_rows_in_order() {
        // Four 2-d unit vectors at 0, 30, 60 and 90 degrees against one at 50 degrees.
        let angle = |d: f32| [d.to_radians().cos(), d.to_radians().sin()];
        let b: Vec<f32> = [0.0, 30.0, 60.0, 90.0]
            .iter()
            .flat_map(|&d| angle(d))
            .collect();
        let a = angle(50.0).to_vec();
        let found = nearest(&a, &b, 2, 2);
        let rows: Vec<usize> = found[0].iter().map(|n| n.row).collect();
        assert_eq!(rows, [2, 1]);
        assert!((found[0][0].cosine - 10f32.to_radians().cos()).abs() < 1e-6);
        assert_eq!(nearest(&a, &b, 2, 9)[0].len(), 4);
    }
}
