//! The fine-tuning loop, one for every task: shuffled epochs, AdamW with warm-up and linear decay,
//! gradient clipping and accumulation, evaluation each epoch (or every N steps), the best model by a
//! chosen metric written as a Hugging Face checkpoint with its `eval_results.json`, early stopping, and a
//! stop flag (SIGINT/SIGTERM in the CLI) that ends the run with the best model so far kept.
//!
//! Tasks plug in through [`FinetuneTask`]: a training loss over chosen examples and an evaluation.
//!
//! Data-parallel: each batch is cut into shards trained at once, one per thread ([`Shards`]), and across
//! the ranks of `options.world`: every rank shuffles the same order and trains on its shards of each
//! global batch of `batch_size x ranks`, each shard's loss weighted by its part of the batch; gradients
//! are summed across ranks before each step, so the run equals one process with the global batch.
//! Evaluation batches are shared among all shards and their outputs gathered. Rank 0 alone writes
//! checkpoints, the model and metrics, and reports events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::files::write::write_file;
use crate::nn::Mode;
use crate::rng::{Rng, Stream};
use crate::train::exchange::{exchange_gradients, step_totals};
use crate::train::shards::{dropout_stream, loss_weights, Gradients, ShardPlan, Shards};
use crate::train::{
    check_same_settings, draw_loss_curve, non_finite, restore_checkpoint, save_checkpoint,
    trainable_tensors, AdamW, AdamWConfig, CheckpointParts, LinearSchedule, MetricsLog, OutDir,
    StepMetrics, TrainerState, World,
};
use crate::weights::config::BertConfig;
use crate::weights::params::ParamStore;
use crate::weights::save::{copy_tokenizer, save_model};

/// A fine-tuning task: its model, training examples and evaluation.
pub trait FinetuneTask: Sync {
    /// The head's class name in `config.json` (`BertForSequenceClassification`, ...).
    fn architecture(&self) -> &'static str;
    /// How many training examples there are.
    fn train_len(&self) -> usize;
    /// The mean loss over the training examples `indices`.
    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<TrainLoss>;
    /// How many terms that mean averages over: the examples, unless a task says otherwise.
    fn loss_terms(&self, indices: &[usize]) -> usize {
        indices.len()
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

    /// Whether there is an evaluation set.
    fn has_eval(&self) -> bool {
        self.eval_len() > 0
    }
}

/// A training loss over some examples.
pub struct TrainLoss {
    /// The mean loss.
    pub loss: Tensor,
    /// Tokens the examples hold.
    pub tokens: usize,
}

/// What a batch of evaluation items gives.
#[derive(Debug, Default)]
pub struct EvalBatch {
    /// One row per item (logits, or predicted ids), whatever [`FinetuneTask::score`] reads.
    pub rows: Vec<Vec<f32>>,
    /// The loss summed over the batch's terms.
    pub loss_sum: f64,
    /// How many terms the loss sums (items, or labelled tokens).
    pub loss_terms: usize,
}

/// Scores `task` on its evaluation set on one process, its ops on every thread.
pub fn evaluate(task: &dyn FinetuneTask, batch_size: usize) -> Result<Map<String, Value>> {
    evaluate_on(task, batch_size, &World::single(), &Shards::new(1)?)
}

/// Scores `task` on its evaluation set, the batches shared among the shards of every rank of `world`
/// (every rank gets the same metrics).
fn evaluate_on(
    task: &dyn FinetuneTask,
    batch_size: usize,
    world: &World,
    shards: &Shards,
) -> Result<Map<String, Value>> {
    // Items of similar length batched together: the rows come back in item order all the same.
    let mut items: Vec<usize> = (0..task.eval_len()).collect();
    items.sort_by_key(|&i| task.eval_tokens(i));
    let batches: Vec<&[usize]> = items.chunks(batch_size.max(1)).collect();
    let plan = ShardPlan::new(world, shards, batches.len());
    let parts = shards.run(|s| -> Result<_> {
        let (mut mine, mut rows, mut loss) = (Vec::new(), Vec::new(), [0f64; 2]);
        for batch in plan.positions[s].iter().map(|&b| batches[b]) {
            let out = task.eval_batch(batch)?;
            loss[0] += out.loss_sum;
            loss[1] += out.loss_terms as f64;
            mine.extend(batch.iter().map(|&i| i as u64));
            rows.extend(out.rows);
        }
        Ok((mine, rows, loss))
    })?;
    let (mut mine, mut rows, mut loss) = (Vec::new(), Vec::new(), [0f64; 2]);
    for (items, part_rows, part_loss) in parts {
        mine.extend(items);
        rows.extend(part_rows);
        loss[0] += part_loss[0];
        loss[1] += part_loss[1];
    }
    world.sum_f64(&mut loss)?;
    let rows = gather_rows(world, &mine, rows, items.len())?;
    task.score(rows, loss[0] / loss[1].max(1.0))
}

/// The rows of every rank for its `items` (in any order), in item order (`count` items in all).
fn gather_rows(
    world: &World,
    items: &[u64],
    rows: Vec<Vec<f32>>,
    count: usize,
) -> Result<Vec<Vec<f32>>> {
    if !world.is_distributed() {
        let mut ordered = vec![Vec::new(); count];
        for (&item, row) in items.iter().zip(rows) {
            ordered[item as usize] = row;
        }
        return Ok(ordered);
    }
    let mut index: Vec<u64> = Vec::with_capacity(items.len() * 2);
    for (item, row) in items.iter().zip(&rows) {
        index.extend([*item, row.len() as u64]);
    }
    let flat: Vec<f32> = rows.concat();
    let index = world.collective().all_gather_u64(&index)?;
    let flat = world.collective().all_gather_f32(&flat)?;
    let mut ordered = vec![Vec::new(); count];
    let mut offset = 0;
    for pair in index.chunks(2) {
        let (item, len) = (pair[0] as usize, pair[1] as usize);
        ordered[item] = flat[offset..offset + len].to_vec();
        offset += len;
    }
    Ok(ordered)
}

/// Settings of a fine-tuning run (defaults: `transformers`' `TrainingArguments`).
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    pub out: PathBuf,
    /// The directory whose tokenizer files go beside the model.
    pub tokenizer_dir: PathBuf,
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    /// Overrides `warmup_ratio`.
    pub warmup_steps: Option<usize>,
    pub optimizer: AdamWConfig,
    /// Evaluate every this many steps; `None`: at the end of each epoch.
    pub eval_steps: Option<usize>,
    /// The evaluation metric that picks the best model (`loss`, `accuracy`, `f1`...).
    pub metric_for_best: String,
    /// Stop after this many evaluations without improvement.
    pub early_stopping_patience: Option<usize>,
    pub log_every: usize,
    /// Write a resumable checkpoint every this many steps (0: never; one is always written when the
    /// stop flag ends a run).
    pub save_steps: usize,
    /// Keep this many newest checkpoints.
    pub save_total_limit: usize,
    /// Continue from the newest checkpoint in `out` (whose weights the caller loaded).
    pub resume: bool,
    pub seed: u64,
    pub overwrite: bool,
    /// The ranks of a data-parallel run (one process by default); `batch_size` is per rank.
    pub world: World,
    /// Shards each rank's batch is cut into, trained at once on a thread each (0: one per thread).
    pub shards: usize,
}

impl FinetuneOptions {
    /// `transformers`' defaults: 3 epochs, learning rate 5e-5, batch 16, no warm-up, no weight decay,
    /// AdamW eps 1e-8, clipping at 1.0, best model by evaluation loss.
    pub fn new(out: PathBuf, tokenizer_dir: PathBuf) -> Self {
        FinetuneOptions {
            out,
            tokenizer_dir,
            epochs: 3,
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
            eval_steps: None,
            metric_for_best: "loss".into(),
            early_stopping_patience: None,
            log_every: 10,
            save_steps: 500,
            save_total_limit: 2,
            resume: false,
            seed: 42,
            overwrite: false,
            world: World::single(),
            shards: 0,
        }
    }

    /// Examples per batch across all ranks.
    fn global_batch(&self) -> usize {
        self.batch_size.max(1) * self.world.size()
    }

    /// Optimizer steps per epoch: global batches, grouped by accumulation (a partial group counts).
    fn steps_per_epoch(&self, examples: usize) -> usize {
        let batches = examples.div_ceil(self.global_batch());
        batches
            .div_ceil(self.gradient_accumulation_steps.max(1))
            .max(1)
    }
}

/// What the loop reports while it runs (on rank 0 only).
pub enum FinetuneEvent<'a> {
    Started {
        /// Above 0 when resuming.
        step: usize,
        max_steps: usize,
        parameters: usize,
        train_examples: usize,
    },
    Step(&'a StepMetrics),
    Eval {
        step: usize,
        metrics: &'a Map<String, Value>,
        best: bool,
    },
    EarlyStopped {
        step: usize,
    },
    /// A resumable checkpoint was written.
    Saved(&'a Path),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    pub steps: usize,
    /// False when the stop flag ended it early.
    pub finished: bool,
    /// The best evaluation (what `eval_results.json` holds), if there was an evaluation set.
    pub best: Option<Map<String, Value>>,
}

/// Files a finished run leaves in its output directory.
const RUN_FILES: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "eval_results.json",
    "metrics.jsonl",
    "loss.png",
];

/// Trains `task`'s model (whose trainable weights are `store`'s) and writes the best one to `options.out`.
pub fn finetune(
    task: &dyn FinetuneTask,
    store: &ParamStore,
    config: &BertConfig,
    options: &FinetuneOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(FinetuneEvent),
) -> Result<FinetuneOutcome> {
    check_options(options)?;
    if task.train_len() == 0 {
        return Err(Error::InvalidInput(
            "no training examples are left to train on".into(),
        ));
    }
    let out_dir = OutDir::inspect(&options.out, &RUN_FILES, options.resume, options.overwrite)?;
    // Every rank has read the output directory before rank 0 changes it.
    options.world.barrier()?;
    if options.world.is_leader() {
        out_dir.clear_previous_run()?;
    }
    let mut run = Run::new(task, store, config, options, out_dir.resume_from.as_deref())?;
    let leader = options.world.is_leader();
    let on_event = &mut |event: FinetuneEvent| {
        if leader {
            on_event(event)
        }
    };
    on_event(FinetuneEvent::Started {
        step: run.step,
        max_steps: run.max_steps,
        parameters: run.vars.iter().map(|v| v.elem_count()).sum(),
        train_examples: task.train_len(),
    });
    let mut finished = true;
    'epochs: while run.step < run.max_steps {
        let order = run.epoch_order();
        let batches: Vec<&[usize]> = order.chunks(options.global_batch()).collect();
        let groups: Vec<&[&[usize]]> = batches
            .chunks(options.gradient_accumulation_steps)
            .collect();
        for (index, group) in groups.iter().enumerate().skip(run.steps_in_epoch) {
            run.train_step(group, stop, on_event)?;
            let due = run.evaluation_due(index + 1 == groups.len()) && task.has_eval();
            if due && run.evaluate(on_event)? {
                on_event(FinetuneEvent::EarlyStopped { step: run.step });
                break 'epochs;
            }
            let stopping = run.stop_requested
                || (!options.world.is_distributed() && stop.load(Ordering::SeqCst));
            let save_steps = options.save_steps;
            if stopping || (save_steps > 0 && run.step.is_multiple_of(save_steps)) {
                let path = run.checkpoint()?;
                on_event(FinetuneEvent::Saved(&path));
            }
            if stopping {
                finished = false;
                break 'epochs;
            }
            if run.step == run.max_steps {
                break 'epochs;
            }
        }
        run.epoch += 1;
        run.steps_in_epoch = 0;
    }
    run.finish(finished)
}

/// A fine-tuning run in progress: the optimizer and schedule, where it stands, the best evaluation.
struct Run<'a> {
    task: &'a dyn FinetuneTask,
    store: &'a ParamStore,
    config: &'a BertConfig,
    options: &'a FinetuneOptions,
    optimizer: AdamW,
    vars: Vec<Tensor>,
    schedule: LinearSchedule,
    metrics: MetricsLog,
    best: Best,
    /// Evaluations since the best one.
    since_best: usize,
    shards: Shards,
    step: usize,
    epoch: usize,
    /// Optimizer steps already taken in this epoch (when resuming mid-epoch).
    steps_in_epoch: usize,
    max_steps: usize,
    started: Instant,
    /// Training seconds of the runs this one continues.
    elapsed_before: f64,
    /// Whether a rank was asked to stop during the last step.
    stop_requested: bool,
}

impl<'a> Run<'a> {
    fn new(
        task: &'a dyn FinetuneTask,
        store: &'a ParamStore,
        config: &'a BertConfig,
        options: &'a FinetuneOptions,
        resume_from: Option<&Path>,
    ) -> Result<Self> {
        let per_epoch = options.steps_per_epoch(task.train_len());
        let max_steps = options.max_steps.unwrap_or(per_epoch * options.epochs);
        let warmup_steps = options
            .warmup_steps
            .unwrap_or_else(|| (options.warmup_ratio * max_steps as f64).ceil() as usize);
        let mut optimizer = AdamW::new(store.vars(), options.optimizer)?;
        let resumed = resume_from
            .map(|dir| restore_checkpoint(dir, &mut optimizer, &Device::Cpu))
            .transpose()?;
        let mut run = Run {
            task,
            store,
            config,
            options,
            optimizer,
            vars: trainable_tensors(store),
            schedule: LinearSchedule {
                peak_lr: options.learning_rate,
                warmup_steps,
                total_steps: max_steps,
            },
            // Lines past the checkpoint (from a run that then crashed) are dropped.
            metrics: if options.world.is_leader() {
                MetricsLog::open(&options.out, resumed.as_ref().map_or(0, |s| s.step))?
            } else {
                MetricsLog::discard()
            },
            best: Best::new(&options.metric_for_best),
            since_best: 0,
            shards: Shards::for_batch(options.shards, options.batch_size)?,
            step: 0,
            epoch: 0,
            steps_in_epoch: 0,
            max_steps,
            started: Instant::now(),
            elapsed_before: 0.0,
            stop_requested: false,
        };
        if let (Some(state), Some(dir)) = (resumed, resume_from) {
            run.continue_from(state, dir)?;
        }
        Ok(run)
    }

    /// The settings a resumed run must share with the run it continues.
    fn settings(&self) -> Value {
        let o = self.options;
        let mut settings = serde_json::json!({
            "seed": o.seed,
            "batch_size": o.batch_size,
            "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "learning_rate": o.learning_rate,
            "max_steps": self.max_steps,
            "metric_for_best": self.best.metric,
            "train_examples": self.task.train_len(),
        });
        if o.world.is_distributed() {
            settings["world_size"] = o.world.size().into();
        }
        settings
    }

    /// Continues where the checkpoint in `dir` (whose optimizer moments are restored) stood: position,
    /// dropout stream, best evaluation.
    fn continue_from(&mut self, state: TrainerState, dir: &Path) -> Result<()> {
        check_same_settings(&state.settings, &self.settings(), dir)?;
        self.step = state.step;
        self.epoch = state.epoch;
        self.steps_in_epoch = state.examples_in_epoch;
        self.elapsed_before = state.elapsed_seconds;
        self.best.restore(&state.best);
        self.since_best = state.best["since_best"].as_u64().unwrap_or(0) as usize;
        Ok(())
    }

    /// Writes `checkpoint-{step}` (model, optimizer moments, position) atomically (rank 0 alone).
    fn checkpoint(&mut self) -> Result<PathBuf> {
        if !self.options.world.is_leader() {
            return Ok(self.options.out.join(format!("checkpoint-{}", self.step)));
        }
        self.metrics.flush()?;
        let state = TrainerState {
            step: self.step,
            epoch: self.epoch,
            examples_in_epoch: self.steps_in_epoch,
            tokens_seen: 0,
            elapsed_seconds: self.elapsed(),
            settings: self.settings(),
            best: self.best.state(self.since_best),
        };
        let parts = CheckpointParts {
            config: self.config,
            architecture: self.task.architecture(),
            vars: &self.store.vars(),
            optimizer: &self.optimizer,
            state: &state,
            tokenizer_dir: &self.options.tokenizer_dir,
        };
        save_checkpoint(&self.options.out, &parts, self.options.save_total_limit)
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// This epoch's order of the training examples, shuffled from the seed.
    fn epoch_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.task.train_len()).collect();
        Rng::stream(self.options.seed, Stream::Shuffle, self.epoch as u64).shuffle(&mut order);
        order
    }

    /// One optimizer step over the global batches of `group` (this rank's share of each), logged.
    fn train_step(
        &mut self,
        group: &[&[usize]],
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(FinetuneEvent),
    ) -> Result<()> {
        let step_start = Instant::now();
        let world = &self.options.world;
        let first_micro_batch = (self.step * self.options.gradient_accumulation_steps) as u64;
        let batches = TrainBatches {
            task: self.task,
            world,
            shards: &self.shards,
            seed: self.options.seed,
            first_micro_batch,
        };
        let gathered = batches.gather(group, &self.vars)?;
        let totals = step_totals(world, gathered.loss, gathered.tokens, stop)?;
        if !totals.loss.is_finite() {
            return Err(non_finite(
                format!("the loss became {}", totals.loss),
                self.step + 1,
                &None,
            ));
        }
        self.stop_requested = totals.stop;
        let (grads, exchange_seconds) = exchange_gradients(world, gathered.grads, &self.vars)?;
        let lr = self.schedule.lr(self.step);
        let grad_norm = self
            .optimizer
            .step(&grads, lr)
            .map_err(|e| non_finite(e.to_string(), self.step + 1, &None))?;
        self.step += 1;
        self.steps_in_epoch += 1;
        let step_seconds = step_start.elapsed().as_secs_f64();
        let step_metrics = StepMetrics {
            step: self.step,
            epoch: self.epoch,
            loss: totals.loss,
            lr,
            grad_norm,
            tokens_per_second: totals.tokens as f64 / step_seconds.max(1e-9),
            step_seconds,
            elapsed_seconds: self.elapsed(),
            exchange_seconds,
        };
        on_event(FinetuneEvent::Step(&step_metrics));
        if self.step.is_multiple_of(self.options.log_every.max(1)) || self.step == self.max_steps {
            self.metrics.write(&step_metrics)?;
        }
        Ok(())
    }

    /// Whether to evaluate now: every `eval_steps`, else at the end of each epoch, and at the end.
    fn evaluation_due(&self, epoch_end: bool) -> bool {
        self.step == self.max_steps
            || match self.options.eval_steps {
                Some(n) => self.step.is_multiple_of(n.max(1)),
                None => epoch_end,
            }
    }

    /// Evaluates, keeps the model if it is the best so far; says whether early stopping is due.
    fn evaluate(&mut self, on_event: &mut dyn FnMut(FinetuneEvent)) -> Result<bool> {
        let eval = self.scored()?;
        let improved = self.best.offer(&eval)?;
        if improved {
            self.save_best(&eval)?;
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        self.metrics.write(&numbers_only(&eval))?;
        on_event(FinetuneEvent::Eval {
            step: self.step,
            metrics: &eval,
            best: improved,
        });
        Ok(self
            .options
            .early_stopping_patience
            .is_some_and(|p| self.since_best >= p))
    }

    /// The task's evaluation, stamped with the step and epoch.
    fn scored(&self) -> Result<Map<String, Value>> {
        let options = self.options;
        let mut eval = evaluate_on(self.task, options.batch_size, &options.world, &self.shards)?;
        eval.insert("step".into(), self.step.into());
        eval.insert("epoch".into(), self.epoch.into());
        Ok(eval)
    }

    /// Writes the model, its tokenizer and (with an evaluation) `eval_results.json` to the output
    /// (rank 0 alone).
    fn save_best(&self, eval: &Map<String, Value>) -> Result<()> {
        if !self.options.world.is_leader() {
            return Ok(());
        }
        let out = &self.options.out;
        save_model(
            out,
            self.config,
            self.task.architecture(),
            &self.store.vars(),
        )?;
        copy_tokenizer(&self.options.tokenizer_dir, out)?;
        if eval.is_empty() {
            return Ok(());
        }
        write_eval_results(out, eval)
    }

    /// Completes the output directory: the loss curve, and the model when no evaluation chose one.
    fn finish(mut self, finished: bool) -> Result<FinetuneOutcome> {
        self.metrics.flush()?;
        if self.options.world.is_leader() {
            draw_loss_curve(&self.options.out, "loss_eval")?;
        }
        if !self.task.has_eval() {
            self.save_best(&Map::new())?;
        } else if self.best.value.is_none() {
            // Stopped before the first evaluation: evaluate what there is, so the directory is complete.
            let eval = self.scored()?;
            self.best.offer(&eval)?;
            self.save_best(&eval)?;
        }
        Ok(FinetuneOutcome {
            steps: self.step,
            finished,
            best: self.best.metrics,
        })
    }
}

fn check_options(options: &FinetuneOptions) -> Result<()> {
    if options.batch_size == 0 || options.gradient_accumulation_steps == 0 {
        return Err(Error::InvalidInput(
            "--batch-size and --gradient-accumulation-steps must be at least 1".into(),
        ));
    }
    if options.max_steps.is_none() && options.epochs == 0 {
        return Err(Error::InvalidInput("--epochs must be at least 1".into()));
    }
    Ok(())
}

/// The global batches of one optimizer step, trained in shards across threads and ranks.
struct TrainBatches<'a> {
    task: &'a dyn FinetuneTask,
    world: &'a World,
    shards: &'a Shards,
    seed: u64,
    /// The run's count of micro-batches before this step (for the dropout streams).
    first_micro_batch: u64,
}

impl TrainBatches<'_> {
    /// Runs this rank's shards of each global batch of `group` forward and backward, each shard's loss
    /// weighted by its part of the batch; returns the gradients averaged over the batches.
    fn gather(&self, group: &[&[usize]], vars: &[Tensor]) -> Result<Gradients> {
        let mut gathered = Gradients::default();
        for (micro, global) in group.iter().enumerate() {
            let micro_batch = self.first_micro_batch + micro as u64;
            for part in self.run_shards(global, micro_batch)?.into_iter().flatten() {
                gathered.add(part, vars)?;
            }
        }
        gathered.average(group.len());
        Ok(gathered)
    }

    /// This rank's shards of one global batch, forward and backward at once.
    fn run_shards(&self, global: &[usize], micro_batch: u64) -> Result<Vec<Option<Gradients>>> {
        let plan = ShardPlan::new(self.world, self.shards, global.len());
        let indices: Vec<Vec<usize>> = plan
            .positions
            .iter()
            .map(|positions| positions.iter().map(|&p| global[p]).collect())
            .collect();
        let counts: Vec<Vec<usize>> = indices
            .iter()
            .map(|shard| vec![self.task.loss_terms(shard)])
            .collect();
        let weights = loss_weights(self.world, &counts)?;
        let (task, seed) = (self.task, self.seed);
        self.shards.run(|s| -> Result<_> {
            if indices[s].is_empty() {
                return Ok(None);
            }
            let dropout = dropout_stream(seed, micro_batch, plan.global[s]);
            let part = task.train_loss(&indices[s], &Mode::Train(&dropout))?;
            let loss = (part.loss * weights[s][0])?;
            Gradients::of(&loss, part.tokens).map(Some)
        })
    }
}

/// The best evaluation so far by one metric (lower is better for losses and errors, higher otherwise).
struct Best {
    metric: String,
    greater_is_better: bool,
    value: Option<f64>,
    metrics: Option<Map<String, Value>>,
}

impl Best {
    fn new(metric: &str) -> Self {
        let metric = metric.strip_prefix("eval_").unwrap_or(metric).to_string();
        let greater_is_better = !(metric.contains("loss") || metric == "mse");
        Best {
            metric,
            greater_is_better,
            value: None,
            metrics: None,
        }
    }

    /// What a checkpoint keeps of it.
    fn state(&self, since_best: usize) -> Value {
        serde_json::json!({"value": self.value, "metrics": self.metrics, "since_best": since_best})
    }

    fn restore(&mut self, state: &Value) {
        self.value = state["value"].as_f64();
        self.metrics = state["metrics"].as_object().cloned();
    }

    /// Records `eval` if it beats the best so far; says whether it did.
    fn offer(&mut self, eval: &Map<String, Value>) -> Result<bool> {
        let value = eval
            .get(&self.metric)
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                let known: Vec<&str> = eval
                    .iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, _)| k.as_str())
                    .collect();
                Error::InvalidInput(format!(
                    "--metric-for-best `{}`: the evaluation gives no such metric (it gives: {})",
                    self.metric,
                    known.join(", ")
                ))
            })?;
        let better = match self.value {
            None => true,
            Some(best) if self.greater_is_better => value > best,
            Some(best) => value < best,
        };
        if better {
            self.value = Some(value);
            self.metrics = Some(eval.clone());
        }
        Ok(better)
    }
}

/// The numeric top-level entries of an evaluation, as a `metrics.jsonl` line (`loss` renamed
/// `loss_eval` so the loss curve tells it from the training loss).
fn numbers_only(eval: &Map<String, Value>) -> Map<String, Value> {
    eval.iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, v)| {
            let key = if k == "loss" { "loss_eval" } else { k };
            (key.to_string(), v.clone())
        })
        .collect()
}

fn write_eval_results(out: &Path, eval: &Map<String, Value>) -> Result<()> {
    let json = serde_json::to_string_pretty(eval).map_err(|e| Error::Training(e.to_string()))?;
    write_file(
        &out.join("eval_results.json"),
        format!("{json}\n").as_bytes(),
    )
}
