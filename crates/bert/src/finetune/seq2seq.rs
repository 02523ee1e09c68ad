//! Sequence-to-sequence fine-tuning of a BERT2BERT encoder-decoder (translation, dialogue replies):
//! source -> target pairs from a table (`--source-column`, `--target-column`) or from two line-aligned
//! text files; teacher forcing (the decoder reads the target shifted right behind the start token,
//! padding ignored), optionally with label smoothing; evaluation generates and reports sacreBLEU's
//! BLEU and chrF beside the loss, as `Seq2SeqTrainer` with `predict_with_generate` does.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::error::{read_to_string, Error, Result};
use crate::finetune::table::Table;
use crate::finetune::trainer::FinetuneTask;
use crate::generation::{generate, GenerationConfig};
use crate::loss::{label_smoothed_cross_entropy, IGNORE_INDEX};
use crate::metrics::{corpus_bleu, corpus_chrf};
use crate::model::encoder_decoder::shift_tokens_right;
use crate::model::{EncoderDecoderModel, Mode};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::train::{EvalBatch, TrainLoss};

/// Where source -> target pairs come from.
#[derive(Debug, Clone)]
pub enum PairFile {
    /// CSV, TSV or JSON Lines with a source and a target column.
    Table(PathBuf),
    /// Two text files, line `i` of one the source of line `i` of the other.
    Aligned { source: PathBuf, target: PathBuf },
}

/// The columns of a table of pairs.
#[derive(Debug, Clone)]
pub struct PairColumns {
    pub source: String,
    pub target: String,
}

/// One pair, read: where it is (for messages), its texts.
#[derive(Debug, Clone)]
pub struct TextPair {
    pub line: usize,
    pub source: String,
    pub target: String,
}

/// Reads the pairs of `file`; an empty source or target, or files of different lengths, is an error
/// naming the file and line (or both files and their counts).
pub fn read_pairs(file: &PairFile, columns: &PairColumns) -> Result<Vec<TextPair>> {
    let pairs = match file {
        PairFile::Table(path) => {
            let table = Table::read(path)?;
            table.require(&columns.source, "--source-column")?;
            table.require(&columns.target, "--target-column")?;
            table
                .rows
                .iter()
                .map(|row| {
                    Ok(TextPair {
                        line: row.line,
                        source: table.text(row, &columns.source)?.into_owned(),
                        target: table.text(row, &columns.target)?.into_owned(),
                    })
                })
                .collect::<Result<Vec<_>>>()?
        }
        PairFile::Aligned { source, target } => aligned_pairs(source, target)?,
    };
    let path = match file {
        PairFile::Table(path) => path,
        PairFile::Aligned { source, .. } => source,
    };
    if pairs.is_empty() {
        return Err(Error::data(path, 0, "no source -> target pairs"));
    }
    for pair in &pairs {
        for (what, text) in [("source", &pair.source), ("target", &pair.target)] {
            if text.trim().is_empty() {
                return Err(Error::data(path, pair.line, format!("the {what} is empty")));
            }
        }
    }
    Ok(pairs)
}

fn aligned_pairs(source: &Path, target: &Path) -> Result<Vec<TextPair>> {
    let (sources, targets) = (read_to_string(source)?, read_to_string(target)?);
    let (sources, targets): (Vec<&str>, Vec<&str>) =
        (sources.lines().collect(), targets.lines().collect());
    if sources.len() != targets.len() {
        return Err(Error::data(
            source,
            0,
            format!(
                "{} lines, but the target file {} has {}: the files must be line for line",
                sources.len(),
                target.display(),
                targets.len()
            ),
        ));
    }
    Ok(sources
        .into_iter()
        .zip(targets)
        .enumerate()
        .map(|(i, (s, t))| TextPair {
            line: i + 1,
            source: s.to_string(),
            target: t.to_string(),
        })
        .collect())
}

/// Tokenized pairs: the source's encoding, and the target's ids after `[CLS]` (ending in `[SEP]`):
/// the labels the decoder learns to write after the start token.
#[derive(Debug, Clone)]
pub struct PairSet {
    pub sources: Vec<Encoding>,
    pub labels: Vec<Vec<u32>>,
    pub targets: Vec<String>,
    /// Sources and targets cut to their maximum length.
    pub truncated_sources: usize,
    pub truncated_targets: usize,
}

impl PairSet {
    /// Tokenizes `pairs`, sources with `source_tokenizer` and targets with `target_tokenizer` (each
    /// truncating at its maximum).
    pub fn new(
        pairs: &[TextPair],
        source_tokenizer: &Tokenizer,
        target_tokenizer: &Tokenizer,
    ) -> Result<Self> {
        let mut set = PairSet {
            sources: Vec::with_capacity(pairs.len()),
            labels: Vec::with_capacity(pairs.len()),
            targets: Vec::with_capacity(pairs.len()),
            truncated_sources: 0,
            truncated_targets: 0,
        };
        for pair in pairs {
            let source = source_tokenizer.encode(&pair.source)?;
            let target = target_tokenizer.encode(&pair.target)?;
            set.truncated_sources += usize::from(source.truncated);
            set.truncated_targets += usize::from(target.truncated);
            set.sources.push(source);
            set.labels
                .push(target.ids.get(1..).unwrap_or_default().to_vec());
            set.targets.push(pair.target.clone());
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// The special tokens teacher forcing and generation use.
#[derive(Debug, Clone, Copy)]
pub struct SpecialIds {
    pub start: u32,
    pub pad: u32,
}

/// A padded batch of pairs: the source batch, the decoder's input and mask, the labels (-100 where
/// padded), and how many labels count.
struct PairBatch {
    source: Batch,
    decoder_input: Tensor,
    decoder_mask: Tensor,
    labels: Tensor,
    label_count: usize,
    tokens: usize,
}

fn pair_batch(set: &PairSet, indices: &[usize], ids: SpecialIds) -> Result<PairBatch> {
    let device = Device::Cpu;
    let sources: Vec<Encoding> = indices.iter().map(|&i| set.sources[i].clone()).collect();
    let source = Batch::from_encodings(&sources, ids.pad, &device)?;
    let t = indices
        .iter()
        .map(|&i| set.labels[i].len())
        .max()
        .unwrap_or(1)
        .max(1);
    let labels: Vec<Vec<i64>> = indices
        .iter()
        .map(|&i| {
            let row = &set.labels[i];
            let mut padded: Vec<i64> = row.iter().map(|&id| i64::from(id)).collect();
            padded.resize(t, IGNORE_INDEX);
            padded
        })
        .collect();
    let decoder_ids = shift_tokens_right(&labels, ids.start, ids.pad);
    let mask: Vec<u32> = decoder_ids
        .iter()
        .flatten()
        .map(|&id| u32::from(id != ids.pad))
        .collect();
    let b = indices.len();
    let label_count = labels
        .iter()
        .flatten()
        .filter(|&&l| l != IGNORE_INDEX)
        .count();
    let tokens = sources.iter().map(|e| e.ids.len()).sum::<usize>() + label_count;
    Ok(PairBatch {
        source,
        decoder_input: Tensor::from_vec(decoder_ids.concat(), (b, t), &device)?,
        decoder_mask: Tensor::from_vec(mask, (b, t), &device)?,
        labels: Tensor::from_vec(labels.concat(), b * t, &device)?,
        label_count,
        tokens,
    })
}

/// A BERT2BERT encoder-decoder with its training and evaluation pairs.
pub struct Seq2SeqTask {
    pub model: EncoderDecoderModel,
    pub tokenizer: Tokenizer,
    pub train: PairSet,
    pub eval: Option<PairSet>,
    pub ids: SpecialIds,
    /// Label smoothing's epsilon (0: plain cross-entropy).
    pub label_smoothing: f64,
    /// How evaluation generates (`generation_num_beams`, `generation_max_length`).
    pub generation: GenerationConfig,
}

impl Seq2SeqTask {
    /// The loss of a batch under `mode` (teacher forcing).
    fn batch_loss(&self, batch: &PairBatch, mode: &Mode) -> Result<Tensor> {
        let logits = self.model.forward(
            &batch.source,
            &batch.decoder_input,
            Some(&batch.decoder_mask),
            mode,
        )?;
        let (b, t, v) = logits.dims3()?;
        label_smoothed_cross_entropy(
            &logits.reshape((b * t, v))?,
            &batch.labels,
            self.label_smoothing,
        )
    }
}

impl FinetuneTask for Seq2SeqTask {
    fn architecture(&self) -> &'static str {
        "EncoderDecoderModel"
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss> {
        let batch = pair_batch(&self.train, indices, self.ids)?;
        Ok(TrainLoss {
            loss: self.batch_loss(&batch, mode)?,
            tokens: batch.tokens,
        })
    }

    /// The loss is a mean over target tokens.
    fn loss_terms(&self, indices: &[usize]) -> Vec<usize> {
        vec![indices.iter().map(|&i| self.train.labels[i].len()).sum()]
    }

    fn eval_len(&self) -> usize {
        self.eval.as_ref().map_or(0, PairSet::len)
    }

    /// The teacher-forcing loss, and each item's generated ids as its row.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let Some(eval) = &self.eval else {
            return Ok(EvalBatch::default());
        };
        let batch = pair_batch(eval, indices, self.ids)?;
        let loss: f32 = self.batch_loss(&batch, &Mode::Eval)?.to_scalar()?;
        let generated = generate(&self.model, &batch.source, &self.generation)?;
        Ok(EvalBatch {
            rows: generated
                .into_iter()
                .map(|mut outputs| outputs.remove(0).tokens.iter().map(|&t| t as f32).collect())
                .collect(),
            loss_sum: f64::from(loss) * batch.label_count as f64,
            loss_terms: batch.label_count,
            ..Default::default()
        })
    }

    fn eval_tokens(&self, index: usize) -> usize {
        self.eval
            .as_ref()
            .map_or(0, |eval| eval.sources[index].ids.len())
    }

    /// BLEU and chrF of the generated texts against the targets, the mean generated length, the loss.
    fn score(&self, rows: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>> {
        let Some(eval) = &self.eval else {
            return Ok(Map::new());
        };
        let predictions = rows
            .iter()
            .map(|row| {
                let ids: Vec<u32> = row.iter().map(|&t| t as u32).collect();
                self.tokenizer.decode(&ids, true)
            })
            .collect::<Result<Vec<String>>>()?;
        let predictions: Vec<&str> = predictions.iter().map(String::as_str).collect();
        let references: Vec<&str> = eval.targets.iter().map(String::as_str).collect();
        let generated = rows.iter().map(Vec::len).sum::<usize>() as f64 / rows.len().max(1) as f64;
        let mut metrics = Map::new();
        metrics.insert("loss".into(), loss.into());
        metrics.insert(
            "bleu".into(),
            corpus_bleu(&predictions, &references).score.into(),
        );
        metrics.insert("chrf".into(), corpus_chrf(&predictions, &references).into());
        metrics.insert("gen_len".into(), generated.into());
        Ok(metrics)
    }
}
