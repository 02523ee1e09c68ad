//! Entity-level precision, recall and F1 as `seqeval` computes them by default (its lenient chunking,
//! which reads IOB2, IOB1, IOE and IOBES tags alike), plus token accuracy: what NER papers and
//! `transformers`' token-classification example report.
//!
//! Sentences are joined with an `O` between them, and an entity is a (type, first, last) span of the
//! joined sequence, exactly as `seqeval.metrics.sequence_labeling.get_entities` does.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::metrics::ClassScores;

/// The scores of a tagger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityReport {
    /// Micro-averaged over entities.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Token-level accuracy.
    pub accuracy: f64,
    /// Per entity type; support counts true entities.
    pub per_type: BTreeMap<String, ClassScores>,
}

/// An entity: its type and first and last positions in the joined sequence.
type Entity = (String, usize, usize);

/// Splits a tag into its prefix letter and type, as seqeval does (`B-PER` -> `B`, `PER`; `O` -> `O`, `_`).
fn split(tag: &str) -> (char, &str) {
    let prefix = tag.chars().next().unwrap_or('O');
    let rest = &tag[prefix.len_utf8().min(tag.len())..];
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn end_of_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != kind)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// The entities of sentences of tags.
pub fn entities<S: AsRef<str>>(sentences: &[Vec<S>]) -> BTreeSet<Entity> {
    let joined: Vec<&str> = sentences
        .iter()
        .flat_map(|s| s.iter().map(AsRef::as_ref).chain(std::iter::once("O")))
        .chain(std::iter::once("O"))
        .collect();
    let mut found = BTreeSet::new();
    let (mut prev, mut prev_type, mut begin) = ('O', "_", 0);
    for (i, tag) in joined.iter().enumerate() {
        let (tag, kind) = split(tag);
        if end_of_chunk(prev, tag, prev_type, kind) {
            found.insert((prev_type.to_string(), begin, i - 1));
        }
        if start_of_chunk(prev, tag, prev_type, kind) {
            begin = i;
        }
        (prev, prev_type) = (tag, kind);
    }
    found
}

/// Scores predicted tag sequences against the true ones (same lengths, sentence by sentence).
pub fn entity_report<S: AsRef<str>>(truth: &[Vec<S>], predicted: &[Vec<S>]) -> EntityReport {
    let (true_set, predicted_set) = (entities(truth), entities(predicted));
    let mut types: BTreeSet<&str> = true_set.iter().map(|e| e.0.as_str()).collect();
    types.extend(predicted_set.iter().map(|e| e.0.as_str()));
    let count = |set: &BTreeSet<Entity>, kind: Option<&str>| {
        set.iter().filter(|e| kind.is_none_or(|k| e.0 == k)).count()
    };
    let scores = |kind: Option<&str>| {
        let correct = true_set
            .intersection(&predicted_set)
            .filter(|e| kind.is_none_or(|k| e.0 == k))
            .count();
        ClassScores::from_counts(correct, count(&predicted_set, kind), count(&true_set, kind))
    };
    let overall = scores(None);
    let (mut right, mut total) = (0usize, 0usize);
    for (t, p) in truth.iter().zip(predicted) {
        for (a, b) in t.iter().zip(p) {
            right += usize::from(a.as_ref() == b.as_ref());
            total += 1;
        }
    }
    EntityReport {
        precision: overall.precision,
        recall: overall.recall,
        f1: overall.f1,
        accuracy: right as f64 / total.max(1) as f64,
        per_type: types
            .into_iter()
            .map(|k| (k.to_string(), scores(Some(k))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// Expected values from seqeval 1.2.2 (`precision_score`, `recall_score`, `f1_score`,
    /// `accuracy_score`, `get_entities`).
    #[test]
    fn matches_seqeval_on_iob2_and_iob1() {
        let truth = vec![
            tags("B-PER I-PER O B-LOC"),
            tags("O B-ORG I-ORG I-ORG O B-MISC"),
        ];
        let predicted = vec![
            tags("B-PER I-PER O B-ORG"),
            tags("O B-ORG I-ORG O O I-MISC"),
        ];
        let r = entity_report(&truth, &predicted);
        // PER and MISC (an I- tag opens an entity) right; LOC predicted as ORG; ORG cut short.
        assert!((r.precision - 0.5).abs() < 1e-12, "{r:?}");
        assert!((r.recall - 0.5).abs() < 1e-12);
        assert!((r.f1 - 0.5).abs() < 1e-12);
        assert!((r.accuracy - 0.7).abs() < 1e-12);
        assert_eq!(r.per_type["ORG"].support, 1);
        assert_eq!(r.per_type["ORG"].precision, 0.0);

        // IOB1: I- opens an entity; B- only separates two adjacent entities of one type.
        let iob1 = vec![tags("I-PER I-PER B-PER O I-LOC I-ORG")];
        let found: Vec<Entity> = entities(&iob1).into_iter().collect();
        assert_eq!(
            found,
            vec![
                ("LOC".into(), 4, 4),
                ("ORG".into(), 5, 5),
                ("PER".into(), 0, 1),
                ("PER".into(), 2, 2)
            ]
        );
    }
}
