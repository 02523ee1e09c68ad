//! The ratio margin (Artetxe and Schwenk, 2019): a pair's cosine divided by the mean cosine of each
//! side to its `k` nearest neighbours on the other side,
//! `margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)`.
//! A sentence close to everything (short, generic) gets no advantage: what counts is how much closer
//! the pair is than each side's neighbourhood.

use crate::bitext::neighbours::Neighbour;

/// Each sentence's mean cosine to its nearest neighbours on the other side.
#[derive(Debug, Clone)]
pub struct Margin {
    source: Vec<f32>,
    target: Vec<f32>,
}

impl Margin {
    /// From the source's neighbours among the targets (`forward`) and the targets' among the sources
    /// (`backward`), `k` each (or all there are).
    pub fn new(forward: &[Vec<Neighbour>], backward: &[Vec<Neighbour>]) -> Self {
        Margin {
            source: forward.iter().map(|n| mean_cosine(n)).collect(),
            target: backward.iter().map(|n| mean_cosine(n)).collect(),
        }
    }

    /// The margin of source `source` and target `target` whose cosine is `cosine`.
    pub fn score(&self, cosine: f32, source: usize, target: usize) -> f32 {
        let neighbourhood = (self.source[source] + self.target[target]) / 2.0;
        if neighbourhood <= 0.0 {
            return cosine;
        }
        cosine / neighbourhood
    }
}

fn mean_cosine(neighbours: &[Neighbour]) -> f32 {
    if neighbours.is_empty() {
        return 0.0;
    }
    neighbours.iter().map(|n| n.cosine).sum::<f32>() / neighbours.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_the_cosine_by_the_mean_of_both_neighbourhoods() {
        let n = |cosines: &[f32]| -> Vec<Neighbour> {
            (cosines.iter().enumerate())
                .map(|(row, &cosine)| Neighbour { row, cosine })
                .collect()
        };
        // Source 0's neighbours: 0.9 and 0.5 (mean 0.7); target 1's: 0.8 and 0.4 (mean 0.6).
        let margin = Margin::new(&[n(&[0.9, 0.5])], &[n(&[0.1, 0.1]), n(&[0.8, 0.4])]);
        // By hand: 0.9 / ((0.9 + 0.5) / 4 + (0.8 + 0.4) / 4) = 0.9 / 0.65.
        assert!((margin.score(0.9, 0, 1) - 0.9 / 0.65).abs() < 1e-6);
        assert!((margin.score(0.9, 0, 0) - 0.9 / 0.4).abs() < 1e-6);
    }
}
