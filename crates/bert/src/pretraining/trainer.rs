//! The pretraining loop: masked LM + next-sentence prediction with AdamW, warm-up and linear decay,
//! gradient clipping and accumulation; evaluation on held-out documents; atomic checkpoints that resume
//! to the same result as an uninterrupted run; a stop flag (SIGINT/SIGTERM in the CLI) that saves first;
//! and a clear stop, keeping the last good checkpoint, if the loss stops being finite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::model::{BertForPreTraining, Mode};
use crate::params::ParamStore;
use crate::pretraining::data::{PretrainBatch, PretrainData};
use crate::rng::{Rng, Stream};
use crate::save::{copy_tokenizer, save_model};
use crate::train::{
    accumulate, check_same_settings, draw_loss_curve, non_finite, restore_checkpoint,
    save_checkpoint, trainable_tensors, AdamW, AdamWConfig, CheckpointParts, LinearSchedule,
    MetricsLog, OutDir, StepMetrics, TrainerState,
};

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
}

/// Held-out metrics.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMetrics {
    pub step: usize,
    pub eval_mlm_loss: f64,
    pub eval_mlm_accuracy: f64,
    pub eval_nsp_accuracy: f64,
}

/// What the loop reports while it runs.
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
    serde_json::json!({
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
    })
}

/// Runs pretraining until `max_steps` (or `epochs`), or until `stop` is set.
pub fn pretrain(
    data: &PretrainData,
    options: &PretrainOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<PretrainOutcome> {
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
            dropout_rng: Rng::stream(options.seed, Stream::Dropout, 0).state(),
            settings,
            ..Default::default()
        },
    };
    let eval = data.eval_batches(options.batch_size, &device)?;
    // Made before anything is written or removed: a corpus too small to train on fails with the output
    // directory as it was.
    let mut first_epoch = Some(data.train_instances(state.epoch)?);
    out_dir.clear_previous_run()?;
    let mut metrics = MetricsLog::open(&options.out, state.step)?;
    let parameters = store
        .vars()
        .values()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    on_event(Event::Started {
        step: state.step,
        max_steps: options.max_steps,
        parameters,
    });
    let schedule = LinearSchedule {
        peak_lr: options.learning_rate,
        warmup_steps: options.warmup_steps,
        total_steps: options.max_steps,
    };
    let dropout = Mutex::new(Rng::new(state.dropout_rng));
    let vars = trainable_tensors(&store);
    let mut last_eval = None;
    let mut last_checkpoint = out_dir.resume_from.clone();
    let run_start = Instant::now();
    let elapsed_before = state.elapsed_seconds;
    let save =
        |state: &TrainerState, optimizer: &AdamW, metrics: &mut MetricsLog| -> Result<PathBuf> {
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
                &dropout,
                &vars,
                &mut examples,
                &mut state,
            )?;
            epoch_done = gathered.epoch_done;
            let Some(grads) = gathered.grads else {
                break;
            };
            if !gathered.loss.is_finite() {
                return Err(non_finite(
                    format!("the loss became {}", gathered.loss),
                    state.step + 1,
                    &last_checkpoint,
                ));
            }
            let lr = schedule.lr(state.step);
            let grad_norm = optimizer
                .step(&grads, lr)
                .map_err(|e| non_finite(e.to_string(), state.step + 1, &last_checkpoint))?;
            state.step += 1;
            state.tokens_seen += gathered.tokens as u64;
            state.dropout_rng = dropout.lock().unwrap_or_else(|e| e.into_inner()).state();
            state.elapsed_seconds = elapsed_before + run_start.elapsed().as_secs_f64();
            let step_seconds = step_start.elapsed().as_secs_f64();
            let step_metrics = StepMetrics {
                step: state.step,
                epoch: state.epoch,
                loss: gathered.loss,
                lr,
                grad_norm,
                tokens_per_second: gathered.tokens as f64 / step_seconds.max(1e-9),
                step_seconds,
                elapsed_seconds: state.elapsed_seconds,
            };
            on_event(Event::Step(&step_metrics));
            if state.step % options.log_every.max(1) == 0 || state.step == options.max_steps {
                metrics.write(&step_metrics)?;
            }
            if options.eval_every > 0 && state.step % options.eval_every == 0 && !eval.is_empty() {
                let e = evaluate(&model, &eval, state.step)?;
                metrics.write(&e)?;
                on_event(Event::Eval(&e));
                last_eval = Some(e);
            }
            let stopping = stop.load(Ordering::SeqCst);
            if (options.save_every > 0 && state.step % options.save_every == 0) || stopping {
                let path = save(&state, &optimizer, &mut metrics)?;
                on_event(Event::Saved(&path));
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
        let e = evaluate(&model, &eval, state.step)?;
        metrics.write(&e)?;
        on_event(Event::Eval(&e));
        last_eval = Some(e);
    }
    let saved_now = last_checkpoint.as_ref().and_then(|p| p.file_name())
        == Some(format!("checkpoint-{}", state.step).as_ref());
    if !saved_now {
        let path = save(&state, &optimizer, &mut metrics)?;
        on_event(Event::Saved(&path));
    }
    metrics.flush()?;
    draw_loss_curve(&options.out, EVAL_LOSS)?;
    save_model(&options.out, &config, ARCHITECTURE, &store.vars())?;
    copy_tokenizer(&options.tokenizer_dir, &options.out)?;
    Ok(PretrainOutcome {
        state,
        finished: true,
        last_eval,
    })
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

/// The gradients of one optimizer step.
struct Gathered {
    grads: Option<GradStore>,
    loss: f64,
    tokens: usize,
    epoch_done: bool,
}

/// Runs up to `gradient_accumulation_steps` batches forward and backward and averages their gradients.
fn gather_gradients(
    data: &PretrainData,
    options: &PretrainOptions,
    model: &BertForPreTraining,
    dropout: &Mutex<Rng>,
    vars: &[Tensor],
    examples: &mut impl Iterator<Item = (usize, Result<crate::pretraining::PairInstance>)>,
    state: &mut TrainerState,
) -> Result<Gathered> {
    let device = Device::Cpu;
    let mut gathered = Gathered {
        grads: None,
        loss: 0.0,
        tokens: 0,
        epoch_done: false,
    };
    let mut micro_batches = 0;
    for _ in 0..options.gradient_accumulation_steps.max(1) {
        let mut masked = Vec::with_capacity(options.batch_size);
        for (index, instance) in examples.by_ref().take(options.batch_size) {
            masked.push(data.mask(&instance?, state.epoch, index));
        }
        gathered.epoch_done = masked.len() < options.batch_size;
        if masked.is_empty() {
            break;
        }
        state.examples_in_epoch += masked.len();
        let batch = data.collate(&masked, &device)?;
        let output =
            model.forward_at(&batch.batch, &batch.masked_positions, &Mode::Train(dropout))?;
        let mlm = cross_entropy(&output.prediction_logits, &batch.masked_labels)?;
        let nsp = cross_entropy(&output.seq_relationship_logits, &batch.next_sentence_labels)?;
        let loss = (mlm + nsp)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            gathered.loss = value;
            return Ok(gathered);
        }
        gathered.grads = Some(accumulate(gathered.grads.take(), loss.backward()?, vars)?);
        gathered.loss += value;
        gathered.tokens += batch.tokens;
        micro_batches += 1;
        if gathered.epoch_done {
            break;
        }
    }
    if micro_batches > 1 {
        // The mean over the batches actually run (fewer at the end of an epoch).
        let scale = 1.0 / micro_batches as f64;
        if let Some(grads) = gathered.grads.as_mut() {
            crate::train::scale(grads, vars, scale)?;
        }
        gathered.loss *= scale;
    }
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
            ParamStore::new(Checkpoint::open(dir)?, device, true, options.seed),
        ))
    };
    match (resume, &options.init) {
        (Some(dir), _) => from_dir(dir),
        (None, ModelInit::Checkpoint(dir)) => from_dir(dir),
        (None, ModelInit::Fresh(config)) => {
            Ok(((**config).clone(), ParamStore::fresh(device, options.seed)))
        }
    }
}

/// MLM loss and accuracy over the masked positions, NSP accuracy, on the held-out batches.
pub fn evaluate(
    model: &BertForPreTraining,
    batches: &[PretrainBatch],
    step: usize,
) -> Result<EvalMetrics> {
    let (mut loss_sum, mut predicted, mut correct, mut nsp_correct, mut nsp_total) =
        (0f64, 0usize, 0usize, 0usize, 0usize);
    for b in batches {
        let out = model.forward_at(&b.batch, &b.masked_positions, &Mode::Eval)?;
        let labels: Vec<i64> = b.masked_labels.to_vec1()?;
        let mean = crate::loss::cross_entropy(&out.prediction_logits, &b.masked_labels)?;
        loss_sum += f64::from(mean.to_scalar::<f32>()?) * labels.len() as f64;
        predicted += labels.len();
        correct += correct_predictions(&out.prediction_logits, &b.masked_labels)?;
        nsp_correct += correct_predictions(&out.seq_relationship_logits, &b.next_sentence_labels)?;
        nsp_total += b.next_sentence_labels.dim(0)?;
    }
    Ok(EvalMetrics {
        step,
        eval_mlm_loss: loss_sum / predicted.max(1) as f64,
        eval_mlm_accuracy: correct as f64 / predicted.max(1) as f64,
        eval_nsp_accuracy: nsp_correct as f64 / nsp_total.max(1) as f64,
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
