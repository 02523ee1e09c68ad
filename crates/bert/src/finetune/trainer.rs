//! Fine-tuning tasks on the one training loop ([`crate::train::train`]): a fine-tuning task holds its
//! labelled examples as a set it can index, so it says only how many there are, the loss over some of
//! them and its evaluation ([`FinetuneTask`]); every such task is a [`Task`] whose epochs are its
//! examples shuffled from the run's seed, and which keeps the best model by `metric_for_best`.

use serde_json::{Map, Value};

use crate::error::Result;
use crate::nn::Mode;
use crate::rng::{Rng, Stream};
use crate::train::{EvalBatch, Evaluated, Task, TrainLoss, TrainingOptions};

/// A fine-tuning task: its model, training examples and evaluation.
pub trait FinetuneTask: Sync {
    /// The head's class name in `config.json` (`BertForSequenceClassification`, ...).
    fn architecture(&self) -> &'static str;
    /// How many training examples there are.
    fn train_len(&self) -> usize;
    /// The mean loss over the training examples `indices`.
    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss>;
    /// How many terms that mean averages over: the examples, unless a task says otherwise. A loss
    /// of several parts (each a mean over its own terms) gives one count per part.
    fn loss_terms(&self, indices: &[usize]) -> Vec<usize> {
        vec![indices.len()]
    }
    /// The loss with each part weighted (`weights`, one per `loss_terms` count: the shard's share of
    /// the global batch's terms).
    fn weighted_loss(&self, indices: &[usize], weights: &[f64], mode: &Mode) -> Result<TrainLoss> {
        let part = self.train_loss(indices, mode)?;
        Ok(TrainLoss {
            loss: (part.loss * weights[0])?,
            tokens: part.tokens,
        })
    }
    /// The tokens of training example `index` (`None`: not known, and `group_by_length` keeps the
    /// shuffled order).
    fn train_tokens(&self, _index: usize) -> Option<usize> {
        None
    }
    /// How many items the evaluation set has (examples; question windows for QA), 0 without one.
    fn eval_len(&self) -> usize;
    /// Runs the evaluation items `indices`: an output row for each, and their loss.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch>;
    /// The tokens of evaluation item `index`, by which evaluation batches are grouped so that little
    /// padding is computed (0 for every item keeps the file's order).
    fn eval_tokens(&self, _index: usize) -> usize {
        0
    }
    /// The metrics from every evaluation item's row, in order, and the mean loss: at least `loss`,
    /// plus the task's metrics (numbers at the top level; per-class tables and the like nested).
    fn score(&self, rows: Vec<Vec<f32>>, loss: f64) -> Result<Map<String, Value>>;
}

/// Files a finished fine-tuning run leaves in its output directory.
const RUN_FILES: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "eval_results.json",
    "metrics.jsonl",
    "loss.png",
];

impl<F: FinetuneTask + ?Sized> Task for F {
    /// An index into the training set.
    type Example = usize;
    /// The shard's indices.
    type Batch = Vec<usize>;

    fn architecture(&self) -> &'static str {
        FinetuneTask::architecture(self)
    }

    /// The training set, shuffled anew each epoch from the seed.
    fn examples(
        &self,
        epoch: usize,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<usize>> + '_>> {
        let mut order: Vec<usize> = (0..self.train_len()).collect();
        Rng::stream(seed, Stream::Shuffle, epoch as u64).shuffle(&mut order);
        Ok(Box::new(order.into_iter().map(Ok)))
    }

    fn example_tokens(&self, index: &usize) -> Option<usize> {
        self.train_tokens(*index)
    }

    fn examples_per_epoch(&self) -> Option<usize> {
        Some(self.train_len())
    }

    fn batch(&self, examples: &[&(usize, usize)], _epoch: usize) -> Result<Vec<usize>> {
        Ok(examples.iter().map(|(_, index)| *index).collect())
    }

    fn loss_terms(&self, batch: &Vec<usize>) -> Vec<usize> {
        FinetuneTask::loss_terms(self, batch)
    }

    fn loss(&self, batch: &Vec<usize>, weights: &[f64], mode: &Mode) -> Result<TrainLoss> {
        self.weighted_loss(batch, weights, mode)
    }

    fn eval_len(&self) -> usize {
        FinetuneTask::eval_len(self)
    }

    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch> {
        FinetuneTask::eval_batch(self, indices)
    }

    fn eval_tokens(&self, index: usize) -> usize {
        FinetuneTask::eval_tokens(self, index)
    }

    fn score(&self, evaluated: Evaluated) -> Result<Map<String, Value>> {
        FinetuneTask::score(self, evaluated.rows, evaluated.loss)
    }

    fn settings(&self, options: &TrainingOptions, max_steps: usize) -> Value {
        let metric = options.metric_for_best.as_deref().unwrap_or("loss");
        let mut settings = options.settings();
        settings.insert("learning_rate".into(), options.learning_rate.into());
        settings.insert("max_steps".into(), max_steps.into());
        let metric = metric.strip_prefix("eval_").unwrap_or(metric);
        settings.insert("metric_for_best".into(), metric.into());
        settings.insert("train_examples".into(), self.train_len().into());
        Value::Object(settings)
    }

    fn run_files(&self) -> &'static [&'static str] {
        &RUN_FILES
    }
}
