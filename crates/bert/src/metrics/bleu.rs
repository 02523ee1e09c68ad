//! Corpus BLEU as sacreBLEU computes it by default (version 2): the `13a` tokenizer of WMT's
//! mteval-v13a, n-grams up to 4 clipped by the reference counts, the brevity penalty of the summed
//! closest reference lengths, and the `exp` smoothing of n-gram orders with no match.

use std::collections::HashMap;

use serde::Serialize;

const MAX_ORDER: usize = 4;

/// sacreBLEU's `BLEUScore`: the score (0..100) and what it is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScore {
    pub score: f64,
    /// Matching n-grams of each order, 1 to 4.
    pub counts: Vec<usize>,
    /// Hypothesis n-grams of each order.
    pub totals: Vec<usize>,
    /// `100 * counts / totals` (smoothed where nothing matched).
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

/// The `13a` tokenization: entities unescaped, punctuation and symbols split off, except periods and
/// commas inside numbers and the apostrophe.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();
    let mut spaced = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        if is_split_symbol(c) {
            spaced.extend([' ', c, ' ']);
        } else {
            spaced.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_or_comma = |c: char| c == '.' || c == ',';
    // `([^0-9])([\.,])` -> `\1 \2 `
    let spaced = substitute(
        &spaced,
        |a, b| !digit(a) && period_or_comma(b),
        |a, b| vec![a, ' ', b, ' '],
    );
    // `([\.,])([^0-9])` -> ` \1 \2`
    let spaced = substitute(
        &spaced,
        |a, b| period_or_comma(a) && !digit(b),
        |a, b| vec![' ', a, ' ', b],
    );
    // `([0-9])(-)` -> `\1 \2 `
    let spaced = substitute(
        &spaced,
        |a, b| digit(a) && b == '-',
        |a, b| vec![a, ' ', b, ' '],
    );
    let text: String = spaced.into_iter().collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first rule's class: `{|}~`, `[\]^_` and backtick, space to `&`, `(` to `+`, `:` to `@`, `/`.
fn is_split_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// A regex substitution of a two-character pattern, scanning left to right without overlaps, as
/// Python's `re.sub` does.
fn substitute(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Every n-gram of orders 1 to 4 with its count, and the number of tokens.
fn ngrams(tokens: &[&str]) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for gram in tokens.windows(n) {
            *counts
                .entry(gram.iter().map(|t| t.to_string()).collect())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus BLEU of `hypotheses` against one reference each (`references[i]` for `hypotheses[i]`).
pub fn corpus_bleu(hypotheses: &[&str], references: &[&str]) -> BleuScore {
    let (counts, totals, sys_len, ref_len) = statistics(hypotheses, references);
    bleu_from_statistics(counts, totals, sys_len, ref_len, false)
}

/// BLEU of one hypothesis, as sacreBLEU's `sentence_bleu` (orders with no n-grams left out).
pub fn sentence_bleu(hypothesis: &str, reference: &str) -> BleuScore {
    let (counts, totals, sys_len, ref_len) = statistics(&[hypothesis], &[reference]);
    bleu_from_statistics(counts, totals, sys_len, ref_len, true)
}

/// Matches and totals per order, and the summed hypothesis and reference lengths.
fn statistics(
    hypotheses: &[&str],
    references: &[&str],
) -> ([usize; MAX_ORDER], [usize; MAX_ORDER], usize, usize) {
    let (mut counts, mut totals) = ([0usize; MAX_ORDER], [0usize; MAX_ORDER]);
    let (mut sys_len, mut ref_len) = (0, 0);
    for (hypothesis, reference) in hypotheses.iter().zip(references) {
        let hypothesis = tokenize_13a(hypothesis.trim_end());
        let reference = tokenize_13a(reference.trim_end());
        let hyp_tokens: Vec<&str> = hypothesis.split_whitespace().collect();
        let ref_tokens: Vec<&str> = reference.split_whitespace().collect();
        sys_len += hyp_tokens.len();
        ref_len += ref_tokens.len();
        let reference_ngrams = ngrams(&ref_tokens);
        for (gram, count) in ngrams(&hyp_tokens) {
            let n = gram.len() - 1;
            totals[n] += count;
            counts[n] += count.min(reference_ngrams.get(&gram).copied().unwrap_or(0));
        }
    }
    (counts, totals, sys_len, ref_len)
}

/// `compute_bleu` with `exp` smoothing; `effective_order` averages only the orders that occur.
fn bleu_from_statistics(
    counts: [usize; MAX_ORDER],
    totals: [usize; MAX_ORDER],
    sys_len: usize,
    ref_len: usize,
    effective_order: bool,
) -> BleuScore {
    let bp = if sys_len >= ref_len {
        1.0
    } else if sys_len > 0 {
        (1.0 - ref_len as f64 / sys_len as f64).exp()
    } else {
        0.0
    };
    let mut precisions = vec![0.0; MAX_ORDER];
    let score = if counts.iter().all(|&c| c == 0) {
        0.0
    } else {
        let mut smooth = 1.0;
        let mut orders = MAX_ORDER;
        for n in 0..MAX_ORDER {
            if totals[n] == 0 {
                break;
            }
            if effective_order {
                orders = n + 1;
            }
            precisions[n] = if counts[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * totals[n] as f64)
            } else {
                100.0 * counts[n] as f64 / totals[n] as f64
            };
        }
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let logs: f64 = precisions[..orders].iter().map(|&p| log(p)).sum();
        bp * (logs / orders as f64).exp()
    };
    BleuScore {
        score,
        counts: counts.to_vec(),
        totals: totals.to_vec(),
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_as_mteval_13a() {
        assert_eq!(
            tokenize_13a("Hello, world! It's 3.5 km-long (really)... &amp; 1,000-2"),
            "Hello , world ! It's 3.5 km-long ( really ) . . . & 1,000 - 2"
        );
    }

    #[test]
    fn identical_corpora_score_100_and_no_overlap_scores_0() {
        let same = corpus_bleu(&["the cat sat on the mat"], &["the cat sat on the mat"]);
        assert!((same.score - 100.0).abs() < 1e-9, "{same:?}");
        let none = corpus_bleu(&["a b c d"], &["e f g h"]);
        assert_eq!(none.score, 0.0);
    }
}
