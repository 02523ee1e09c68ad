//! BLEU and chrF against sacreBLEU, BERTScore against the bert-score package (fixtures from
//! `scripts/make_metric_fixtures.py`), on a set of sentence pairs with punctuation, numbers, accents,
//! an empty hypothesis and no overlap at all.

use serde::Deserialize;

use crate::common::{fixture, minilm};
use bert::metrics::bertscore::read_baseline;
use bert::metrics::{corpus_bleu, corpus_chrf, sentence_bleu, sentence_chrf, BertScorer};

#[derive(Deserialize)]
struct Reference {
    bleu: Bleu,
    chrf: Chrf,
    bertscore: Vec<BertScoreRun>,
}

#[derive(Deserialize)]
struct Bleu {
    score: f64,
    counts: Vec<usize>,
    totals: Vec<usize>,
    precisions: Vec<f64>,
    bp: f64,
    sys_len: usize,
    ref_len: usize,
    lines: Vec<f64>,
}

#[derive(Deserialize)]
struct Chrf {
    score: f64,
    lines: Vec<f64>,
}

#[derive(Deserialize)]
struct BertScoreRun {
    model: String,
    num_layers: usize,
    idf: bool,
    baseline: bool,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
}

fn pairs() -> (Vec<String>, Vec<String>, Reference) {
    let dir = fixture("metrics");
    let lines = |name: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        text.lines().map(String::from).collect()
    };
    let reference = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    (
        lines("hypotheses.txt"),
        lines("references.txt"),
        serde_json::from_str(&reference).unwrap(),
    )
}

fn close(what: &str, ours: f64, theirs: f64, tol: f64) {
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours}, reference {theirs}"
    );
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let (hyps, refs, r) = pairs();
    let (h, rf): (Vec<&str>, Vec<&str>) = (
        hyps.iter().map(String::as_str).collect(),
        refs.iter().map(String::as_str).collect(),
    );
    let bleu = corpus_bleu(&h, &rf);
    close("BLEU", bleu.score, r.bleu.score, 1e-9);
    assert_eq!(
        (bleu.counts, bleu.totals, bleu.sys_len, bleu.ref_len),
        (r.bleu.counts, r.bleu.totals, r.bleu.sys_len, r.bleu.ref_len)
    );
    close("BP", bleu.bp, r.bleu.bp, 1e-12);
    for (ours, theirs) in bleu.precisions.iter().zip(&r.bleu.precisions) {
        close("precision", *ours, *theirs, 1e-9);
    }
    for (i, (hyp, reference)) in h.iter().zip(&rf).enumerate() {
        close(
            &format!("line {i} BLEU"),
            sentence_bleu(hyp, reference).score,
            r.bleu.lines[i],
            1e-9,
        );
        close(
            &format!("line {i} chrF"),
            sentence_chrf(hyp, reference),
            r.chrf.lines[i],
            1e-9,
        );
    }
    close("chrF", corpus_chrf(&h, &rf), r.chrf.score, 1e-9);
}

#[test]
fn bertscore_equals_the_bert_score_package() {
    let (hyps, refs, r) = pairs();
    let (h, rf): (Vec<&str>, Vec<&str>) = (
        hyps.iter().map(String::as_str).collect(),
        refs.iter().map(String::as_str).collect(),
    );
    for run in &r.bertscore {
        let dir = match run.model.as_str() {
            "tiny-base" => fixture("tiny-base"),
            _ => match minilm() {
                Some(dir) => dir,
                None => continue,
            },
        };
        let scorer = BertScorer::load(&dir, Some(run.num_layers)).unwrap();
        let mut scores = scorer.score(&h, &rf, run.idf).unwrap();
        if run.baseline {
            let baseline = read_baseline(&fixture("metrics").join("baseline.tsv"), run.num_layers);
            let baseline = baseline.unwrap();
            scores = scores.into_iter().map(|s| s.rescaled(&baseline)).collect();
        }
        let what = format!("{} layer {} idf {}", run.model, run.num_layers, run.idf);
        for (i, s) in scores.iter().enumerate() {
            close(
                &format!("{what} line {i} P"),
                s.precision,
                run.precision[i],
                1e-4,
            );
            close(&format!("{what} line {i} R"), s.recall, run.recall[i], 1e-4);
            close(&format!("{what} line {i} F"), s.f1, run.f1[i], 1e-4);
        }
    }
}
