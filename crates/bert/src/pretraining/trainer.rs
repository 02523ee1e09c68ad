//! Pretraining as a task of the one training loop ([`crate::train::train`]): masked LM +
//! next-sentence prediction on instances made from the corpus, masked anew each epoch, evaluated on
//! held-out documents (MLM loss and accuracy over the masked positions, NSP accuracy). The run keeps
//! its last model, with a resumable checkpoint of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor, D};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::model::{BertForPreTraining, Mode};
use crate::pretraining::data::{PretrainBatch, PretrainData};
use crate::pretraining::{MaskedInstance, PairInstance};
use crate::train::{
    checkpoints, train, EvalBatch, Evaluated, Event, Outcome, Task, TrainLoss, TrainingOptions,
};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::BertConfig;
use crate::weights::params::ParamStore;

const ARCHITECTURE: &str = "BertForPreTraining";

/// Files of an earlier run that `--overwrite` may remove.
const RUN_FILES: [&str; 4] = [
    "model.safetensors",
    "config.json",
    "metrics.jsonl",
    "loss.png",
];

/// Where the weights start.
#[derive(Debug, Clone)]
pub enum ModelInit {
    /// Freshly initialised, as `transformers` initialises BERT.
    Fresh(Box<BertConfig>),
    /// From a checkpoint directory (continued pretraining).
    Checkpoint(PathBuf),
}

/// Runs pretraining until `max_steps` (or `epochs`), or until `stop` is set (on any rank). The
/// weights start as `init` says, or from the newest checkpoint in `options.out` with
/// `options.resume`.
pub fn pretrain(
    data: &PretrainData,
    init: &ModelInit,
    options: &TrainingOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome> {
    let resume_from = match options.resume {
        true => checkpoints(&options.out)?.pop().map(|(_, dir)| dir),
        false => None,
    };
    let (config, store) = load_weights(init, options, resume_from.as_deref())?;
    check_fit(data, &config)?;
    let task = Pretraining {
        model: BertForPreTraining::load(&store.root(), &config)?,
        eval: data.eval_instances()?,
        data,
    };
    train(&task, &store, &config, options, stop, on_event)
}

/// The pretraining task: the model, the data, the held-out instances.
struct Pretraining<'a> {
    model: BertForPreTraining,
    data: &'a PretrainData,
    eval: Vec<MaskedInstance>,
}

impl Task for Pretraining<'_> {
    /// An instance and its position in the epoch's stream.
    type Example = PairInstance;
    type Batch = PretrainBatch;

    fn architecture(&self) -> &'static str {
        ARCHITECTURE
    }

    /// The instances of the epoch, in its shuffled order (the data holds its own seed).
    fn examples(
        &self,
        epoch: usize,
        _seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<PairInstance>> + '_>> {
        Ok(Box::new(self.data.train_instances(epoch)?))
    }

    fn examples_per_epoch(&self) -> Option<usize> {
        None
    }

    /// The instances masked (each by its epoch and position, so anew each epoch) and padded.
    fn batch(&self, examples: &[&(usize, PairInstance)], epoch: usize) -> Result<PretrainBatch> {
        let masked: Vec<MaskedInstance> = examples
            .iter()
            .map(|(index, instance)| self.data.mask(instance, epoch, *index))
            .collect();
        self.data.collate(&masked, &Device::Cpu)
    }

    /// The MLM loss averages the masked positions, the NSP loss the sentence pairs.
    fn loss_terms(&self, batch: &PretrainBatch) -> Vec<usize> {
        vec![
            batch.masked_labels.elem_count(),
            batch.next_sentence_labels.elem_count(),
        ]
    }

    fn loss(&self, batch: &PretrainBatch, weights: &[f64], mode: &Mode) -> Result<TrainLoss> {
        let output = self
            .model
            .forward_at(&batch.batch, &batch.masked_positions, mode)?;
        let mlm = cross_entropy(&output.prediction_logits, &batch.masked_labels)?;
        let nsp = cross_entropy(&output.seq_relationship_logits, &batch.next_sentence_labels)?;
        Ok(TrainLoss {
            loss: ((mlm * weights[0])? + (nsp * weights[1])?)?,
            tokens: batch.tokens,
        })
    }

    fn eval_len(&self) -> usize {
        self.eval.len()
    }

    /// The MLM loss summed over the masked positions; counts: masked positions, correct MLM
    /// predictions, correct NSP predictions, sentence pairs.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        let masked: Vec<MaskedInstance> = indices.iter().map(|&i| self.eval[i].clone()).collect();
        let b = self.data.collate(&masked, &Device::Cpu)?;
        let out = self
            .model
            .forward_at(&b.batch, &b.masked_positions, &Mode::Eval)?;
        let predicted = b.masked_labels.elem_count();
        let mean = cross_entropy(&out.prediction_logits, &b.masked_labels)?;
        let counts = vec![
            predicted as f64,
            correct_predictions(&out.prediction_logits, &b.masked_labels)? as f64,
            correct_predictions(&out.seq_relationship_logits, &b.next_sentence_labels)? as f64,
            b.next_sentence_labels.dim(0)? as f64,
        ];
        Ok(EvalBatch {
            rows: vec![Vec::new(); indices.len()],
            loss_sum: f64::from(mean.to_scalar::<f32>()?) * predicted as f64,
            loss_terms: predicted,
            counts,
        })
    }

    fn eval_counts(&self) -> usize {
        4
    }

    fn score(&self, evaluated: Evaluated) -> Result<Map<String, Value>> {
        let [predicted, correct, nsp_correct, nsp_total] = evaluated.counts[..] else {
            return Err(Error::Training(
                "pretraining evaluation: four counts".into(),
            ));
        };
        let mut metrics = Map::new();
        metrics.insert("eval_mlm_loss".into(), evaluated.loss.into());
        let accuracy = correct / predicted.max(1.0);
        metrics.insert("eval_mlm_accuracy".into(), accuracy.into());
        let nsp = nsp_correct / nsp_total.max(1.0);
        metrics.insert("eval_nsp_accuracy".into(), nsp.into());
        Ok(metrics)
    }

    fn settings(&self, options: &TrainingOptions, _max_steps: usize) -> Value {
        let (instances, masking, hold_out) = (
            &self.data.instances,
            &self.data.masking,
            &self.data.hold_out,
        );
        let mut settings = options.settings();
        let data = serde_json::json!({
            "max_seq_length": instances.max_seq_length,
            "short_seq_prob": instances.short_seq_prob,
            "masked_lm_prob": masking.masked_lm_prob,
            "max_predictions_per_seq": masking.max_predictions_per_seq,
            "whole_word_masking": masking.whole_word,
            "eval_documents": hold_out.count,
            "eval_stride": hold_out.stride,
        });
        if let Value::Object(data) = data {
            settings.extend(data);
        }
        Value::Object(settings)
    }

    fn eval_loss_key(&self) -> &'static str {
        "eval_mlm_loss"
    }

    fn run_files(&self) -> &'static [&'static str] {
        &RUN_FILES
    }
}

/// The model must take the tokenizer's ids and the instances' length.
fn check_fit(data: &PretrainData, config: &BertConfig) -> Result<()> {
    let vocab = data.tokenizer.vocab_size();
    if vocab > config.vocab_size {
        return Err(Error::InvalidInput(format!(
            "the tokenizer has {vocab} tokens but the model's vocab_size is {}",
            config.vocab_size
        )));
    }
    if data.instances.max_seq_length > config.max_position_embeddings {
        return Err(Error::InvalidInput(format!(
            "--max-seq-length {} exceeds the model's max_position_embeddings {}",
            data.instances.max_seq_length, config.max_position_embeddings
        )));
    }
    Ok(())
}

/// The config and trainable weights: from the checkpoint being resumed, else as `init` says.
fn load_weights(
    init: &ModelInit,
    options: &TrainingOptions,
    resume: Option<&Path>,
) -> Result<(BertConfig, ParamStore)> {
    let device = Device::Cpu;
    let from_dir = |dir: &Path| -> Result<(BertConfig, ParamStore)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        Ok((
            config,
            ParamStore::new(Checkpoint::open(dir)?, &device, true, options.seed)
                .with_precision(options.precision),
        ))
    };
    match (resume, init) {
        (Some(dir), _) => from_dir(dir),
        (None, ModelInit::Checkpoint(dir)) => from_dir(dir),
        (None, ModelInit::Fresh(config)) => {
            let store = ParamStore::fresh(&device, options.seed).with_precision(options.precision);
            Ok(((**config).clone(), store))
        }
    }
}

/// How many rows of (N, K) logits have their largest value at the (N) label.
fn correct_predictions(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let labels: Vec<i64> = labels.to_vec1()?;
    let guesses: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
    Ok(labels
        .iter()
        .zip(&guesses)
        .filter(|(&l, &g)| l == i64::from(g))
        .count())
}
