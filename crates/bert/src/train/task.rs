//! What a training task gives the one training loop ([`crate::train::trainer`]): its examples epoch by
//! epoch, how a shard's examples become a batch and a loss, its evaluation, and what the run keeps.
//! Pretraining (masked LM + next-sentence prediction) and every fine-tuning task (classification,
//! token classification, question answering) are tasks; the loop does the rest.

use candle_core::Tensor;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::nn::Mode;
use crate::train::options::TrainingOptions;

/// A training task on the one loop.
pub trait Task: Sync {
    /// One training example as an epoch yields it: an index into a data set, or an instance made
    /// from the corpus.
    type Example: Send + Sync;
    /// A shard's examples made ready for the model.
    type Batch: Send + Sync;

    /// The head's class name in `config.json` (`BertForPreTraining`, ...).
    fn architecture(&self) -> &'static str;

    /// The training examples of `epoch`, in training order (`seed`: the run's). A resumed run skips
    /// the ones its checkpoint had used.
    fn examples(
        &self,
        epoch: usize,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Self::Example>> + '_>>;

    /// The tokens of a training example, by which `group_by_length` batches examples of similar
    /// length together (`None`: the task does not say, and its order is kept).
    fn example_tokens(&self, _example: &Self::Example) -> Option<usize> {
        None
    }

    /// How many examples every epoch has, when that is known before the run (it sets how many steps
    /// `epochs` make).
    fn examples_per_epoch(&self) -> Option<usize>;

    /// The batch of one shard: its examples, each with its position in the epoch (never empty).
    fn batch(&self, examples: &[&(usize, Self::Example)], epoch: usize) -> Result<Self::Batch>;

    /// How many terms each of the batch's losses averages over: one count per loss (the examples;
    /// for pretraining, the masked tokens and the sentence pairs).
    fn loss_terms(&self, batch: &Self::Batch) -> Vec<usize>;

    /// The batch's losses, each times its weight (its shard's share of the global batch), summed.
    fn loss(&self, batch: &Self::Batch, weights: &[f64], mode: &Mode) -> Result<TrainLoss>;

    /// How many items the evaluation set has, 0 without one.
    fn eval_len(&self) -> usize;

    /// Runs the evaluation items `indices`.
    fn eval_batch(&self, indices: &[usize]) -> Result<EvalBatch>;

    /// How many counts each evaluation batch gives ([`EvalBatch::counts`]); 0 unless the task sums
    /// statistics of its own.
    fn eval_counts(&self) -> usize {
        0
    }

    /// The tokens of evaluation item `index`, by which evaluation batches are grouped so that little
    /// padding is computed (0 for every item keeps the set's order).
    fn eval_tokens(&self, _index: usize) -> usize {
        0
    }

    /// The metrics of a whole evaluation: numbers at the top level (per-class tables and the like
    /// nested).
    fn score(&self, evaluated: Evaluated) -> Result<Map<String, Value>>;

    /// Whether there is an evaluation set.
    fn has_eval(&self) -> bool {
        self.eval_len() > 0
    }

    /// The settings a resumed run must share with the run it continues.
    fn settings(&self, options: &TrainingOptions, max_steps: usize) -> Value;

    /// The evaluation metric the loss curve draws beside the training loss.
    fn eval_loss_key(&self) -> &'static str {
        "loss_eval"
    }

    /// Files a finished run leaves in its output directory (what `--overwrite` may remove).
    fn run_files(&self) -> &'static [&'static str];
}

/// A training loss over some examples.
pub struct TrainLoss {
    /// The loss (a scalar tensor).
    pub loss: Tensor,
    /// Tokens the examples hold.
    pub tokens: usize,
}

/// What a batch of evaluation items gives.
#[derive(Debug, Default)]
pub struct EvalBatch {
    /// One row per item (logits, or predicted ids), whatever the task's `score` reads.
    pub rows: Vec<Vec<f32>>,
    /// The loss summed over the batch's terms.
    pub loss_sum: f64,
    /// How many terms the loss sums (items, or labelled tokens).
    pub loss_terms: usize,
    /// Further sums the task keeps (correct predictions, ...), `eval_counts` of them, added up over
    /// every batch.
    pub counts: Vec<f64>,
}

/// A whole evaluation, gathered from every shard and rank.
#[derive(Debug, Default)]
pub struct Evaluated {
    /// Every item's row, in item order.
    pub rows: Vec<Vec<f32>>,
    /// The mean loss over every term.
    pub loss: f64,
    /// The batches' counts, summed.
    pub counts: Vec<f64>,
}
