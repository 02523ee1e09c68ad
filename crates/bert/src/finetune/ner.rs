//! Token classification (NER, slot filling) as a fine-tuning task. Data comes as CoNLL (a token per line,
//! its tag in the last column, a blank line between sentences, `-DOCSTART-` lines skipped) or as JSON
//! Lines `{"tokens": [...], "tags": [...]}` (`ner_tags` also read). Each word's tag goes on its first
//! sub-token; the other sub-tokens and the special tokens are left out of the loss (-100), as
//! `transformers`' token-classification example does. Evaluation maps predictions back to words and
//! scores them with seqeval's entity-level precision, recall and F1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::error::{read_to_string, Error, Result};
use crate::finetune::table::json_objects;
use crate::finetune::trainer::FinetuneTask;
use crate::loss::{token_cross_entropy, IGNORE_INDEX};
use crate::metrics::entity_report;
use crate::model::{BertForTokenClassification, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};

/// One sentence: its words and their tags, and where it starts in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSentence {
    pub line: usize,
    pub words: Vec<String>,
    pub tags: Vec<String>,
}

/// Reads a CoNLL file, or JSON Lines when the name ends in `.jsonl`/`.json`.
pub fn read_tagged(path: &Path) -> Result<Vec<TaggedSentence>> {
    let text = read_to_string(path)?;
    let sentences = if is_json_lines(path) {
        read_json_lines(path, &text)?
    } else {
        read_conll(path, &text)?
    };
    if sentences.is_empty() {
        return Err(Error::data(path, 0, "the file holds no sentences"));
    }
    Ok(sentences)
}

fn read_conll(path: &Path, text: &str) -> Result<Vec<TaggedSentence>> {
    let mut sentences = Vec::new();
    let mut current = TaggedSentence {
        line: 1,
        words: Vec::new(),
        tags: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "-DOCSTART-" {
            let next = TaggedSentence {
                line: index + 2,
                words: Vec::new(),
                tags: Vec::new(),
            };
            let done = std::mem::replace(&mut current, next);
            if !done.words.is_empty() {
                sentences.push(done);
            }
            continue;
        }
        if fields.len() < 2 {
            return Err(Error::data(
                path,
                index + 1,
                format!("`{line}`: expected a token and its tag (at least two columns)"),
            ));
        }
        current.words.push(fields[0].to_string());
        current.tags.push(fields[fields.len() - 1].to_string());
    }
    if !current.words.is_empty() {
        sentences.push(current);
    }
    Ok(sentences)
}

fn read_json_lines(path: &Path, text: &str) -> Result<Vec<TaggedSentence>> {
    let mut sentences = Vec::new();
    for object in json_objects(path, text) {
        let (line, object) = object?;
        let error = |message: String| Error::data(path, line, message);
        // Lists of strings; numbered tags (a datasets export) would score as no entities at all.
        let list = |key: &str| string_list(&object, key).map(|r| r.map_err(error));
        let words = list("tokens").ok_or_else(|| error("no `tokens` list".into()))??;
        let tags = list("tags")
            .or_else(|| list("ner_tags"))
            .ok_or_else(|| error("no `tags` (or `ner_tags`) list".into()))??;
        if words.len() != tags.len() {
            return Err(error(format!(
                "{} tokens but {} tags",
                words.len(),
                tags.len()
            )));
        }
        sentences.push(TaggedSentence { line, words, tags });
    }
    Ok(sentences)
}

/// Whether `path` names a JSON Lines file (`.jsonl`, `.json`, `.ndjson`).
pub(crate) fn is_json_lines(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(ext, "jsonl" | "json" | "ndjson")
}

/// `object[key]` as a list of strings: `None` when it is not a list, what is wrong when an item is
/// not a string (tag names, not numbers).
pub(crate) fn string_list(
    object: &Map<String, Value>,
    key: &str,
) -> Option<std::result::Result<Vec<String>, String>> {
    let items = object.get(key)?.as_array()?;
    Some(
        items
            .iter()
            .map(|v| {
                (v.as_str().map(String::from))
                    .ok_or_else(|| format!("`{key}` must hold strings (tag names), found {v}"))
            })
            .collect(),
    )
}

/// The tag names of the training sentences, sorted.
pub fn tag_set(sentences: &[TaggedSentence]) -> Vec<String> {
    let tags: BTreeSet<&String> = sentences.iter().flat_map(|s| &s.tags).collect();
    tags.into_iter().cloned().collect()
}

/// Tokenized sentences with per-token label ids (-100 off the first sub-token of each word).
#[derive(Debug, Clone)]
pub struct TaggedSet {
    pub sentences: Vec<TaggedSentence>,
    pub encodings: Vec<Encoding>,
    pub labels: Vec<Vec<i64>>,
    /// Sentences cut by `--max-length` (their last words are neither trained on nor scored).
    pub truncated: usize,
}

/// Tokenizes `sentences` (from `path`) and aligns their tags, which must all be in `tags`.
pub fn load_tagged(
    path: &Path,
    sentences: Vec<TaggedSentence>,
    tags: &[String],
    tokenizer: &Tokenizer,
) -> Result<TaggedSet> {
    let mut encodings = Vec::with_capacity(sentences.len());
    let mut labels = Vec::with_capacity(sentences.len());
    let mut truncated = 0;
    for sentence in &sentences {
        let words: Vec<&str> = sentence.words.iter().map(String::as_str).collect();
        let encoding = tokenizer
            .encode_words(&words)
            .map_err(|e| Error::data(path, sentence.line, e.to_string()))?;
        let ids: Vec<i64> = sentence
            .tags
            .iter()
            .map(|tag| {
                tags.iter()
                    .position(|t| t == tag)
                    .map(|i| i as i64)
                    .ok_or_else(|| {
                        Error::data(
                            path,
                            sentence.line,
                            format!(
                                "tag `{tag}` does not occur in the training data (its tags: {})",
                                tags.join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?;
        truncated += usize::from(encoding.truncated);
        labels.push(first_subtoken_labels(&encoding, &ids));
        encodings.push(encoding);
    }
    Ok(TaggedSet {
        sentences,
        encodings,
        labels,
        truncated,
    })
}

/// A label per token: the word's tag on its first sub-token, -100 elsewhere.
fn first_subtoken_labels(encoding: &Encoding, word_tags: &[i64]) -> Vec<i64> {
    let mut labels = vec![IGNORE_INDEX; encoding.word_ids.len()];
    for (position, word) in first_subtokens(encoding) {
        labels[position] = word_tags[word];
    }
    labels
}

/// (token position, word) of each word's first sub-token.
pub(crate) fn first_subtokens(encoding: &Encoding) -> Vec<(usize, usize)> {
    let mut previous = None;
    let mut firsts = Vec::new();
    for (position, word) in encoding.word_ids.iter().enumerate() {
        if let Some(w) = word.filter(|_| *word != previous) {
            firsts.push((position, w as usize));
        }
        previous = *word;
    }
    firsts
}

impl TaggedSet {
    fn batch(&self, indices: &[usize], pad_id: u32) -> Result<(Batch, Tensor, usize)> {
        let device = Device::Cpu;
        let encodings: Vec<Encoding> = indices.iter().map(|&i| self.encodings[i].clone()).collect();
        let batch = Batch::from_encodings(&encodings, pad_id, &device)?;
        let (b, t) = batch.input_ids.dims2()?;
        let mut labels = vec![IGNORE_INDEX; b * t];
        for (row, &i) in indices.iter().enumerate() {
            labels[row * t..row * t + self.labels[i].len()].copy_from_slice(&self.labels[i]);
        }
        let tokens = encodings.iter().map(|e| e.ids.len()).sum();
        Ok((batch, Tensor::from_vec(labels, (b, t), &device)?, tokens))
    }
}

/// A token-classification head with its training and evaluation sets.
pub struct TokenClassificationTask {
    pub model: BertForTokenClassification,
    pub tags: Vec<String>,
    pub train: TaggedSet,
    pub eval: Option<TaggedSet>,
    pub pad_id: u32,
}

impl FinetuneTask for TokenClassificationTask {
    fn architecture(&self) -> &'static str {
        "BertForTokenClassification"
    }

    fn train_len(&self) -> usize {
        self.train.encodings.len()
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        let (batch, labels, tokens) = self.train.batch(indices, self.pad_id)?;
        let logits = self.model.forward(&batch, mode)?;
        Ok(TrainLoss {
            loss: token_cross_entropy(&logits, &labels)?,
            tokens,
        })
    }

    /// The loss averages over the labelled first sub-tokens.
    fn loss_terms(&self, indices: &[usize]) -> Vec<usize> {
        let labelled = indices.iter().map(|&i| {
            let labels = &self.train.labels[i];
            labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
        });
        vec![labelled.sum()]
    }

    fn eval_len(&self) -> usize {
        self.eval.as_ref().map_or(0, |eval| eval.encodings.len())
    }

    fn eval_tokens(&self, index: usize) -> usize {
        self.eval
            .as_ref()
            .map_or(0, |eval| eval.encodings[index].ids.len())
    }

    /// Rows: each sentence's best tag id per token.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some(eval) = &self.eval else {
            return Ok(EvalBatch::default());
        };
        let (batch, labels, _) = eval.batch(indices, self.pad_id)?;
        let logits = self.model.forward(&batch, &Mode::Eval)?;
        let counted = eval_label_count(&labels)?;
        let loss_sum = if counted > 0 {
            let loss = token_cross_entropy(&logits, &labels)?;
            f64::from(loss.to_scalar::<f32>()?) * counted as f64
        } else {
            0.0
        };
        let best: Vec<Vec<u32>> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec2()?;
        Ok(EvalBatch {
            rows: best
                .into_iter()
                .map(|row| row.into_iter().map(|tag| tag as f32).collect())
                .collect(),
            loss_sum,
            loss_terms: counted,
            ..Default::default()
        })
    }

    fn score(&self, best: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let Some(eval) = &self.eval else {
            return Ok(Map::new());
        };
        let (mut truth, mut predicted) = (Vec::new(), Vec::new());
        for (i, row) in best.iter().enumerate() {
            let tags: Vec<u32> = row.iter().map(|&tag| tag as u32).collect();
            let (t, p) = self.word_tags(eval, i, &tags);
            truth.push(t);
            predicted.push(p);
        }
        let report = entity_report(&truth, &predicted);
        let mut metrics = Map::new();
        metrics.insert("loss".into(), loss.into());
        if let Value::Object(m) =
            serde_json::to_value(report).map_err(|e| Error::Training(e.to_string()))?
        {
            metrics.extend(m);
        }
        metrics.insert("truncated_sentences".into(), eval.truncated.into());
        Ok(metrics)
    }
}

fn eval_label_count(labels: &Tensor) -> Result<usize> {
    let values: Vec<i64> = labels.flatten_all()?.to_vec1()?;
    Ok(values.iter().filter(|&&l| l != IGNORE_INDEX).count())
}

impl TokenClassificationTask {
    /// The true and predicted tags of sentence `i`'s words that survived truncation.
    fn word_tags(&self, set: &TaggedSet, i: usize, best: &[u32]) -> (Vec<String>, Vec<String>) {
        let (mut truth, mut predicted) = (Vec::new(), Vec::new());
        for (position, &label) in set.labels[i].iter().enumerate() {
            if label == IGNORE_INDEX {
                continue;
            }
            truth.push(self.tags[label as usize].clone());
            predicted.push(self.tags[best[position] as usize].clone());
        }
        (truth, predicted)
    }
}

/// Reads training (and evaluation) tagged files.
pub fn read_files(
    train: &Path,
    eval: Option<&PathBuf>,
) -> Result<(Vec<TaggedSentence>, Option<Vec<TaggedSentence>>)> {
    let train = read_tagged(train)?;
    let eval = eval.map(|p| read_tagged(p)).transpose()?;
    Ok((train, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conll_sentences_skip_docstart_and_take_the_last_column() {
        let text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n";
        let s = read_conll(Path::new("x.conll"), text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].words, ["EU", "rejects"]);
        assert_eq!(s[0].tags, ["B-ORG", "O"]);
        assert_eq!(s[0].line, 3);
        assert_eq!(s[1].line, 6);
        let err = read_conll(Path::new("x.conll"), "EU B-ORG\nlonely\n").unwrap_err();
        assert!(err.to_string().contains("x.conll:2"), "{err}");
    }

    #[test]
    fn tags_go_on_first_subtokens() {
        let encoding = Encoding {
            word_ids: vec![None, Some(0), Some(1), Some(1), Some(2), None],
            ..Default::default()
        };
        assert_eq!(
            first_subtoken_labels(&encoding, &[3, 1, 0]),
            vec![-100, 3, 1, -100, 0, -100]
        );
    }
}
