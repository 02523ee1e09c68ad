//! The training loop, one for every task ([`Task`]): epochs of examples in global batches, AdamW with
//! warm-up and linear decay, gradient clipping and accumulation, evaluation (every N steps, each
//! epoch, or at the end), the model kept (the best by a metric, or the last with a checkpoint of it)
//! as a Hugging Face checkpoint, early stopping, atomic checkpoints that resume to the same result as
//! an uninterrupted run, a stop flag (SIGINT/SIGTERM in the CLI) that saves first, and a clear stop,
//! keeping the last good checkpoint, if the loss stops being finite.
//!
//! Data-parallel: each batch is cut into shards trained at once, one per thread ([`Shards`]), and across
//! the ranks of `options.world`: every rank walks the same examples and trains on its shards of each
//! global batch of `batch_size x ranks`, each shard's losses weighted by its part of the batch;
//! gradients are summed across ranks before each step, so every rank holds the same weights and the
//! run equals one process with the global batch. Evaluation batches are shared among all shards and
//! their outputs gathered. Rank 0 alone writes checkpoints, the model and metrics, and reports events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::files::write::write_file;
use crate::nn::checkpoint::Recomputation;
use crate::nn::Mode;
use crate::rng::{Rng, Stream};
use crate::train::exchange::{exchange_gradients, step_totals};
use crate::train::options::{EvalStrategy, TrainingOptions};
use crate::train::shards::{dropout_stream, loss_weights, Gradients, ShardPlan, Shards};
use crate::train::task::{Evaluated, Task};
use crate::train::{
    check_same_settings, draw_loss_curve, non_finite, restore_checkpoint, save_checkpoint,
    trainable_tensors, AdamW, CheckpointParts, LinearSchedule, MetricsLog, OutDir, StepMetrics,
    TrainerState, World,
};
use crate::weights::params::ParamStore;
use crate::weights::save::{copy_tokenizer, save_model, SavedConfig};

/// What the loop reports while it runs (on rank 0 only).
pub enum Event<'a> {
    Started {
        /// Above 0 when resuming.
        step: usize,
        max_steps: usize,
        parameters: usize,
        /// Training examples per epoch, when known ahead.
        train_examples: Option<usize>,
    },
    Step(&'a StepMetrics),
    Eval {
        step: usize,
        metrics: &'a Map<String, Value>,
        /// The best evaluation so far (always, when the last model is kept).
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
pub struct Outcome {
    pub steps: usize,
    /// Tokens trained on, across the runs this one continues.
    pub tokens: u64,
    /// Training seconds, across the runs this one continues.
    pub seconds: f64,
    /// False when the stop flag ended it early.
    pub finished: bool,
    /// The kept model's evaluation (the best one, or the last), if there was an evaluation set.
    pub best: Option<Map<String, Value>>,
}

/// Trains `task`'s model (whose trainable weights are `store`'s, loaded from the checkpoint being
/// resumed when `options.resume`) and writes the model it keeps to `options.out`.
pub fn train<T: Task + ?Sized>(
    task: &T,
    store: &ParamStore,
    config: &dyn SavedConfig,
    options: &TrainingOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome> {
    options.check()?;
    if task.examples_per_epoch() == Some(0) {
        return Err(Error::InvalidInput(
            "no training examples are left to train on".into(),
        ));
    }
    let out_dir = OutDir::inspect(
        &options.out,
        task.run_files(),
        options.resume,
        options.overwrite,
    )?;
    let mut run = Run::new(task, store, config, options, out_dir.resume_from.as_deref())?;
    // Made before anything is written or removed: data too small to train on fails with the output
    // directory as it was.
    let first_epoch = epoch_order(task, options, run.state.epoch)?;
    // Every rank has read the output directory before rank 0 changes it.
    options.world.barrier()?;
    if options.world.is_leader() {
        out_dir.clear_previous_run()?;
    }
    run.metrics = if options.world.is_leader() {
        // Lines past the checkpoint (from a run that then crashed) are dropped.
        MetricsLog::open(&options.out, run.state.step)?
    } else {
        MetricsLog::discard()
    };
    let leader = options.world.is_leader();
    let on_event = &mut |event: Event| {
        if leader {
            on_event(event)
        }
    };
    on_event(Event::Started {
        step: run.state.step,
        max_steps: run.max_steps,
        parameters: run.vars.iter().map(|v| v.elem_count()).sum(),
        train_examples: task.examples_per_epoch(),
    });
    let finished = run.epochs(first_epoch, stop, on_event)?;
    run.finish(finished, on_event)
}

/// A run in progress: the optimizer and schedule, where it stands, the evaluations.
struct Run<'a, T: Task + ?Sized> {
    task: &'a T,
    store: &'a ParamStore,
    config: &'a dyn SavedConfig,
    options: &'a TrainingOptions,
    optimizer: AdamW,
    vars: Vec<Tensor>,
    schedule: LinearSchedule,
    metrics: MetricsLog,
    best: Best,
    shards: Shards,
    state: TrainerState,
    max_steps: usize,
    started: Instant,
    /// Training seconds of the runs this one continues.
    elapsed_before: f64,
    /// The newest checkpoint written or resumed from.
    last_checkpoint: Option<PathBuf>,
}

/// How the epochs ended.
enum Ending {
    /// Steps or epochs ran out.
    Finished,
    /// Early stopping.
    EarlyStopped,
    /// The stop flag (a checkpoint was saved).
    Stopped,
}

impl<'a, T: Task + ?Sized> Run<'a, T> {
    fn new(
        task: &'a T,
        store: &'a ParamStore,
        config: &'a dyn SavedConfig,
        options: &'a TrainingOptions,
        resume_from: Option<&Path>,
    ) -> Result<Self> {
        let max_steps = options.total_steps(task.examples_per_epoch())?;
        let mut optimizer = AdamW::new(store.vars(), options.optimizer)?;
        let settings = task.settings(options, max_steps);
        let state = match resume_from {
            Some(dir) => {
                let state = restore_checkpoint(dir, &mut optimizer, &Device::Cpu)?;
                check_same_settings(&state.settings, &settings, dir)?;
                state
            }
            None => TrainerState {
                settings,
                ..Default::default()
            },
        };
        let mut best = Best::new(options.metric_for_best.as_deref());
        best.restore(&state.best);
        Ok(Run {
            task,
            store,
            config,
            options,
            optimizer,
            vars: trainable_tensors(store),
            schedule: LinearSchedule {
                peak_lr: options.learning_rate,
                warmup_steps: options.warmup(max_steps),
                total_steps: max_steps,
            },
            metrics: MetricsLog::discard(),
            best,
            shards: Shards::for_batch(options.shards, options.batch_size)?,
            elapsed_before: state.elapsed_seconds,
            state,
            max_steps,
            started: Instant::now(),
            last_checkpoint: resume_from.map(Path::to_path_buf),
        })
    }

    /// Trains epoch after epoch until the steps or epochs run out, early stopping, or the stop flag;
    /// says whether the run finished.
    fn epochs(
        &mut self,
        first_epoch: Box<dyn Iterator<Item = Result<T::Example>> + 'a>,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<bool> {
        let options = self.options;
        let mut first_epoch = Some(first_epoch);
        while self.state.step < self.max_steps
            && options.epochs.is_none_or(|e| self.state.epoch < e)
        {
            let stream = match first_epoch.take() {
                Some(stream) => stream,
                None => epoch_order(self.task, options, self.state.epoch)?,
            };
            let mut examples = stream.enumerate().skip(self.state.examples_in_epoch);
            match self.epoch(&mut examples, stop, on_event)? {
                Some(Ending::Finished) | None => {}
                Some(Ending::EarlyStopped) => return Ok(true),
                Some(Ending::Stopped) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Trains on the rest of one epoch; `None` when it ran to its end (the next epoch follows).
    fn epoch(
        &mut self,
        examples: &mut impl Iterator<Item = (usize, Result<T::Example>)>,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Option<Ending>> {
        let known = self.task.examples_per_epoch();
        while self.state.step < self.max_steps {
            let step_start = Instant::now();
            let gathered = self.gather(examples)?;
            let epoch_done =
                gathered.epoch_done || known.is_some_and(|n| self.state.examples_in_epoch >= n);
            if gathered.micro_batches > 0 {
                let ending = self.step(gathered.part, step_start, epoch_done, stop, on_event)?;
                if let Some(ending) = ending {
                    return Ok(Some(ending));
                }
            }
            if epoch_done || gathered.micro_batches == 0 {
                if self.state.examples_in_epoch == 0 {
                    return Err(Error::InvalidInput(
                        "the data gives no training examples".into(),
                    ));
                }
                self.state.epoch += 1;
                self.state.examples_in_epoch = 0;
                return Ok(None);
            }
        }
        Ok(Some(Ending::Finished))
    }

    /// One optimizer step with this rank's gradients, logged; evaluates, saves and stops as due.
    fn step(
        &mut self,
        part: Gradients,
        step_start: Instant,
        epoch_end: bool,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Option<Ending>> {
        let world = &self.options.world;
        let totals = step_totals(world, part.loss, part.tokens, stop)?;
        let next = self.state.step + 1;
        if !totals.loss.is_finite() {
            let what = format!("the loss became {}", totals.loss);
            return Err(non_finite(what, next, &self.last_checkpoint));
        }
        let (grads, exchange_seconds) = exchange_gradients(world, part.grads, &self.vars)?;
        let lr = self.schedule.lr(self.state.step);
        let grad_norm = self
            .optimizer
            .step(&grads, lr)
            .map_err(|e| non_finite(e.to_string(), next, &self.last_checkpoint))?;
        self.state.step = next;
        self.state.tokens_seen += totals.tokens as u64;
        self.state.elapsed_seconds = self.elapsed();
        let step_seconds = step_start.elapsed().as_secs_f64();
        let step_metrics = StepMetrics {
            step: next,
            epoch: self.epochs_done(),
            loss: totals.loss,
            lr,
            grad_norm,
            tokens_per_second: totals.tokens as f64 / step_seconds.max(1e-9),
            step_seconds,
            elapsed_seconds: self.state.elapsed_seconds,
            exchange_seconds,
        };
        on_event(Event::Step(&step_metrics));
        let logging = self.options.logging_steps.max(1);
        if next.is_multiple_of(logging) || next == self.max_steps {
            self.metrics.write(&step_metrics)?;
        }
        if self.evaluation_due(epoch_end) && self.evaluate(on_event)? {
            on_event(Event::EarlyStopped { step: next });
            return Ok(Some(Ending::EarlyStopped));
        }
        // One process also stops at a signal that came during this step; ranks stop together.
        let stopping = totals.stop || (!world.is_distributed() && stop.load(Ordering::SeqCst));
        let save_steps = self.options.save_steps;
        if stopping || (save_steps > 0 && next.is_multiple_of(save_steps)) {
            let path = self.checkpoint()?;
            on_event(Event::Saved(&path));
        }
        Ok(stopping.then_some(Ending::Stopped))
    }

    /// Runs up to `gradient_accumulation_steps` global batches forward and backward (this rank's shards
    /// of each, at once) and averages their gradients.
    fn gather(
        &mut self,
        examples: &mut impl Iterator<Item = (usize, Result<T::Example>)>,
    ) -> Result<Gathered> {
        let options = self.options;
        let accumulation = options.gradient_accumulation_steps.max(1);
        let global_batch = options.global_batch();
        let mut gathered = Gathered::default();
        for micro in 0..accumulation {
            let batch: Vec<(usize, T::Example)> = examples
                .by_ref()
                .take(global_batch)
                .map(|(index, example)| Ok((index, example?)))
                .collect::<Result<_>>()?;
            gathered.epoch_done = batch.len() < global_batch;
            if batch.is_empty() {
                break;
            }
            self.state.examples_in_epoch += batch.len();
            gathered.micro_batches += 1;
            let micro_batch = (self.state.step * accumulation + micro) as u64;
            for part in self.run_shards(&batch, micro_batch)?.into_iter().flatten() {
                gathered.part.add(part, &self.vars)?;
            }
            if gathered.epoch_done {
                break;
            }
        }
        // The mean over the batches actually run (fewer at the end of an epoch).
        gathered.part.average(gathered.micro_batches);
        Ok(gathered)
    }

    /// This rank's shards of one global batch, forward and backward at once, each shard's losses
    /// weighted by its part of the batch.
    fn run_shards(
        &self,
        global: &[(usize, T::Example)],
        micro_batch: u64,
    ) -> Result<Vec<Option<Gradients>>> {
        let (task, world, epoch) = (self.task, &self.options.world, self.state.epoch);
        let plan = ShardPlan::new(world, &self.shards, global.len());
        let batches = plan
            .positions
            .iter()
            .map(|positions| {
                let examples: Vec<&(usize, T::Example)> =
                    positions.iter().map(|&p| &global[p]).collect();
                (!examples.is_empty())
                    .then(|| task.batch(&examples, epoch))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let counts: Vec<Vec<usize>> = batches
            .iter()
            .map(|batch| match batch {
                Some(batch) => task.loss_terms(batch),
                None => Vec::new(),
            })
            .collect();
        let weights = loss_weights(world, &counts)?;
        let (seed, checkpointing) = (self.options.seed, self.options.gradient_checkpointing);
        self.shards.run(|s| -> Result<_> {
            let Some(batch) = &batches[s] else {
                return Ok(None);
            };
            let dropout = dropout_stream(seed, micro_batch, plan.global[s]);
            let recomputed = Recomputation::default();
            let mode = if checkpointing {
                Mode::Checkpointed(&dropout, &recomputed)
            } else {
                Mode::Train(&dropout)
            };
            let part = task.loss(batch, &weights[s], &mode)?;
            let mut gradients = Gradients::of(&part.loss, part.tokens)?;
            gradients.grads.add_recomputed(recomputed.take())?;
            Ok(Some(gradients))
        })
    }

    /// Whether to evaluate now: as the strategy says, and at the last step.
    fn evaluation_due(&self, epoch_end: bool) -> bool {
        self.task.has_eval()
            && (self.state.step == self.max_steps
                || match self.options.eval_strategy {
                    EvalStrategy::No => false,
                    EvalStrategy::Steps(n) => self.state.step.is_multiple_of(n.max(1)),
                    EvalStrategy::Epoch => epoch_end,
                })
    }

    /// Evaluates, keeps the model if it is to be kept; says whether early stopping is due.
    fn evaluate(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<bool> {
        let eval = self.scored()?;
        let improved = self.best.offer(&eval)?;
        if improved && self.best.keeps_best() {
            self.save_model(&eval)?;
        }
        self.metrics.write(&numbers_only(&eval))?;
        on_event(Event::Eval {
            step: self.state.step,
            metrics: &eval,
            best: improved,
        });
        Ok(self
            .options
            .early_stopping_patience
            .is_some_and(|p| self.best.since_best >= p))
    }

    /// The task's evaluation, stamped with the step and epoch.
    fn scored(&self) -> Result<Map<String, Value>> {
        let options = self.options;
        let mut eval = evaluate_on(self.task, options.batch_size, &options.world, &self.shards)?;
        eval.insert("step".into(), self.state.step.into());
        eval.insert("epoch".into(), self.epochs_done().into());
        Ok(eval)
    }

    /// Epochs trained so far, the running one as a fraction (transformers' `epoch`: 1.0 at the end
    /// of the first).
    fn epochs_done(&self) -> f64 {
        let whole = self.state.epoch as f64;
        match self.task.examples_per_epoch() {
            Some(n) if n > 0 => whole + (self.state.examples_in_epoch as f64 / n as f64).min(1.0),
            _ => whole,
        }
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Writes `checkpoint-{step}` (model, optimizer moments, position) atomically (rank 0 alone).
    fn checkpoint(&mut self) -> Result<PathBuf> {
        let path = self
            .options
            .out
            .join(format!("checkpoint-{}", self.state.step));
        if self.options.world.is_leader() {
            self.metrics.flush()?;
            draw_loss_curve(&self.options.out, self.task.eval_loss_key())?;
            self.state.elapsed_seconds = self.elapsed();
            self.state.best = self.best.state();
            let parts = CheckpointParts {
                config: self.config,
                architecture: self.task.architecture(),
                vars: &self.store.vars(),
                optimizer: &self.optimizer,
                state: &self.state,
                tokenizer_dir: &self.options.tokenizer_dir,
            };
            save_checkpoint(&self.options.out, &parts, self.options.save_total_limit)?;
        }
        self.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    /// Writes the model, its tokenizer and (with an evaluation) `eval_results.json` to the output
    /// (rank 0 alone).
    fn save_model(&self, eval: &Map<String, Value>) -> Result<()> {
        if !self.options.world.is_leader() {
            return Ok(());
        }
        let out = &self.options.out;
        let architecture = self.task.architecture();
        save_model(out, self.config, architecture, &self.store.vars())?;
        copy_tokenizer(&self.options.tokenizer_dir, out)?;
        if eval.is_empty() || !self.best.keeps_best() {
            return Ok(());
        }
        write_eval_results(out, eval)
    }

    /// Completes the output directory. Keeping the best model: the model when no evaluation chose
    /// one. Keeping the last: a last evaluation and checkpoint where the last step had none, and the
    /// model; a stopped run leaves its checkpoint only.
    fn finish(mut self, finished: bool, on_event: &mut dyn FnMut(Event)) -> Result<Outcome> {
        if self.best.keeps_best() {
            if !self.task.has_eval() {
                self.save_model(&Map::new())?;
            } else if self.best.value.is_none() {
                // Stopped before the first evaluation: evaluate what there is, so the directory is
                // complete.
                let eval = self.scored()?;
                self.best.offer(&eval)?;
                self.save_model(&eval)?;
            }
        } else if finished {
            let evaluated_now = self.best.step() == Some(self.state.step);
            if self.task.has_eval() && !evaluated_now {
                self.evaluate(on_event)?;
            }
            let name = format!("checkpoint-{}", self.state.step);
            let saved_now = self
                .last_checkpoint
                .as_ref()
                .is_some_and(|p| p.file_name().is_some_and(|n| n == name.as_str()));
            if !saved_now {
                let path = self.checkpoint()?;
                on_event(Event::Saved(&path));
            }
            self.save_model(&Map::new())?;
        }
        self.metrics.flush()?;
        if self.options.world.is_leader() {
            draw_loss_curve(&self.options.out, self.task.eval_loss_key())?;
        }
        Ok(Outcome {
            steps: self.state.step,
            tokens: self.state.tokens_seen,
            seconds: self.elapsed(),
            finished,
            best: self.best.metrics,
        })
    }
}

/// The training examples of `epoch` in the order they are trained on: the task's, or with
/// `group_by_length` that order cut into mega-batches of 50 global batches, each sorted by length
/// (transformers' `LengthGroupedSampler`) and cut into batches trained in a shuffled order, so that a
/// batch holds examples of similar length without the epoch running from long to short.
fn epoch_order<'a, T: Task + ?Sized>(
    task: &'a T,
    options: &TrainingOptions,
    epoch: usize,
) -> Result<Examples<'a, T::Example>> {
    let stream = task.examples(epoch, options.seed)?;
    if !options.group_by_length {
        return Ok(stream);
    }
    let rng = Rng::stream(options.seed, Stream::LengthGroups, epoch as u64);
    let groups = LengthGroups {
        batch: options.global_batch(),
        batches: 50,
    };
    Ok(Box::new(
        groups.apply(stream, rng, move |e| task.example_tokens(e)),
    ))
}

/// How `group_by_length` groups: mega-batches of `batches` batches of `batch` examples.
struct LengthGroups {
    batch: usize,
    batches: usize,
}

impl LengthGroups {
    /// `stream` a mega-batch at a time, each in [`LengthGroups::order`].
    fn apply<'a, E: 'a>(
        self,
        mut stream: Examples<'a, E>,
        mut rng: Rng,
        tokens: impl Fn(&E) -> Option<usize> + 'a,
    ) -> impl Iterator<Item = Result<E>> + 'a {
        let size = self.batch.max(1) * self.batches;
        let mut ready = std::collections::VecDeque::new();
        std::iter::from_fn(move || {
            if ready.is_empty() {
                let chunk = match stream.by_ref().take(size).collect::<Result<Vec<E>>>() {
                    Ok(chunk) => chunk,
                    Err(e) => return Some(Err(e)),
                };
                ready.extend(self.order(chunk, &mut rng, &tokens));
            }
            ready.pop_front().map(Ok)
        })
    }

    /// One mega-batch sorted by `tokens` (an example of unknown length counts as empty), cut into
    /// batches, the batches in an order `rng` shuffles; as it came when no example's length is known.
    fn order<E>(
        &self,
        chunk: Vec<E>,
        rng: &mut Rng,
        tokens: impl Fn(&E) -> Option<usize>,
    ) -> Vec<E> {
        let mut keyed: Vec<(Option<usize>, E)> =
            chunk.into_iter().map(|e| (tokens(&e), e)).collect();
        if keyed.iter().all(|(length, _)| length.is_none()) {
            return keyed.into_iter().map(|(_, e)| e).collect();
        }
        keyed.sort_by_key(|(length, _)| std::cmp::Reverse(length.unwrap_or(0)));
        let mut batches = Vec::new();
        let mut keyed = keyed.into_iter().map(|(_, e)| e).peekable();
        while keyed.peek().is_some() {
            batches.push(keyed.by_ref().take(self.batch.max(1)).collect::<Vec<_>>());
        }
        rng.shuffle(&mut batches);
        batches.into_iter().flatten().collect()
    }
}

/// An epoch's training examples, in order.
type Examples<'a, E> = Box<dyn Iterator<Item = Result<E>> + 'a>;

/// This rank's part of one optimizer step.
#[derive(Default)]
struct Gathered {
    /// Its gradients, its part of the step's mean loss, its tokens.
    part: Gradients,
    /// Micro-batches of the global batch run (the same on every rank).
    micro_batches: usize,
    /// The epoch's examples ran out.
    epoch_done: bool,
}

/// Scores `task` on its evaluation set on one process, its ops on every thread.
pub fn evaluate<T: Task + ?Sized>(task: &T, batch_size: usize) -> Result<Map<String, Value>> {
    evaluate_on(task, batch_size, &World::single(), &Shards::new(1)?)
}

/// Scores `task` on its evaluation set, the batches shared among the shards of every rank of `world`
/// (every rank gets the same metrics).
fn evaluate_on<T: Task + ?Sized>(
    task: &T,
    batch_size: usize,
    world: &World,
    shards: &Shards,
) -> Result<Map<String, Value>> {
    // Items of similar length batched together: the rows come back in item order all the same.
    let mut items: Vec<usize> = (0..task.eval_len()).collect();
    items.sort_by_key(|&i| task.eval_tokens(i));
    let batches: Vec<&[usize]> = items.chunks(batch_size.max(1)).collect();
    let plan = ShardPlan::new(world, shards, batches.len());
    let width = task.eval_counts();
    let parts = shards.run(|s| -> Result<_> {
        let mut part = EvalPart::new(width);
        for batch in plan.positions[s].iter().map(|&b| batches[b]) {
            let out = task.eval_batch(batch)?;
            part.loss[0] += out.loss_sum;
            part.loss[1] += out.loss_terms as f64;
            add_counts(&mut part.counts, &out.counts);
            part.items.extend(batch.iter().map(|&i| i as u64));
            part.rows.extend(out.rows);
        }
        Ok(part)
    })?;
    let mut all = EvalPart::new(width);
    for part in parts {
        all.items.extend(part.items);
        all.rows.extend(part.rows);
        all.loss[0] += part.loss[0];
        all.loss[1] += part.loss[1];
        add_counts(&mut all.counts, &part.counts);
    }
    world.sum_f64(&mut all.loss)?;
    if width > 0 {
        world.sum_f64(&mut all.counts)?;
    }
    let rows = gather_rows(world, &all.items, all.rows, items.len())?;
    task.score(Evaluated {
        rows,
        loss: all.loss[0] / all.loss[1].max(1.0),
        counts: all.counts,
    })
}

/// One shard's (or rank's) share of an evaluation.
struct EvalPart {
    items: Vec<u64>,
    rows: Vec<Vec<f32>>,
    /// Loss sum and terms.
    loss: [f64; 2],
    counts: Vec<f64>,
}

impl EvalPart {
    fn new(counts: usize) -> Self {
        EvalPart {
            items: Vec::new(),
            rows: Vec::new(),
            loss: [0.0; 2],
            counts: vec![0.0; counts],
        }
    }
}

fn add_counts(sums: &mut [f64], counts: &[f64]) {
    sums.iter_mut().zip(counts).for_each(|(s, c)| *s += c);
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

/// The evaluation that picks the model kept: the best by one metric (lower is better for losses and
/// errors, higher otherwise), or, with no metric, the last one.
struct Best {
    metric: Option<String>,
    greater_is_better: bool,
    value: Option<f64>,
    metrics: Option<Map<String, Value>>,
    /// Evaluations since the best one.
    since_best: usize,
}

impl Best {
    fn new(metric: Option<&str>) -> Self {
        let metric = metric.map(|m| m.strip_prefix("eval_").unwrap_or(m).to_string());
        let greater_is_better = metric
            .as_deref()
            .is_some_and(|m| !(m.contains("loss") || m.starts_with("mse")));
        Best {
            metric,
            greater_is_better,
            value: None,
            metrics: None,
            since_best: 0,
        }
    }

    fn keeps_best(&self) -> bool {
        self.metric.is_some()
    }

    /// The step of the evaluation held.
    fn step(&self) -> Option<usize> {
        self.metrics
            .as_ref()?
            .get("step")?
            .as_u64()
            .map(|s| s as usize)
    }

    /// What a checkpoint keeps of it.
    fn state(&self) -> Value {
        if !self.keeps_best() {
            return Value::Null;
        }
        serde_json::json!({"value": self.value, "metrics": self.metrics, "since_best": self.since_best})
    }

    fn restore(&mut self, state: &Value) {
        self.value = state["value"].as_f64();
        self.metrics = state["metrics"].as_object().cloned();
        self.since_best = state["since_best"].as_u64().unwrap_or(0) as usize;
    }

    /// Records `eval` if it beats the best so far (any evaluation, with no metric); says whether it
    /// did.
    fn offer(&mut self, eval: &Map<String, Value>) -> Result<bool> {
        let Some(metric) = &self.metric else {
            self.metrics = Some(eval.clone());
            return Ok(true);
        };
        let value = eval.get(metric).and_then(Value::as_f64).ok_or_else(|| {
            let known: Vec<&str> = eval
                .iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k.as_str())
                .collect();
            Error::InvalidInput(format!(
                "--metric-for-best `{metric}`: the evaluation gives no such metric (it gives: {})",
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
            self.since_best = 0;
        } else {
            self.since_best += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `values` of `metric` in turn; which of them were kept as the best so far.
    fn kept(metric: &str, values: &[f64]) -> Vec<bool> {
        let mut best = Best::new(Some(metric));
        (values.iter())
            .map(|&v| {
                let eval = serde_json::json!({ metric: v });
                best.offer(eval.as_object().unwrap()).unwrap()
            })
            .collect()
    }

    #[test]
    fn grouping_by_length_makes_batches_of_similar_lengths_in_a_shuffled_order() {
        // 250 examples whose lengths are their values, shuffled; mega-batches of 4 batches of 25.
        let mut lengths: Vec<usize> = (0..250).collect();
        Rng::new(7).shuffle(&mut lengths);
        let stream: Examples<usize> = Box::new(lengths.clone().into_iter().map(Ok));
        let groups = LengthGroups {
            batch: 25,
            batches: 4,
        };
        let grouped: Vec<usize> = (groups.apply(stream, Rng::new(3), |&l| Some(l)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(grouped.len(), 250);
        let mut firsts = Vec::new();
        for (got, given) in grouped.chunks(100).zip(lengths.chunks(100)) {
            // Each mega-batch: its own examples, in batches of neighbours by length.
            let (mut got_sorted, mut given_sorted) = (got.to_vec(), given.to_vec());
            got_sorted.sort();
            given_sorted.sort();
            assert_eq!(got_sorted, given_sorted);
            let mut wanted: Vec<Vec<usize>> =
                given_sorted.rchunks(25).map(|c| c.to_vec()).collect();
            for batch in got.chunks(25) {
                let mut batch = batch.to_vec();
                batch.sort();
                let at = wanted.iter().position(|w| *w == batch);
                assert!(at.is_some(), "{batch:?} is not 25 neighbours by length");
                wanted.remove(at.unwrap_or(0));
            }
            firsts.push(got[0]);
        }
        // Not longest first every time: the batches' order is shuffled.
        let longest: Vec<usize> = (lengths.chunks(100).map(|c| *c.iter().max().unwrap())).collect();
        assert_ne!(firsts, longest);
        // Examples of unknown length keep their order.
        let stream: Examples<usize> = Box::new(lengths.clone().into_iter().map(Ok));
        let groups = LengthGroups {
            batch: 25,
            batches: 4,
        };
        let kept: Vec<usize> = (groups.apply(stream, Rng::new(3), |_| None))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(kept, lengths);
    }

    #[test]
    fn losses_and_mean_squared_errors_are_better_lower_other_metrics_higher() {
        for metric in ["loss", "mlm_loss", "mse", "mse_x100"] {
            assert_eq!(
                kept(metric, &[2.0, 1.0, 3.0]),
                [true, true, false],
                "{metric}"
            );
        }
        for metric in ["accuracy", "src2trg_accuracy", "mlm_accuracy", "f1"] {
            assert_eq!(
                kept(metric, &[2.0, 1.0, 3.0]),
                [true, false, true],
                "{metric}"
            );
        }
    }
}
