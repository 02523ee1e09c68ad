//! Bitext mining: finding the sentences of two files that translate each other, from their
//! embeddings (a cross-lingual encoder puts a sentence and its translation close together), as
//! LASER and LaBSE do it (Artetxe and Schwenk, "Margin-based Parallel Corpus Mining with
//! Multilingual Sentence Embeddings", 2019).
//!
//! - [`sentences`]: the files' lines, with their line numbers;
//! - [`neighbours`]: exact nearest neighbours by cosine, both ways;
//! - [`margin`]: the ratio margin, which corrects cosine for how crowded each side's neighbourhood is;
//! - [`mining`]: pairs from two unordered collections (best candidates both ways, one-to-one);
//! - [`monotonic`]: pairs from two documents known to be translations (in order, with gaps).
//!
//! Vectors come in as unit-length rows of one flat `f32` slice, `dim` values each.

pub mod margin;
pub mod mining;
pub mod monotonic;
pub mod neighbours;
pub mod sentences;

/// Unit vectors placed by hand for the tests: one row per angle (degrees) in the plane.
#[cfg(test)]
pub(crate) fn unit_vectors_at(angles: &[f32]) -> Vec<f32> {
    (angles.iter())
        .flat_map(|d| [d.to_radians().cos(), d.to_radians().sin()])
        .collect()
}

/// A source row and a target row found to translate each other, with their margin score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub source: usize,
    pub target: usize,
    pub score: f32,
}

/// What both ways of aligning take.
#[derive(Debug, Clone, Copy)]
pub struct AlignOptions {
    /// Neighbours whose mean cosine is each sentence's neighbourhood (LASER: 4).
    pub neighbours: usize,
    /// Pairs must score above this margin.
    pub threshold: f32,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            neighbours: 4,
            threshold: 1.06,
        }
    }
}
