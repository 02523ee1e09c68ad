//! The official SQuAD evaluation (v1.1 and v2.0 scripts): answers normalised (lower case, punctuation and
//! the articles a/an/the removed, whitespace collapsed), exact match and token-overlap F1 against the best
//! of the gold answers, in percent. An unanswerable question's gold is the empty answer. v2 reports
//! the answerable (`HasAns`) and unanswerable (`NoAns`) halves too.

use std::collections::HashMap;

use serde::Serialize;

/// SQuAD's `normalize_answer`.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punctuation: String = lower
        .chars()
        .filter(|c| !is_ascii_punctuation(*c))
        .collect();
    no_punctuation
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `string.punctuation`.
fn is_ascii_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// 1.0 when the normalised answers are equal.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

/// Token-overlap F1 of the normalised answers (1.0 if both are empty, 0.0 if only one is).
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let predicted = normalize_answer(prediction);
    let gold = normalize_answer(gold);
    let p: Vec<&str> = predicted.split_whitespace().collect();
    let g: Vec<&str> = gold.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p == g));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// One question's prediction and gold answers (empty for unanswerable).
pub struct Scored<'a> {
    pub prediction: &'a str,
    pub golds: &'a [String],
}

/// The SQuAD scores, in percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SquadReport {
    pub exact_match: f64,
    pub f1: f64,
    pub total: usize,
    #[serde(rename = "HasAns_exact", skip_serializing_if = "Option::is_none")]
    pub has_ans_exact: Option<f64>,
    #[serde(rename = "HasAns_f1", skip_serializing_if = "Option::is_none")]
    pub has_ans_f1: Option<f64>,
    #[serde(rename = "HasAns_total", skip_serializing_if = "Option::is_none")]
    pub has_ans_total: Option<usize>,
    #[serde(rename = "NoAns_exact", skip_serializing_if = "Option::is_none")]
    pub no_ans_exact: Option<f64>,
    #[serde(rename = "NoAns_f1", skip_serializing_if = "Option::is_none")]
    pub no_ans_f1: Option<f64>,
    #[serde(rename = "NoAns_total", skip_serializing_if = "Option::is_none")]
    pub no_ans_total: Option<usize>,
}

/// Scores predictions; `with_negatives` (SQuAD v2) adds the HasAns/NoAns split.
pub fn squad_report(items: &[Scored], with_negatives: bool) -> SquadReport {
    let best = |item: &Scored, metric: fn(&str, &str) -> f64| -> f64 {
        if item.golds.is_empty() {
            return metric(item.prediction, "");
        }
        item.golds
            .iter()
            .map(|g| metric(item.prediction, g))
            .fold(0.0, f64::max)
    };
    let mean = |subset: &[&Scored], metric: fn(&str, &str) -> f64| -> f64 {
        100.0 * subset.iter().map(|i| best(i, metric)).sum::<f64>() / subset.len().max(1) as f64
    };
    let all: Vec<&Scored> = items.iter().collect();
    let mut report = SquadReport {
        exact_match: mean(&all, exact_match),
        f1: mean(&all, token_f1),
        total: items.len(),
        has_ans_exact: None,
        has_ans_f1: None,
        has_ans_total: None,
        no_ans_exact: None,
        no_ans_f1: None,
        no_ans_total: None,
    };
    if with_negatives {
        let (has, no): (Vec<&Scored>, Vec<&Scored>) = all.iter().partition(|i| !i.golds.is_empty());
        if !has.is_empty() {
            report.has_ans_exact = Some(mean(&has, exact_match));
            report.has_ans_f1 = Some(mean(&has, token_f1));
            report.has_ans_total = Some(has.len());
        }
        if !no.is_empty() {
            report.no_ans_exact = Some(mean(&no, exact_match));
            report.no_ans_f1 = Some(mean(&no, token_f1));
            report.no_ans_total = Some(no.len());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_scores_follow_the_official_script() {
        assert_eq!(
            normalize_answer("The  Eiffel-Tower, in Paris!"),
            "eiffeltower in paris"
        );
        assert_eq!(exact_match("the Eiffel Tower", "Eiffel tower."), 1.0);
        // prediction "tower in paris" vs gold "eiffel tower": 1 common of 3 and 2 -> 2*(1/3*1/2)/(5/6) = 0.4
        assert!((token_f1("tower in Paris", "Eiffel Tower") - 0.4).abs() < 1e-12);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("x", ""), 0.0);
        let golds = vec!["Denver Broncos".to_string(), "Broncos".to_string()];
        let none: Vec<String> = Vec::new();
        let items = [
            Scored {
                prediction: "the Broncos",
                golds: &golds,
            },
            Scored {
                prediction: "",
                golds: &none,
            },
            Scored {
                prediction: "Carolina",
                golds: &golds,
            },
        ];
        let r = squad_report(&items, true);
        assert!((r.exact_match - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.has_ans_total, Some(2));
        assert_eq!(r.no_ans_exact, Some(100.0));
        assert_eq!(r.has_ans_exact, Some(50.0));
    }
}
