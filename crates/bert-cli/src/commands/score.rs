//! `bert score`: BLEU, chrF or BERTScore of a predictions file against a references file, one
//! sentence a line, printed as one JSON object.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::metrics::bertscore::read_baseline;
use bert::metrics::{
    corpus_bleu, corpus_chrf, sentence_bleu, sentence_chrf, BertScore, BertScorer,
};
use serde_json::{json, Value};

use crate::args::{ScoreArgs, TextMetric};

pub fn run(args: ScoreArgs) -> Result<ExitCode> {
    let references = read_lines(&args.references)?;
    let predictions = read_lines(&args.predictions)?;
    if references.len() != predictions.len() {
        bail!(
            "{} has {} lines but {} has {}: the files must be line for line",
            args.predictions.display(),
            predictions.len(),
            args.references.display(),
            references.len()
        );
    }
    let refs: Vec<&str> = references.iter().map(String::as_str).collect();
    let preds: Vec<&str> = predictions.iter().map(String::as_str).collect();
    let result = match args.metric {
        TextMetric::Bleu => bleu(&preds, &refs, args.per_line)?,
        TextMetric::Chrf => chrf(&preds, &refs, args.per_line),
        TextMetric::Bertscore => bertscore(&args, &preds, &refs)?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(String::from).collect())
}

fn bleu(preds: &[&str], refs: &[&str], per_line: bool) -> Result<Value> {
    let mut result = json!({"metric": "bleu"});
    let score = serde_json::to_value(corpus_bleu(preds, refs))?;
    result
        .as_object_mut()
        .unwrap()
        .extend(score.as_object().cloned().unwrap_or_default());
    if per_line {
        let lines: Vec<f64> = (preds.iter().zip(refs))
            .map(|(p, r)| sentence_bleu(p, r).score)
            .collect();
        result["lines"] = json!(lines);
    }
    Ok(result)
}

fn chrf(preds: &[&str], refs: &[&str], per_line: bool) -> Value {
    let mut result = json!({"metric": "chrf", "score": corpus_chrf(preds, refs)});
    if per_line {
        let lines: Vec<f64> = preds
            .iter()
            .zip(refs)
            .map(|(p, r)| sentence_chrf(p, r))
            .collect();
        result["lines"] = json!(lines);
    }
    result
}

fn bertscore(args: &ScoreArgs, preds: &[&str], refs: &[&str]) -> Result<Value> {
    let Some(model) = &args.model else {
        bail!("--metric bertscore needs --model: the BERT checkpoint whose states are compared");
    };
    let dir = bert::weights::hub::resolve_model(model, args.revision.as_deref())?;
    let scorer = BertScorer::load(&dir, args.num_layers)
        .with_context(|| format!("loading {}", dir.display()))?;
    let mut scores = scorer.score(preds, refs, args.idf)?;
    if let Some(path) = &args.baseline {
        let baseline = read_baseline(path, scorer.num_layers)?;
        scores = scores.into_iter().map(|s| s.rescaled(&baseline)).collect();
    }
    let mean = BertScore::mean(&scores);
    let mut result = json!({
        "metric": "bertscore",
        "precision": mean.precision,
        "recall": mean.recall,
        "f1": mean.f1,
        "num_layers": scorer.num_layers,
        "idf": args.idf,
    });
    if args.per_line {
        result["lines"] = json!(scores);
    }
    Ok(result)
}
