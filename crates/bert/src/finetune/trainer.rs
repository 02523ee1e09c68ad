//! The fine-tuning loop, one for every task: shuffled epochs, AdamW with warm-up and linear decay,
//! gradient clipping and accumulation, evaluation each epoch (or every N steps), the best model by a
//! chosen metric written as a Hugging Face checkpoint with its `eval_results.json`, early stopping, and a
//! stop flag (SIGINT/SIGTERM in the CLI) that ends the run with the best model so far kept.
//!
//! Tasks plug in through [`FinetuneTask`]: a training loss over chosen examples and an evaluation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::files::write_file;
use crate::model::Mode;
use crate::params::ParamStore;
use crate::rng::{Rng, Stream};
use crate::save::{copy_tokenizer, save_model};
use crate::train::{
    accumulate, check_same_settings, draw_loss_curve, non_finite, restore_checkpoint,
    save_checkpoint, scale, trainable_tensors, AdamW, AdamWConfig, CheckpointParts, LinearSchedule,
    MetricsLog, OutDir, StepMetrics, TrainerState,
};

/// A fine-tuning task: its model, training examples and evaluation.
pub trait FinetuneTask {
    /// The head's class name in `config.json` (`BertForSequenceClassification`, ...).
    fn architecture(&self) -> &'static str;
    /// How many training examples there are.
    fn train_len(&self) -> usize;
    /// The mean loss over the training examples `indices`, and how many tokens they hold.
    fn train_loss(&self, indices: &[usize], mode: &Mode) -> Result<(Tensor, usize)>;
    /// Whether there is an evaluation set.
    fn has_eval(&self) -> bool;
    /// Scores the model on the evaluation set: at least `loss`, plus the task's metrics (numbers at the
    /// top level; per-class tables and the like nested).
    fn evaluate(&self, batch_size: usize) -> Result<Map<String, Value>>;
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
        }
    }

    /// Optimizer steps per epoch: batches, grouped by accumulation (a partial group counts).
    fn steps_per_epoch(&self, examples: usize) -> usize {
        let batches = examples.div_ceil(self.batch_size.max(1));
        batches
            .div_ceil(self.gradient_accumulation_steps.max(1))
            .max(1)
    }
}

/// What the loop reports while it runs.
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
    out_dir.clear_previous_run()?;
    let mut run = Run::new(task, store, config, options, out_dir.resume_from.as_deref())?;
    on_event(FinetuneEvent::Started {
        step: run.step,
        max_steps: run.max_steps,
        parameters: run.vars.iter().map(|v| v.elem_count()).sum(),
        train_examples: task.train_len(),
    });
    let mut finished = true;
    'epochs: while run.step < run.max_steps {
        let order = run.epoch_order();
        let batches: Vec<&[usize]> = order.chunks(options.batch_size).collect();
        let groups: Vec<&[&[usize]]> = batches
            .chunks(options.gradient_accumulation_steps)
            .collect();
        for (index, group) in groups.iter().enumerate().skip(run.steps_in_epoch) {
            run.train_step(group, on_event)?;
            let due = run.evaluation_due(index + 1 == groups.len()) && task.has_eval();
            if due && run.evaluate(on_event)? {
                on_event(FinetuneEvent::EarlyStopped { step: run.step });
                break 'epochs;
            }
            let stopping = stop.load(Ordering::SeqCst);
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
    dropout: Mutex<Rng>,
    step: usize,
    epoch: usize,
    /// Optimizer steps already taken in this epoch (when resuming mid-epoch).
    steps_in_epoch: usize,
    max_steps: usize,
    started: Instant,
    /// Training seconds of the runs this one continues.
    elapsed_before: f64,
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
            metrics: MetricsLog::open(&options.out, resumed.as_ref().map_or(0, |s| s.step))?,
            best: Best::new(&options.metric_for_best),
            since_best: 0,
            dropout: Mutex::new(Rng::stream(options.seed, Stream::Dropout, 0)),
            step: 0,
            epoch: 0,
            steps_in_epoch: 0,
            max_steps,
            started: Instant::now(),
            elapsed_before: 0.0,
        };
        if let (Some(state), Some(dir)) = (resumed, resume_from) {
            run.continue_from(state, dir)?;
        }
        Ok(run)
    }

    /// The settings a resumed run must share with the run it continues.
    fn settings(&self) -> Value {
        let o = self.options;
        serde_json::json!({
            "seed": o.seed,
            "batch_size": o.batch_size,
            "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "learning_rate": o.learning_rate,
            "max_steps": self.max_steps,
            "metric_for_best": self.best.metric,
            "train_examples": self.task.train_len(),
        })
    }

    /// Continues where the checkpoint in `dir` (whose optimizer moments are restored) stood: position,
    /// dropout stream, best evaluation.
    fn continue_from(&mut self, state: TrainerState, dir: &Path) -> Result<()> {
        check_same_settings(&state.settings, &self.settings(), dir)?;
        self.step = state.step;
        self.epoch = state.epoch;
        self.steps_in_epoch = state.examples_in_epoch;
        self.elapsed_before = state.elapsed_seconds;
        self.dropout = Mutex::new(Rng::new(state.dropout_rng));
        self.best.restore(&state.best);
        self.since_best = state.best["since_best"].as_u64().unwrap_or(0) as usize;
        Ok(())
    }

    /// Writes `checkpoint-{step}` (model, optimizer moments, position) atomically.
    fn checkpoint(&mut self) -> Result<PathBuf> {
        self.metrics.flush()?;
        let state = TrainerState {
            step: self.step,
            epoch: self.epoch,
            examples_in_epoch: self.steps_in_epoch,
            dropout_rng: self
                .dropout
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(),
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

    /// One optimizer step over the batches of `group`, logged.
    fn train_step(
        &mut self,
        group: &[&[usize]],
        on_event: &mut dyn FnMut(FinetuneEvent),
    ) -> Result<()> {
        let step_start = Instant::now();
        let (grads, loss, tokens) = gather(self.task, group, &self.dropout, &self.vars)?;
        if !loss.is_finite() {
            return Err(non_finite(
                format!("the loss became {loss}"),
                self.step + 1,
                &None,
            ));
        }
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
            loss,
            lr,
            grad_norm,
            tokens_per_second: tokens as f64 / step_seconds.max(1e-9),
            step_seconds,
            elapsed_seconds: self.elapsed(),
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
        let mut eval = self.task.evaluate(self.options.batch_size)?;
        eval.insert("step".into(), self.step.into());
        eval.insert("epoch".into(), self.epoch.into());
        Ok(eval)
    }

    /// Writes the model, its tokenizer and (with an evaluation) `eval_results.json` to the output.
    fn save_best(&self, eval: &Map<String, Value>) -> Result<()> {
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
        draw_loss_curve(&self.options.out, "loss_eval")?;
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

/// Runs the batches of one optimizer step forward and backward; returns the averaged gradients, the
/// mean loss and the tokens seen.
fn gather(
    task: &dyn FinetuneTask,
    group: &[&[usize]],
    dropout: &Mutex<Rng>,
    vars: &[Tensor],
) -> Result<(GradStore, f64, usize)> {
    let (mut grads, mut loss_sum, mut tokens) = (None, 0.0, 0);
    for indices in group {
        let (loss, n) = task.train_loss(indices, &Mode::Train(dropout))?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(Error::Training(format!("the loss became {value}")));
        }
        grads = Some(accumulate(grads, loss.backward()?, vars)?);
        loss_sum += value;
        tokens += n;
    }
    let mut grads = grads.ok_or_else(|| Error::Training("an empty optimizer step".into()))?;
    if group.len() > 1 {
        scale(&mut grads, vars, 1.0 / group.len() as f64)?;
    }
    Ok((grads, loss_sum / group.len() as f64, tokens))
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
