//! Extractive question answering as a fine-tuning task, the way `transformers`' `run_qa.py` does it:
//! each question is paired with windows of its context (`--max-length` tokens, `--doc-stride` shared by
//! neighbours); a window is labelled with the answer's first and last tokens, or with `[CLS]` when the
//! answer is not inside it (or there is none). Evaluation scores every pair of the `n_best` best starts
//! and ends over every window, keeps spans of at most `max_answer_length` tokens inside the context,
//! predicts the best span's text (or nothing, for SQuAD v2, when the `[CLS]` score beats it by more than
//! the threshold), and reports the official SQuAD exact match and F1.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::finetune::squad::{QaExample, SquadSet};
use crate::finetune::trainer::FinetuneTask;
use crate::loss::span_loss;
use crate::metrics::squad::{squad_report, Scored};
use crate::model::{BertForQuestionAnswering, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};

/// Span decoding settings (`transformers`' defaults: 20, 30, 0.0).
#[derive(Debug, Clone, Copy)]
pub struct SpanOptions {
    pub n_best_size: usize,
    pub max_answer_length: usize,
    pub null_score_diff_threshold: f64,
}

impl Default for SpanOptions {
    fn default() -> Self {
        SpanOptions {
            n_best_size: 20,
            max_answer_length: 30,
            null_score_diff_threshold: 0.0,
        }
    }
}

/// One window of one question's context.
#[derive(Debug, Clone)]
pub struct Feature {
    pub example: usize,
    pub encoding: Encoding,
    /// Character span of each token in the context, `None` outside the context.
    pub context_offsets: Vec<Option<(usize, usize)>>,
    /// The answer's first and last token, or (0, 0): `[CLS]`.
    pub start: usize,
    pub end: usize,
}

/// Cuts each example into windows and labels them.
pub fn features(examples: &[QaExample], tokenizer: &Tokenizer) -> Result<Vec<Feature>> {
    let mut out = Vec::new();
    for (index, example) in examples.iter().enumerate() {
        let windows = tokenizer
            .encode_pair_windows(example.question.trim_start(), &example.context)
            .map_err(|e| Error::InvalidInput(format!("question {}: {e}", example.id)))?;
        for encoding in windows {
            let context_offsets: Vec<Option<(usize, usize)>> = (0..encoding.ids.len())
                .map(|i| {
                    (encoding.type_ids[i] == 1 && encoding.special_tokens_mask[i] == 0)
                        .then_some(encoding.offsets[i])
                })
                .collect();
            let (start, end) = label(&context_offsets, example.answers.first());
            out.push(Feature {
                example: index,
                encoding,
                context_offsets,
                start,
                end,
            });
        }
    }
    Ok(out)
}

/// The answer's first and last token in this window, or (0, 0) when it is not wholly inside.
fn label(
    offsets: &[Option<(usize, usize)>],
    answer: Option<&(String, usize, usize)>,
) -> (usize, usize) {
    let Some(&(_, start_char, end_char)) = answer else {
        return (0, 0);
    };
    let context: Vec<usize> = (0..offsets.len())
        .filter(|&i| offsets[i].is_some())
        .collect();
    let (Some(&first), Some(&last)) = (context.first(), context.last()) else {
        return (0, 0);
    };
    let span = |i: usize| offsets[i].unwrap_or((0, 0));
    if span(first).0 > start_char || span(last).1 < end_char {
        return (0, 0);
    }
    let start = context
        .iter()
        .copied()
        .take_while(|&i| span(i).0 <= start_char)
        .last()
        .unwrap_or(first);
    let end = context
        .iter()
        .rev()
        .copied()
        .take_while(|&i| span(i).1 >= end_char)
        .last()
        .unwrap_or(last);
    (start, end)
}

/// A question-answering head with its training and evaluation sets.
pub struct QuestionAnsweringTask {
    pub model: BertForQuestionAnswering,
    pub train: Vec<Feature>,
    pub eval: Option<(SquadSet, Vec<Feature>)>,
    pub spans: SpanOptions,
    pub pad_id: u32,
}

fn batch(features: &[&Feature], pad_id: u32) -> Result<(Batch, Tensor, Tensor, usize)> {
    let device = Device::Cpu;
    let encodings: Vec<Encoding> = features.iter().map(|f| f.encoding.clone()).collect();
    let tokens = encodings.iter().map(|e| e.ids.len()).sum();
    let batch = Batch::from_encodings(&encodings, pad_id, &device)?;
    let starts: Vec<i64> = features.iter().map(|f| f.start as i64).collect();
    let ends: Vec<i64> = features.iter().map(|f| f.end as i64).collect();
    Ok((
        batch,
        Tensor::new(starts, &device)?,
        Tensor::new(ends, &device)?,
        tokens,
    ))
}

impl FinetuneTask for QuestionAnsweringTask {
    fn architecture(&self) -> &'static str {
        "BertForQuestionAnswering"
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        let picked: Vec<&Feature> = indices.iter().map(|&i| &self.train[i]).collect();
        let (batch, starts, ends, tokens) = batch(&picked, self.pad_id)?;
        let out = self.model.forward(&batch, mode)?;
        Ok(TrainLoss {
            loss: span_loss(&out.start_logits, &out.end_logits, &starts, &ends)?,
            tokens,
        })
    }

    fn eval_len(&self) -> usize {
        self.eval.as_ref().map_or(0, |(_, features)| features.len())
    }

    /// Rows: each window's start logits, then its end logits.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some((_, features)) = &self.eval else {
            return Ok(EvalBatch::default());
        };
        let picked: Vec<&Feature> = indices.iter().map(|&i| &features[i]).collect();
        let (batch, starts, ends, _) = batch(&picked, self.pad_id)?;
        let out = self.model.forward(&batch, &Mode::Eval)?;
        let loss = span_loss(&out.start_logits, &out.end_logits, &starts, &ends)?;
        let s: Vec<Vec<f32>> = out.start_logits.to_vec2()?;
        let e: Vec<Vec<f32>> = out.end_logits.to_vec2()?;
        Ok(EvalBatch {
            rows: s.into_iter().zip(e).map(|(s, e)| [s, e].concat()).collect(),
            loss_sum: f64::from(loss.to_scalar::<f32>()?) * indices.len() as f64,
            loss_terms: indices.len(),
            ..Default::default()
        })
    }

    fn score(&self, rows: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let Some((set, features)) = &self.eval else {
            return Ok(Map::new());
        };
        let logits: Vec<(Vec<f32>, Vec<f32>)> = rows
            .into_iter()
            .map(|mut row| {
                let end = row.split_off(row.len() / 2);
                (row, end)
            })
            .collect();
        let predictions = predict(set, features, &logits, &self.spans);
        let scored: Vec<Scored> = set
            .examples
            .iter()
            .map(|ex| Scored {
                prediction: predictions.get(&ex.id).map_or("", String::as_str),
                golds: &ex.gold_texts,
            })
            .collect();
        let report = squad_report(&scored, set.with_negatives);
        let mut metrics = Map::new();
        metrics.insert("loss".into(), loss.into());
        if let Value::Object(m) =
            serde_json::to_value(report).map_err(|e| Error::Training(e.to_string()))?
        {
            metrics.extend(m);
        }
        Ok(metrics)
    }
}

/// The indices of the `n` largest values, largest first.
fn top_indices(values: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order.truncate(n);
    order
}

/// The predicted answer text of each example (by id), from the start and end logits of its features.
pub fn predict(
    set: &SquadSet,
    features: &[Feature],
    logits: &[(Vec<f32>, Vec<f32>)],
    spans: &SpanOptions,
) -> HashMap<String, String> {
    let mut by_example: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, f) in features.iter().enumerate() {
        by_example.entry(f.example).or_default().push(i);
    }
    let mut predictions = HashMap::new();
    for (index, example) in set.examples.iter().enumerate() {
        let mut null_score = f32::INFINITY;
        let mut best: Option<(f32, usize, usize)> = None; // score, first char, end char
        for &fi in by_example.get(&index).map_or(&[][..], Vec::as_slice) {
            let (starts, ends) = &logits[fi];
            let offsets = &features[fi].context_offsets;
            let n = offsets.len().min(starts.len());
            null_score = null_score.min(starts[0] + ends[0]);
            for &s in &top_indices(&starts[..n], spans.n_best_size) {
                for &e in &top_indices(&ends[..n], spans.n_best_size) {
                    let (Some(first), Some(last)) = (offsets[s], offsets[e]) else {
                        continue;
                    };
                    if e < s || e - s + 1 > spans.max_answer_length {
                        continue;
                    }
                    let score = starts[s] + ends[e];
                    if best.is_none_or(|(b, _, _)| score > b) {
                        best = Some((score, first.0, last.1));
                    }
                }
            }
        }
        let text = match best {
            Some((score, from, to)) => {
                let answer: String = example.context.chars().skip(from).take(to - from).collect();
                let abstain = set.with_negatives
                    && f64::from(null_score - score) > spans.null_score_diff_threshold;
                if abstain {
                    String::new()
                } else {
                    answer
                }
            }
            None => String::new(),
        };
        predictions.insert(example.id.clone(), text);
    }
    predictions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_answer_tokens_or_cls() {
        // [CLS] q [SEP] w0 w1 w2 [SEP] with context words at chars 0-3, 4-9, 10-12
        let offsets = vec![
            None,
            None,
            None,
            Some((0, 3)),
            Some((4, 9)),
            Some((10, 12)),
            None,
        ];
        assert_eq!(label(&offsets, Some(&("x".into(), 4, 9))), (4, 4));
        assert_eq!(label(&offsets, Some(&("x".into(), 5, 12))), (4, 5));
        assert_eq!(label(&offsets, Some(&("x".into(), 10, 20))), (0, 0));
        assert_eq!(label(&offsets, None), (0, 0));
    }
}
