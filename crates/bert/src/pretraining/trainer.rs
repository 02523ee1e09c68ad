//! The pretraining loop: masked LM + next-sentence prediction with AdamW, warm-up and linear decay,
//! gradient clipping and accumulation; evaluation on held-out documents; atomic checkpoints that resume
//! to the same result as an uninterrupted run; a stop flag (SIGINT/SIGTERM in the CLI) that saves first;
//! and a clear stop, keeping the last good checkpoint, if the loss stops being finite.
//!
//! Data-parallel: each batch is cut into shards trained at once, one per thread ([`Shards`]), and across
//! the ranks of `options.world`: every rank walks the same instance stream and trains on its shards of
//! each global batch of `batch_size x ranks`; gradients are summed across ranks before each step, so
//! every rank holds the same weights and the run equals one process with the global batch. Rank 0 alone
//! writes checkpoints, metrics and reports events.

use crate::nn::Precision;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::model::{BertForPreTraining, Mode};
use crate::pretraining::data::{PretrainBatch, PretrainData};
use crate::train::exchange::{exchange_gradients, step_totals};
use crate::train::shards::{dropout_stream, loss_weights, Gradients, ShardPlan, Shards};
use crate::train::{
    check_same_settings, draw_loss_curve, non_finite, restore_checkpoint, save_checkpoint,
    trainable_tensors, AdamW, AdamWConfig, CheckpointParts, LinearSchedule, MetricsLog, OutDir,
    StepMetrics, TrainerState, World,
};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::config::BertConfig;
use crate::weights::params::ParamStore;
use crate::weights::save::{copy_tokenizer, save_model};

const ARCHITECTURE: &str = "BertForPreTraining";
/// The held-out loss the loss curve draws.
const EVAL_LOSS: &str = "eval_mlm_loss";

/// Where the weights start.
#[derive(Debug, Clone)]
pub enum ModelInit {
    /// Freshly initialised, as `transformers` initialises BERT.
    Fresh(Box<BertConfig>),
    /// From a checkpoint directory (continued pretraining).
    Checkpoint(PathBuf),
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    pub out: PathBuf,
    pub init: ModelInit,
    /// The directory whose tokenizer files go into every checkpoint.
    pub tokenizer_dir: PathBuf,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub max_steps: usize,
    pub epochs: Option<usize>,
    pub optimizer: AdamWConfig,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: usize,
    pub save_total_limit: usize,
    pub log_every: usize,
    pub resume: bool,
    pub overwrite: bool,
    pub seed: u64,
    /// The ranks of a data-parallel run (one process by default); `batch_size` is per rank.
    pub world: World,
    /// Shards each rank's batch is cut into, trained at once on a thread each (0: one per thread).
    pub shards: usize,
    /// bf16: mixed precision (Linear products in bf16 with f32 sums, on AMX; weights and optimizer f32).
    pub precision: Precision,
}

/// Held-out metrics.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMetrics {
    pub step: usize,
    pub eval_mlm_loss: f64,
    pub eval_mlm_accuracy: f64,
    pub eval_nsp_accuracy: f64,
}

/// What the loop reports while it runs (on rank 0 only).
pub enum Event<'a> {
    Started {
        step: usize,
        max_steps: usize,
        parameters: usize,
    },
    Step(&'a StepMetrics),
    Eval(&'a EvalMetrics),
    Saved(&'a Path),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct PretrainOutcome {
    pub state: TrainerState,
    /// False when the stop flag ended it early (a checkpoint was saved).
    pub finished: bool,
    pub last_eval: Option<EvalMetrics>,
}

/// Files of an earlier run that `--overwrite` may remove.
const RUN_FILES: [&str; 4] = [
    "model.safetensors",
    "config.json",
    "metrics.jsonl",
    "loss.png",
];

/// The settings a resumed run must share with the run it continues.
fn run_settings(data: &PretrainData, options: &PretrainOptions) -> serde_json::Value {
    let mut settings = serde_json::json!({
        "seed": options.seed,
        "batch_size": options.batch_size,
        "gradient_accumulation_steps": options.gradient_accumulation_steps,
        "max_seq_length": data.instances.max_seq_length,
        "short_seq_prob": data.instances.short_seq_prob,
        "masked_lm_prob": data.masking.masked_lm_prob,
        "max_predictions_per_seq": data.masking.max_predictions_per_seq,
        "whole_word_masking": data.masking.whole_word,
        "eval_documents": data.hold_out.count,
        "eval_stride": data.hold_out.stride,
    });
    if options.world.is_distributed() {
        settings["world_size"] = options.world.size().into();
    }
    settings
}

/// Runs pretraining until `max_steps` (or `epochs`), or until `stop` is set (on any rank).
pub fn pretrain(
    data: &PretrainData,
    options: &PretrainOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<PretrainOutcome> {
    let world = &options.world;
    let leader = world.is_leader();
    let out_dir = OutDir::inspect(&options.out, &RUN_FILES, options.resume, options.overwrite)?;
    let device = Device::Cpu;
    let (config, store) = load_weights(options, out_dir.resume_from.as_deref(), &device)?;
    check_fit(data, &config)?;
    let model = BertForPreTraining::load(&store.root(), &config)?;
    let mut optimizer = AdamW::new(store.vars(), options.optimizer)?;
    let settings = run_settings(data, options);
    let mut state = match &out_dir.resume_from {
        Some(dir) => {
            let state = restore_checkpoint(dir, &mut optimizer, &device)?;
            check_same_settings(&state.settings, &settings, dir)?;
            state
        }
        None => TrainerState {
            settings,
            ..Default::default()
        },
    };
    let shards = Shards::for_batch(options.shards, options.batch_size)?;
    let eval = data.eval_batches(options.batch_size, &device)?;
    // Made before anything is written or removed: a corpus too small to train on fails with the output
    // directory as it was.
    let mut first_epoch = Some(data.train_instances(state.epoch)?);
    // Every rank has read the output directory before rank 0 changes it.
    world.barrier()?;
    let mut metrics = if leader {
        out_dir.clear_previous_run()?;
        MetricsLog::open(&options.out, state.step)?
    } else {
        MetricsLog::discard()
    };
    let mut report = |event: Event| {
        if leader {
            on_event(event)
        }
    };
    let parameters = store
        .vars()
        .values()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    report(Event::Started {
        step: state.step,
        max_steps: options.max_steps,
        parameters,
    });
    let schedule = LinearSchedule {
        peak_lr: options.learning_rate,
        warmup_steps: options.warmup_steps,
        total_steps: options.max_steps,
    };
    let vars = trainable_tensors(&store);
    let mut last_eval = None;
    let mut last_checkpoint = out_dir.resume_from.clone();
    let run_start = Instant::now();
    let elapsed_before = state.elapsed_seconds;
    let save =
        |state: &TrainerState, optimizer: &AdamW, metrics: &mut MetricsLog| -> Result<PathBuf> {
            let path = checkpoint_path(&options.out, state.step);
            if !leader {
                return Ok(path);
            }
            metrics.flush()?;
            draw_loss_curve(&options.out, EVAL_LOSS)?;
            let parts = CheckpointParts {
                config: &config,
                architecture: ARCHITECTURE,
                vars: &store.vars(),
                optimizer,
                state,
                tokenizer_dir: &options.tokenizer_dir,
            };
            save_checkpoint(&options.out, &parts, options.save_total_limit)
        };

    while state.step < options.max_steps && options.epochs.is_none_or(|e| state.epoch < e) {
        let stream = match first_epoch.take() {
            Some(stream) => stream,
            None => data.train_instances(state.epoch)?,
        };
        let mut examples = stream.enumerate().skip(state.examples_in_epoch);
        let mut epoch_done = false;
        while state.step < options.max_steps && !epoch_done {
            let step_start = Instant::now();
            let gathered = gather_gradients(
                data,
                options,
                &model,
                &shards,
                &vars,
                &mut examples,
                &mut state,
            )?;
            epoch_done = gathered.epoch_done;
            if gathered.micro_batches == 0 {
                break;
            }
            let part = gathered.part;
            let totals = step_totals(world, part.loss, part.tokens, stop)?;
            if !totals.loss.is_finite() {
                return Err(non_finite(
                    format!("the loss became {}", totals.loss),
                    state.step + 1,
                    &last_checkpoint,
                ));
            }
            let (grads, exchange_seconds) = exchange_gradients(world, part.grads, &vars)?;
            let lr = schedule.lr(state.step);
            let grad_norm = optimizer
                .step(&grads, lr)
                .map_err(|e| non_finite(e.to_string(), state.step + 1, &last_checkpoint))?;
            state.step += 1;
            state.tokens_seen += totals.tokens as u64;
            state.elapsed_seconds = elapsed_before + run_start.elapsed().as_secs_f64();
            let step_seconds = step_start.elapsed().as_secs_f64();
            let step_metrics = StepMetrics {
                step: state.step,
                epoch: state.epoch,
                loss: totals.loss,
                lr,
                grad_norm,
                tokens_per_second: totals.tokens as f64 / step_seconds.max(1e-9),
                step_seconds,
                elapsed_seconds: state.elapsed_seconds,
                exchange_seconds,
            };
            report(Event::Step(&step_metrics));
            if state.step % options.log_every.max(1) == 0 || state.step == options.max_steps {
                metrics.write(&step_metrics)?;
            }
            if options.eval_every > 0 && state.step % options.eval_every == 0 && !eval.is_empty() {
                let e = evaluate_on(world, &shards, &model, &eval, state.step)?;
                metrics.write(&e)?;
                report(Event::Eval(&e));
                last_eval = Some(e);
            }
            // One process also stops at a signal that came during this step; ranks stop together.
            let stopping = totals.stop || (!world.is_distributed() && stop.load(Ordering::SeqCst));
            if (options.save_every > 0 && state.step % options.save_every == 0) || stopping {
                let path = save(&state, &optimizer, &mut metrics)?;
                report(Event::Saved(&path));
                last_checkpoint = Some(path);
            }
            if stopping {
                return Ok(PretrainOutcome {
                    state,
                    finished: false,
                    last_eval,
                });
            }
        }
        if epoch_done {
            if state.examples_in_epoch == 0 {
                return Err(Error::InvalidInput(
                    "the corpus gives no training instances".into(),
                ));
            }
            state.epoch += 1;
            state.examples_in_epoch = 0;
        }
    }
    if !eval.is_empty() && last_eval.as_ref().is_none_or(|e| e.step != state.step) {
        let e = evaluate_on(world, &shards, &model, &eval, state.step)?;
        metrics.write(&e)?;
        report(Event::Eval(&e));
        last_eval = Some(e);
    }
    let saved_now = last_checkpoint.as_ref().and_then(|p| p.file_name())
        == checkpoint_path(&options.out, state.step).file_name();
    if !saved_now {
        let path = save(&state, &optimizer, &mut metrics)?;
        report(Event::Saved(&path));
    }
    if leader {
        metrics.flush()?;
        draw_loss_curve(&options.out, EVAL_LOSS)?;
        save_model(&options.out, &config, ARCHITECTURE, &store.vars())?;
        copy_tokenizer(&options.tokenizer_dir, &options.out)?;
    }
    Ok(PretrainOutcome {
        state,
        finished: true,
        last_eval,
    })
}

/// Where the checkpoint of `step` goes.
fn checkpoint_path(out: &Path, step: usize) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
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

/// This rank's part of one optimizer step.
struct Gathered {
    /// Its gradients, its part of the step's mean loss, its tokens.
    part: Gradients,
    /// Micro-batches of the global batch run (the same on every rank).
    micro_batches: usize,
    epoch_done: bool,
}

/// Runs up to `gradient_accumulation_steps` global batches forward and backward (this rank's shards of
/// each, at once) and averages their gradients.
fn gather_gradients(
    data: &PretrainData,
    options: &PretrainOptions,
    model: &BertForPreTraining,
    shards: &Shards,
    vars: &[Tensor],
    examples: &mut impl Iterator<Item = (usize, Result<crate::pretraining::PairInstance>)>,
    state: &mut TrainerState,
) -> Result<Gathered> {
    let world = &options.world;
    let accumulation = options.gradient_accumulation_steps.max(1);
    let global_batch = options.batch_size * world.size();
    let mut gathered = Gathered {
        part: Gradients::default(),
        micro_batches: 0,
        epoch_done: false,
    };
    for micro in 0..accumulation {
        let instances: Vec<(usize, crate::pretraining::PairInstance)> = examples
            .by_ref()
            .take(global_batch)
            .map(|(index, instance)| Ok((index, instance?)))
            .collect::<Result<_>>()?;
        gathered.epoch_done = instances.len() < global_batch;
        if instances.is_empty() {
            break;
        }
        state.examples_in_epoch += instances.len();
        gathered.micro_batches += 1;
        let plan = ShardPlan::new(world, shards, instances.len());
        let batches = plan
            .positions
            .iter()
            .map(|positions| {
                let masked: Vec<_> = positions
                    .iter()
                    .map(|&p| data.mask(&instances[p].1, state.epoch, instances[p].0))
                    .collect();
                (!masked.is_empty())
                    .then(|| data.collate(&masked, &Device::Cpu))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        // Each shard's MLM loss averages its masked positions, its NSP loss its examples.
        let counts: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| match b {
                Some(b) => vec![
                    b.masked_labels.elem_count(),
                    b.next_sentence_labels.elem_count(),
                ],
                None => vec![0, 0],
            })
            .collect();
        let weights = loss_weights(world, &counts)?;
        let micro_batch = (state.step * accumulation + micro) as u64;
        let seed = options.seed;
        let parts = shards.run(|s| -> Result<_> {
            let Some(batch) = &batches[s] else {
                return Ok(None);
            };
            let dropout = dropout_stream(seed, micro_batch, plan.global[s]);
            let mode = Mode::Train(&dropout);
            let output = model.forward_at(&batch.batch, &batch.masked_positions, &mode)?;
            let mlm = cross_entropy(&output.prediction_logits, &batch.masked_labels)?;
            let nsp = cross_entropy(&output.seq_relationship_logits, &batch.next_sentence_labels)?;
            let loss = ((mlm * weights[s][0])? + (nsp * weights[s][1])?)?;
            Gradients::of(&loss, batch.tokens).map(Some)
        })?;
        for part in parts.into_iter().flatten() {
            gathered.part.add(part, vars)?;
        }
        if gathered.epoch_done {
            break;
        }
    }
    // The mean over the batches actually run (fewer at the end of an epoch).
    gathered.part.average(gathered.micro_batches);
    Ok(gathered)
}

/// The config and trainable weights: from the checkpoint being resumed, else as `init` says.
fn load_weights(
    options: &PretrainOptions,
    resume: Option<&Path>,
    device: &Device,
) -> Result<(BertConfig, ParamStore)> {
    let from_dir = |dir: &Path| -> Result<(BertConfig, ParamStore)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        Ok((
            config,
            ParamStore::new(Checkpoint::open(dir)?, device, true, options.seed)
                .with_precision(options.precision),
        ))
    };
    match (resume, &options.init) {
        (Some(dir), _) => from_dir(dir),
        (None, ModelInit::Checkpoint(dir)) => from_dir(dir),
        (None, ModelInit::Fresh(config)) => {
            let store = ParamStore::fresh(device, options.seed).with_precision(options.precision);
            Ok(((**config).clone(), store))
        }
    }
}

/// MLM loss and accuracy over the masked positions, NSP accuracy, on the held-out batches.
pub fn evaluate(
    model: &BertForPreTraining,
    batches: &[PretrainBatch],
    step: usize,
) -> Result<EvalMetrics> {
    evaluate_on(&World::single(), &Shards::new(1)?, model, batches, step)
}

/// [`evaluate`] with the batches shared among the shards of every rank and the counts summed.
fn evaluate_on(
    world: &World,
    shards: &Shards,
    model: &BertForPreTraining,
    batches: &[PretrainBatch],
    step: usize,
) -> Result<EvalMetrics> {
    let plan = ShardPlan::new(world, shards, batches.len());
    let parts = shards.run(|s| -> Result<_> {
        // loss sum, predicted positions, correct predictions, correct NSP, NSP examples
        let mut sums = [0f64; 5];
        for b in plan.positions[s].iter().map(|&i| &batches[i]) {
            let out = model.forward_at(&b.batch, &b.masked_positions, &Mode::Eval)?;
            let predicted = b.masked_labels.elem_count() as f64;
            let mean = crate::loss::cross_entropy(&out.prediction_logits, &b.masked_labels)?;
            sums[0] += f64::from(mean.to_scalar::<f32>()?) * predicted;
            sums[1] += predicted;
            sums[2] += correct_predictions(&out.prediction_logits, &b.masked_labels)? as f64;
            sums[3] +=
                correct_predictions(&out.seq_relationship_logits, &b.next_sentence_labels)? as f64;
            sums[4] += b.next_sentence_labels.dim(0)? as f64;
        }
        Ok(sums)
    })?;
    let mut sums = [0f64; 5];
    for part in parts {
        sums.iter_mut().zip(part).for_each(|(sum, x)| *sum += x);
    }
    world.sum_f64(&mut sums)?;
    let [loss_sum, predicted, correct, nsp_correct, nsp_total] = sums;
    Ok(EvalMetrics {
        step,
        eval_mlm_loss: loss_sum / predicted.max(1.0),
        eval_mlm_accuracy: correct / predicted.max(1.0),
        eval_nsp_accuracy: nsp_correct / nsp_total.max(1.0),
    })
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
