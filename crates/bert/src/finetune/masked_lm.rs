//! Masked LM as a second objective beside a task's own: lines of text, each its own sequence, masked
//! as BERT's pretraining masks them ([`crate::masking`]) and predicted by `cls.predictions`, tied to
//! the word embeddings. Distillation uses it so that one small checkpoint is both a sentence encoder
//! and a fill-mask model: saved as `BertForMaskedLM`, whose encoder sentence-transformers and
//! `bert embed` load as before.
//!
//! Each training example of a step also reads a line drawn at random and masked anew, from a
//! generator the step's dropout generator seeds: which lines and which tokens follow from the run's
//! seed alone, so resumed runs read what an uninterrupted one would. Held-out lines are masked once,
//! and scored by the accuracy and cross-entropy of the predictions at their masked tokens, as
//! pretraining scores its held-out documents.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};

use crate::batch::Batch;
use crate::bitext::sentences;
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, IGNORE_INDEX};
use crate::masking::{chosen_positions, mask_tokens, Masked, MaskingConfig, MaskingOptions};
use crate::model::heads::BertLmPredictionHead;
use crate::model::{BertModel, Mode};
use crate::rng::{Rng, Stream};
use crate::tokenizer::Tokenizer;
use crate::weights::config::BertConfig;
use crate::weights::params::Params;

/// The text a masked-LM objective reads, and its weight in the task's loss.
#[derive(Debug, Clone)]
pub struct MaskedLmText {
    /// One sequence a line (blank lines skipped).
    pub path: PathBuf,
    /// Held-out lines, same format, to score masked-LM accuracy on.
    pub eval: Option<PathBuf>,
    /// The loss is the task's own + `weight` x the masked-LM cross-entropy.
    pub weight: f64,
}

/// Lines of text tokenized, and the head that predicts their masked tokens.
pub struct MaskedLm {
    head: BertLmPredictionHead,
    /// Each line's ids, `[CLS]` and `[SEP]` included.
    lines: Vec<Vec<u32>>,
    /// The held-out lines, masked once.
    eval: Vec<Masked>,
    masking: MaskingConfig,
    weight: f64,
    seed: u64,
    pad_id: u32,
}

impl MaskedLm {
    /// Reads and tokenizes `text` and loads (or initialises) the head at `p` (`cls.predictions`),
    /// its decoder tied to `word_embeddings`.
    pub fn load(
        p: &Params,
        config: &BertConfig,
        word_embeddings: &Tensor,
        text: &MaskedLmText,
        tokenizer: &Tokenizer,
        seed: u64,
    ) -> Result<Self> {
        if !(text.weight.is_finite() && text.weight >= 0.0) {
            return Err(Error::InvalidInput(format!(
                "the masked-LM weight must be a number at least 0, not {}",
                text.weight
            )));
        }
        let read = |path: &PathBuf| {
            (sentences::read(path)?.iter())
                .map(|s| tokenizer.encode(&s.text).map(|e| e.ids))
                .collect::<Result<Vec<_>>>()
        };
        let masking = MaskingConfig::new(tokenizer, MaskingOptions::default())?;
        let eval = match &text.eval {
            Some(path) => (read(path)?.iter().enumerate())
                .map(|(i, ids)| {
                    let mut rng = Rng::stream(seed, Stream::EvalMasks, i as u64);
                    mask_tokens(ids, &masking, &mut rng)
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(MaskedLm {
            head: BertLmPredictionHead::load(p, config, word_embeddings)?,
            lines: read(&text.path)?,
            eval,
            masking,
            weight: text.weight,
            seed,
            pad_id: tokenizer.pad_id(),
        })
    }

    /// A line for each of the step's `examples`, drawn and masked with a generator seeded by the
    /// step's dropout generator (the run's seed, when there is none).
    fn draw(&self, examples: usize, mode: &Mode) -> Vec<Masked> {
        let seed = match mode.rng() {
            Some(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).next_u64(),
            None => self.seed,
        };
        let mut rng = Rng::new(seed);
        (0..examples)
            .map(|_| {
                let line = &self.lines[rng.below(self.lines.len())];
                mask_tokens(line, &self.masking, &mut rng)
            })
            .collect()
    }

    /// `weight` x the mean cross-entropy over the masked tokens of `examples` lines (drawn for the
    /// step), with `model`'s hidden states; and the tokens read.
    pub fn loss(&self, model: &BertModel, examples: usize, mode: &Mode) -> Result<(Tensor, usize)> {
        let masked = self.draw(examples, mode);
        let (logits, labels) = self.predict(model, &masked, mode)?;
        let loss = cross_entropy(&logits, &labels)?;
        let tokens = masked.iter().map(|m| m.input_ids.len()).sum();
        Ok(((loss * self.weight)?, tokens))
    }

    /// How many held-out lines there are.
    pub fn eval_len(&self) -> usize {
        self.eval.len()
    }

    /// The tokens of held-out line `index`.
    pub fn eval_tokens(&self, index: usize) -> usize {
        self.eval[index].input_ids.len()
    }

    /// A row per held-out line of `indices`: its masked tokens, how many of them the model predicts
    /// right, and the cross-entropy summed over them.
    pub fn eval_rows(&self, model: &BertModel, indices: &[usize]) -> Result<Vec<Vec<f32>>> {
        let masked: Vec<Masked> = indices.iter().map(|&i| self.eval[i].clone()).collect();
        let (logits, labels) = self.predict(model, &masked, &Mode::Eval)?;
        let logits = logits.to_dtype(DType::F32)?;
        let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let labels = labels.to_vec1::<i64>()?;
        let mut rows = Vec::with_capacity(masked.len());
        let mut at = 0;
        for m in &masked {
            let n = m.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            let (mut right, mut loss) = (0.0, 0.0);
            for k in at..at + n {
                right += f32::from(i64::from(predicted[k]) == labels[k]);
                loss -= log_probs[k][labels[k] as usize];
            }
            at += n;
            rows.push(vec![n as f32, right, loss]);
        }
        Ok(rows)
    }

    /// The vocabulary logits at the masked tokens of `masked`, `(N, V)`, and their labels, `(N)`.
    fn predict(
        &self,
        model: &BertModel,
        masked: &[Masked],
        mode: &Mode,
    ) -> Result<(Tensor, Tensor)> {
        let types: Vec<Vec<u32>> = masked.iter().map(|m| vec![0; m.input_ids.len()]).collect();
        let rows: Vec<(&[u32], &[u32])> = (masked.iter().zip(&types))
            .map(|(m, t)| (m.input_ids.as_slice(), t.as_slice()))
            .collect();
        let batch = Batch::from_ids(&rows, self.pad_id, &Device::Cpu)?;
        let t = batch.input_ids.dim(1)?;
        let (positions, labels) = chosen_positions(masked.iter().map(|m| m.labels.as_slice()), t);
        let n = positions.len();
        let hidden = model.forward(&batch, mode)?.hidden_states;
        let positions = Tensor::from_vec(positions, n, &Device::Cpu)?;
        let logits = self.head.forward_at(&hidden, &positions, mode)?;
        Ok((logits, Tensor::from_vec(labels, n, &Device::Cpu)?))
    }
}

/// Masked-LM accuracy and mean cross-entropy from [`MaskedLm::eval_rows`]' rows.
pub fn masked_lm_metrics(rows: &[Vec<f32>]) -> (f64, f64) {
    let sum = |k: usize| rows.iter().map(|r| f64::from(r[k])).sum::<f64>();
    let tokens = sum(0).max(1.0);
    (sum(1) / tokens, sum(2) / tokens)
}
