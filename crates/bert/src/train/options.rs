//! The settings of a training run, one struct for pretraining and fine-tuning, named as `transformers`'
//! `TrainingArguments` name them where it has the setting.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::kernels::Precision;
use crate::train::{AdamWConfig, World};

/// When the loop evaluates (`eval_strategy`); it also evaluates at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalStrategy {
    /// Only at the end.
    No,
    /// Every this many optimizer steps.
    Steps(usize),
    /// At the end of each epoch.
    Epoch,
}

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainingOptions {
    /// The output directory (`output_dir`): checkpoints, metrics, the model.
    pub out: PathBuf,
    /// The directory whose tokenizer files go beside the model.
    pub tokenizer_dir: PathBuf,
    /// Passes over the training data (`num_train_epochs`); with `max_steps` too, whichever ends first.
    pub epochs: Option<usize>,
    /// Optimizer steps; the learning rate decays to zero here. Default: `epochs` of the data.
    pub max_steps: Option<usize>,
    /// Examples per batch on each rank (`per_device_train_batch_size`).
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    /// The peak learning rate.
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    /// Overrides `warmup_ratio`.
    pub warmup_steps: Option<usize>,
    /// AdamW's betas, eps, `weight_decay` and `max_grad_norm`.
    pub optimizer: AdamWConfig,
    pub eval_strategy: EvalStrategy,
    /// The evaluation metric that picks the model kept (`metric_for_best_model`: `loss`, `accuracy`,
    /// `f1`...); `None` keeps the last model, with a checkpoint of it.
    pub metric_for_best: Option<String>,
    /// Stop after this many evaluations without improvement.
    pub early_stopping_patience: Option<usize>,
    /// Write a `metrics.jsonl` line every this many steps.
    pub logging_steps: usize,
    /// Write a resumable checkpoint every this many steps (0: never; one is always written when the
    /// stop flag ends a run).
    pub save_steps: usize,
    /// Keep this many newest checkpoints.
    pub save_total_limit: usize,
    /// Continue from the newest checkpoint in `out` (whose weights the caller loaded).
    pub resume: bool,
    /// Replace an earlier run in `out` (`overwrite_output_dir`).
    pub overwrite: bool,
    /// Seed of everything random: initial weights, order, masks, dropout.
    pub seed: u64,
    /// The ranks of a data-parallel run (one process by default); `batch_size` is per rank.
    pub world: World,
    /// Shards each rank's batch is cut into, trained at once on a thread each (0: one per thread).
    pub shards: usize,
    /// bf16: mixed precision (Linear products in bf16 with f32 sums; weights and optimizer f32).
    pub precision: Precision,
    /// Keep only each encoder layer's input in the forward pass and recompute the layer in the
    /// backward pass (`gradient_checkpointing`): less memory, one more forward pass per step.
    pub gradient_checkpointing: bool,
    /// Batch examples of similar length together (transformers' `group_by_length`), for tasks that
    /// know their examples' lengths: less padding computed.
    pub group_by_length: bool,
}

impl TrainingOptions {
    /// `transformers`' defaults: 3 epochs, learning rate 5e-5, batch 16, no warm-up, no weight decay,
    /// AdamW eps 1e-8, clipping at 1.0, evaluation each epoch, best model by evaluation loss.
    pub fn new(out: PathBuf, tokenizer_dir: PathBuf) -> Self {
        TrainingOptions {
            out,
            tokenizer_dir,
            epochs: Some(3),
            max_steps: None,
            batch_size: 16,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            warmup_ratio: 0.0,
            warmup_steps: None,
            optimizer: AdamWConfig {
                eps: 1e-8,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            eval_strategy: EvalStrategy::Epoch,
            metric_for_best: Some("loss".into()),
            early_stopping_patience: None,
            logging_steps: 10,
            save_steps: 500,
            save_total_limit: 2,
            resume: false,
            overwrite: false,
            seed: 42,
            world: World::single(),
            shards: 0,
            precision: Precision::F32,
            gradient_checkpointing: false,
            group_by_length: false,
        }
    }

    /// Examples per batch across all ranks.
    pub fn global_batch(&self) -> usize {
        self.batch_size.max(1) * self.world.size()
    }

    /// The optimizer steps of the run: `max_steps`, else `epochs` over `examples` per epoch (global
    /// batches grouped by accumulation, a partial group counting).
    pub fn total_steps(&self, examples: Option<usize>) -> Result<usize> {
        let per_epoch = examples.map(|n| {
            n.div_ceil(self.global_batch())
                .div_ceil(self.gradient_accumulation_steps.max(1))
                .max(1)
        });
        match (self.max_steps, self.epochs, per_epoch) {
            (Some(steps), _, _) => Ok(steps),
            (None, Some(epochs), Some(per_epoch)) => Ok(per_epoch * epochs),
            _ => Err(Error::InvalidInput(
                "give --max-steps: the number of training examples is not known ahead".into(),
            )),
        }
    }

    /// What every resumed run must share with the run it continues (a task adds its own): the seed,
    /// the batch, the accumulation and, under MPI, the number of ranks.
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut settings = serde_json::Map::new();
        settings.insert("seed".into(), self.seed.into());
        settings.insert("batch_size".into(), self.batch_size.into());
        let accumulation = self.gradient_accumulation_steps;
        settings.insert("gradient_accumulation_steps".into(), accumulation.into());
        if self.world.is_distributed() {
            settings.insert("world_size".into(), self.world.size().into());
        }
        if self.group_by_length {
            settings.insert("group_by_length".into(), true.into());
        }
        settings
    }

    /// The warm-up steps of a run of `total` steps.
    pub fn warmup(&self, total: usize) -> usize {
        self.warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total as f64).ceil() as usize)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err(Error::InvalidInput(
                "--batch-size and --gradient-accumulation-steps must be at least 1".into(),
            ));
        }
        if self.max_steps.is_none() && self.epochs == Some(0) {
            return Err(Error::InvalidInput("--epochs must be at least 1".into()));
        }
        Ok(())
    }
}
