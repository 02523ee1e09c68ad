//! Joint intent detection and slot filling (Chen, Zhuo and Wang, "BERT for Joint Intent Classification
//! and Slot Filling", 2019) as a fine-tuning task: each utterance has one intent (the pooled `[CLS]`
//! state's class) and one slot tag per word (on the word's first sub-token, as token classification
//! does). The loss is the intent's cross-entropy (a mean over utterances) plus `slot_loss_coef` times
//! the slots' (a mean over labelled words): two terms, so that data-parallel shards weigh each by its
//! own count.
//!
//! Data comes as JSON Lines `{"tokens": [...], "tags": [...], "intent": "..."}`, as the ATIS/SNIPS text
//! format (`word:TAG word:TAG ... <=> intent`, a line each), or as a folder holding the `seq.in`,
//! `seq.out` and `label` files (one utterance a line in each). Multi-intent labels
//! (`atis_flight#atis_airfare`) are classes of their own. Evaluation reports intent accuracy, seqeval's
//! entity-level slot precision, recall and F1, sentence accuracy (the intent and every tag right), and
//! per-intent and per-slot tables; intents and tags the training data lacks are counted, and can
//! never be predicted.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::error::{read_to_string, Error, Result};
use crate::finetune::ner::{first_subtokens, is_json_lines, string_list};
use crate::finetune::table::json_objects;
use crate::finetune::trainer::FinetuneTask;
use crate::loss::{cross_entropy, token_cross_entropy, IGNORE_INDEX};
use crate::metrics::{classification_report, entity_report};
use crate::model::{BertForIntentSlots, IntentSlotsOutput, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};

/// The architecture name a joint model's `config.json` carries.
pub const ARCHITECTURE: &str = "BertForIntentAndSlots";

/// One utterance: its words, their slot tags and its intent, and where it is in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub line: usize,
    pub words: Vec<String>,
    pub tags: Vec<String>,
    pub intent: String,
}

/// Reads utterances from a JSON Lines file (`.jsonl`, `.json`, `.ndjson`), a folder with `seq.in`,
/// `seq.out` and `label`, or a file of `word:TAG ... <=> intent` lines.
pub fn read_utterances(path: &Path) -> Result<Vec<Utterance>> {
    let utterances = if path.is_dir() {
        read_triple(path)?
    } else {
        let text = read_to_string(path)?;
        if is_json_lines(path) {
            read_json_lines(path, &text)?
        } else {
            read_atis(path, &text)?
        }
    };
    if utterances.is_empty() {
        return Err(Error::data(path, 0, "the file holds no utterances"));
    }
    Ok(utterances)
}

/// `word:TAG word:TAG ... <=> intent`, one utterance a line (blank lines skipped).
fn read_atis(path: &Path, text: &str) -> Result<Vec<Utterance>> {
    let mut utterances = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| Error::data(path, index + 1, message);
        let Some((tagged, intent)) = line.rsplit_once("<=>") else {
            return Err(error(format!(
                "`{}`: expected `word:TAG ... <=> intent` (no `<=>`; JSON Lines files end in .jsonl)",
                shorten(line)
            )));
        };
        let (mut words, mut tags) = (Vec::new(), Vec::new());
        for item in tagged.split_whitespace() {
            let Some((word, tag)) = item
                .rsplit_once(':')
                .filter(|(w, t)| !w.is_empty() && !t.is_empty())
            else {
                return Err(error(format!("`{item}`: expected `word:TAG`")));
            };
            words.push(word.to_string());
            tags.push(tag.to_string());
        }
        utterances.push(utterance(index + 1, words, tags, intent.trim()).map_err(error)?);
    }
    Ok(utterances)
}

fn read_json_lines(path: &Path, text: &str) -> Result<Vec<Utterance>> {
    let mut utterances = Vec::new();
    for object in json_objects(path, text) {
        let (line, object) = object?;
        let error = |message: String| Error::data(path, line, message);
        let strings = |key: &str| {
            string_list(&object, key)
                .unwrap_or_else(|| Err(format!("no `{key}` list")))
                .map_err(error)
        };
        let intent = (object.get("intent").and_then(Value::as_str))
            .ok_or_else(|| error("no `intent` string".into()))?;
        let (words, tags) = (strings("tokens")?, strings("tags")?);
        utterances.push(utterance(line, words, tags, intent).map_err(error)?);
    }
    Ok(utterances)
}

/// A folder's `seq.in` (words), `seq.out` (tags) and `label` (intents), line by line.
fn read_triple(folder: &Path) -> Result<Vec<Utterance>> {
    let read = |name: &str| read_to_string(&folder.join(name));
    let (words, tags, intents) = (read("seq.in")?, read("seq.out")?, read("label")?);
    let counts = [&words, &tags, &intents].map(|text| text.lines().count());
    if counts[0] != counts[1] || counts[0] != counts[2] {
        let message = format!(
            "seq.in has {} lines, seq.out {}, label {}: they must be line-aligned",
            counts[0], counts[1], counts[2]
        );
        return Err(Error::data(folder, 0, message));
    }
    let split = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let lines = words.lines().zip(tags.lines()).zip(intents.lines());
    (lines.enumerate())
        .filter(|(_, ((words, _), _))| !words.trim().is_empty())
        .map(|(index, ((words, tags), intent))| {
            utterance(index + 1, split(words), split(tags), intent.trim())
                .map_err(|message| Error::data(folder, index + 1, message))
        })
        .collect()
}

/// An utterance, or what is wrong with it.
fn utterance(
    line: usize,
    words: Vec<String>,
    tags: Vec<String>,
    intent: &str,
) -> std::result::Result<Utterance, String> {
    if words.is_empty() {
        return Err("an empty utterance (no words)".into());
    }
    if words.len() != tags.len() {
        return Err(format!("{} words but {} tags", words.len(), tags.len()));
    }
    if intent.is_empty() {
        return Err("no intent".into());
    }
    Ok(Utterance {
        line,
        words,
        tags,
        intent: intent.to_string(),
    })
}

fn shorten(line: &str) -> String {
    match line.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

/// The training data's intents and slot tags, each sorted.
pub fn label_sets(utterances: &[Utterance]) -> (Vec<String>, Vec<String>) {
    let intents: BTreeSet<&String> = utterances.iter().map(|u| &u.intent).collect();
    let tags: BTreeSet<&String> = utterances.iter().flat_map(|u| &u.tags).collect();
    (
        intents.into_iter().cloned().collect(),
        tags.into_iter().cloned().collect(),
    )
}

/// Tokenized utterances with their label ids.
#[derive(Debug, Clone)]
pub struct IntentSlotSet {
    pub utterances: Vec<Utterance>,
    pub encodings: Vec<Encoding>,
    /// Per utterance: the intent's id, -100 for an intent the training data lacks.
    pub intents: Vec<i64>,
    /// Per utterance, per token: the word's tag id on its first sub-token, -100 elsewhere (and for
    /// a tag the training data lacks).
    pub slots: Vec<Vec<i64>>,
    /// Per utterance: (token position, word) of each word's first sub-token that survived truncation.
    pub words_at: Vec<Vec<(usize, usize)>>,
    /// Utterances cut by `--max-length`.
    pub truncated: usize,
    /// Utterances whose intent, and words whose tag, the training data lacks.
    pub unseen_intents: usize,
    pub unseen_tags: usize,
}

/// Tokenizes `utterances` and looks up their labels in `intents` and `tags` (the training data's).
pub fn load_set(
    path: &Path,
    utterances: Vec<Utterance>,
    intents: &[String],
    tags: &[String],
    tokenizer: &Tokenizer,
) -> Result<IntentSlotSet> {
    let id = |labels: &[String], label: &String| {
        labels
            .iter()
            .position(|l| l == label)
            .map_or(IGNORE_INDEX, |i| i as i64)
    };
    let mut set = IntentSlotSet {
        utterances: Vec::new(),
        encodings: Vec::with_capacity(utterances.len()),
        intents: Vec::with_capacity(utterances.len()),
        slots: Vec::with_capacity(utterances.len()),
        words_at: Vec::with_capacity(utterances.len()),
        truncated: 0,
        unseen_intents: 0,
        unseen_tags: 0,
    };
    for utterance in &utterances {
        let words: Vec<&str> = utterance.words.iter().map(String::as_str).collect();
        let encoding = tokenizer
            .encode_words(&words)
            .map_err(|e| Error::data(path, utterance.line, e.to_string()))?;
        let intent = id(intents, &utterance.intent);
        let tag_ids: Vec<i64> = utterance.tags.iter().map(|t| id(tags, t)).collect();
        set.unseen_intents += usize::from(intent == IGNORE_INDEX);
        set.unseen_tags += tag_ids.iter().filter(|&&t| t == IGNORE_INDEX).count();
        set.truncated += usize::from(encoding.truncated);
        let words_at = first_subtokens(&encoding);
        let mut slots = vec![IGNORE_INDEX; encoding.ids.len()];
        for &(position, word) in &words_at {
            slots[position] = tag_ids[word];
        }
        set.intents.push(intent);
        set.slots.push(slots);
        set.words_at.push(words_at);
        set.encodings.push(encoding);
    }
    set.utterances = utterances;
    Ok(set)
}

/// A batch of utterances: the model's input, the intent labels (B) and the slot labels (B, T).
struct LabelledBatch {
    batch: Batch,
    intents: Tensor,
    slots: Tensor,
    tokens: usize,
}

impl IntentSlotSet {
    fn batch(&self, indices: &[usize], pad_id: u32) -> Result<LabelledBatch> {
        let device = Device::Cpu;
        let encodings: Vec<Encoding> = indices.iter().map(|&i| self.encodings[i].clone()).collect();
        let batch = Batch::from_encodings(&encodings, pad_id, &device)?;
        let (b, t) = batch.input_ids.dims2()?;
        let mut slots = vec![IGNORE_INDEX; b * t];
        for (row, &i) in indices.iter().enumerate() {
            slots[row * t..row * t + self.slots[i].len()].copy_from_slice(&self.slots[i]);
        }
        let intents: Vec<i64> = indices.iter().map(|&i| self.intents[i]).collect();
        Ok(LabelledBatch {
            batch,
            intents: Tensor::from_vec(intents, b, &device)?,
            slots: Tensor::from_vec(slots, (b, t), &device)?,
            tokens: encodings.iter().map(|e| e.ids.len()).sum(),
        })
    }

    /// How many of utterances `indices` have a known intent, and how many words a known tag.
    fn counts(&self, indices: &[usize]) -> (usize, usize) {
        let intents = indices.iter().filter(|&&i| self.intents[i] != IGNORE_INDEX);
        let slots = indices
            .iter()
            .map(|&i| self.slots[i].iter().filter(|&&l| l != IGNORE_INDEX).count());
        (intents.count(), slots.sum())
    }
}

/// The joint model with its training and evaluation sets.
pub struct IntentSlotsTask {
    pub model: BertForIntentSlots,
    pub intents: Vec<String>,
    pub tags: Vec<String>,
    pub train: IntentSlotSet,
    pub eval: Option<IntentSlotSet>,
    pub pad_id: u32,
    /// The slot loss's weight against the intent loss's.
    pub slot_loss_coef: f64,
}

impl IntentSlotsTask {
    /// The model's output on `set`'s utterances `indices`, and `weights[0] * intent loss +
    /// weights[1] * slot_loss_coef * slot loss`, each a mean over its own terms (left out where
    /// there are none).
    fn run(
        &self,
        set: &IntentSlotSet,
        indices: &[usize],
        weights: &[f64],
        mode: &Mode,
    ) -> Result<(IntentSlotsOutput, TrainLoss)> {
        let labelled = set.batch(indices, self.pad_id)?;
        let output = self.model.forward(&labelled.batch, mode)?;
        let (intent_terms, slot_terms) = set.counts(indices);
        let mut parts = Vec::new();
        if intent_terms > 0 {
            let intents = cross_entropy(&output.intent_logits, &labelled.intents)?;
            parts.push((intents * weights[0])?);
        }
        if slot_terms > 0 {
            let slots = token_cross_entropy(&output.slot_logits, &labelled.slots)?;
            parts.push((slots * (weights[1] * self.slot_loss_coef))?);
        }
        let loss = match parts.as_slice() {
            [] => Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?,
            [first, rest @ ..] => rest
                .iter()
                .try_fold(first.clone(), |sum, part| sum + part)?,
        };
        let tokens = labelled.tokens;
        Ok((output, TrainLoss { loss, tokens }))
    }
}

impl FinetuneTask for IntentSlotsTask {
    fn architecture(&self) -> &'static str {
        ARCHITECTURE
    }

    fn train_len(&self) -> usize {
        self.train.encodings.len()
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        Ok(self.run(&self.train, indices, &[1.0, 1.0], mode)?.1)
    }

    /// The intent loss averages over utterances, the slot loss over labelled words.
    fn loss_terms(&self, indices: &[usize]) -> Vec<usize> {
        let (intents, slots) = self.train.counts(indices);
        vec![intents, slots]
    }

    fn weighted_loss(&self, indices: &[usize], weights: &[f64], mode: &Mode) -> Result<TrainLoss> {
        Ok(self.run(&self.train, indices, weights, mode)?.1)
    }

    fn eval_len(&self) -> usize {
        self.eval.as_ref().map_or(0, |eval| eval.encodings.len())
    }

    fn eval_tokens(&self, index: usize) -> usize {
        (self.eval.as_ref()).map_or(0, |eval| eval.encodings[index].ids.len())
    }

    /// Rows: the best intent id, then the best tag id of each token. The loss is the joint loss
    /// summed over the batch's utterances.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some(eval) = &self.eval else {
            return Ok(EvalBatch::default());
        };
        let (output, loss) = self.run(eval, indices, &[1.0, 1.0], &Mode::Eval)?;
        let intents: Vec<u32> = output.intent_logits.argmax(D::Minus1)?.to_vec1()?;
        let slots: Vec<Vec<u32>> = output.slot_logits.argmax(D::Minus1)?.to_vec2()?;
        let rows = (intents.iter().zip(slots))
            .map(|(&intent, slots)| {
                std::iter::once(intent)
                    .chain(slots)
                    .map(|id| id as f32)
                    .collect()
            })
            .collect();
        Ok(EvalBatch {
            rows,
            loss_sum: f64::from(loss.loss.to_scalar::<f32>()?) * indices.len() as f64,
            loss_terms: indices.len(),
            ..Default::default()
        })
    }

    fn score(&self, rows: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let Some(eval) = &self.eval else {
            return Ok(Map::new());
        };
        let scored = self.scored(eval, &rows);
        let mut metrics = Map::new();
        metrics.insert("loss".into(), loss.into());
        metrics.insert("intent_accuracy".into(), scored.intents.accuracy.into());
        metrics.insert("slot_precision".into(), scored.slots.precision.into());
        metrics.insert("slot_recall".into(), scored.slots.recall.into());
        metrics.insert("slot_f1".into(), scored.slots.f1.into());
        metrics.insert("sentence_accuracy".into(), scored.sentence_accuracy.into());
        metrics.insert("per_intent".into(), to_value(&scored.intents.per_class)?);
        metrics.insert("per_slot".into(), to_value(&scored.slots.per_type)?);
        metrics.insert("unseen_intents".into(), eval.unseen_intents.into());
        metrics.insert("unseen_tags".into(), eval.unseen_tags.into());
        metrics.insert("truncated_sentences".into(), eval.truncated.into());
        Ok(metrics)
    }
}

/// An evaluation's reports.
struct Scored {
    intents: crate::metrics::ClassificationReport,
    slots: crate::metrics::EntityReport,
    sentence_accuracy: f64,
}

impl IntentSlotsTask {
    /// Scores each utterance's row (best intent id, then best tag id per token) against `set`.
    fn scored(&self, set: &IntentSlotSet, rows: &[Vec<f32>]) -> Scored {
        // Intents only the evaluation data has are classes of their own, never predicted.
        let mut labels = self.intents.clone();
        for utterance in &set.utterances {
            if !labels.contains(&utterance.intent) {
                labels.push(utterance.intent.clone());
            }
        }
        let (mut truth, mut predicted) = (Vec::new(), Vec::new());
        let (mut true_tags, mut predicted_tags) = (Vec::new(), Vec::new());
        let mut sentences_right = 0;
        for (i, row) in rows.iter().enumerate() {
            let utterance = &set.utterances[i];
            let intent = labels
                .iter()
                .position(|l| *l == utterance.intent)
                .unwrap_or(0);
            let best_intent = row[0] as usize;
            let (words, best): (Vec<String>, Vec<String>) = (set.words_at[i].iter())
                .map(|&(position, word)| {
                    let tag = self.tags[row[1 + position] as usize].clone();
                    (utterance.tags[word].clone(), tag)
                })
                .unzip();
            sentences_right += usize::from(intent == best_intent && words == best);
            truth.push(intent);
            predicted.push(best_intent);
            true_tags.push(words);
            predicted_tags.push(best);
        }
        Scored {
            intents: classification_report(&labels, &truth, &predicted),
            slots: entity_report(&true_tags, &predicted_tags),
            sentence_accuracy: sentences_right as f64 / rows.len().max(1) as f64,
        }
    }
}

fn to_value(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Training(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atis_format_reads_words_tags_and_intent() {
        let text = "i:O fly:O to:O st.:B-city louis:I-city at:O 8:30:B-time <=> atis_flight#atis_airfare\n\n";
        let read = read_atis(Path::new("a.txt"), text).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(
            read[0].words,
            ["i", "fly", "to", "st.", "louis", "at", "8:30"]
        );
        assert_eq!(read[0].tags[6], "B-time");
        assert_eq!(read[0].intent, "atis_flight#atis_airfare");
    }

    #[test]
    fn bad_lines_are_named() {
        let error = |text: &str| read_atis(Path::new("a.txt"), text).unwrap_err().to_string();
        assert!(
            error("i:O fly:O\n").contains("a.txt:1"),
            "{}",
            error("i:O fly:O\n")
        );
        assert!(error("i:O fly <=> x\n").contains("`fly`"));
        assert!(error("ok:O <=> x\n <=> y\n").contains("a.txt:2"));
        assert!(error("ok:O <=> x\n <=> y\n").contains("empty utterance"));
        let json = r#"{"tokens": ["a", "b"], "tags": ["O"], "intent": "x"}"#;
        let message = read_json_lines(Path::new("a.jsonl"), json)
            .unwrap_err()
            .to_string();
        assert!(message.contains("2 words but 1 tags"), "{message}");
    }
}
