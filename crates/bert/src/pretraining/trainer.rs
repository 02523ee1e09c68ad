//! The pretraining loop: masked LM + next-sentence prediction with AdamW, warm-up and linear decay,
//! gradient clipping and accumulation; evaluation on held-out documents; atomic checkpoints that resume
//! to the same result as an uninterrupted run; a stop flag (SIGINT/SIGTERM in the CLI) that saves first;
//! and a clear stop, keeping the last good checkpoint, if the loss stops being finite.

use std::fs::OpenOptions;
use std::io::Write;
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
use crate::files::write_file;
use crate::loss::cross_entropy;
use crate::model::{BertForPreTraining, Mode};
use crate::params::ParamStore;
use crate::plot::write_loss_curve;
use crate::pretraining::data::{PretrainBatch, PretrainData};
use crate::rng::{Rng, Stream};
use crate::save::{copy_tokenizer, save_model};
use crate::train::{
    checkpoints, restore_checkpoint, save_checkpoint, AdamW, AdamWConfig, CheckpointParts,
    LinearSchedule, TrainerState,
};

const ARCHITECTURE: &str = "BertForPreTraining";

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

/// One logged training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    /// Wall time of this optimizer step (data preparation included).
    pub step_seconds: f64,
    pub elapsed_seconds: f64,
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
    let out_dir = inspect_out_dir(options)?;
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
    let vars = optimizer_vars(&store);
    let mut last_eval = None;
    let mut last_checkpoint = out_dir.resume_from.clone();
    let run_start = Instant::now();
    let elapsed_before = state.elapsed_seconds;
    let save =
        |state: &TrainerState, optimizer: &AdamW, metrics: &mut MetricsLog| -> Result<PathBuf> {
            metrics.flush()?;
            draw_loss_curve(&options.out)?;
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
                    &state,
                    &last_checkpoint,
                ));
            }
            let lr = schedule.lr(state.step);
            let grad_norm = optimizer
                .step(&grads, lr)
                .map_err(|e| non_finite(e.to_string(), &state, &last_checkpoint))?;
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
    draw_loss_curve(&options.out)?;
    save_model(&options.out, &config, ARCHITECTURE, &store.vars())?;
    copy_tokenizer(&options.tokenizer_dir, &options.out)?;
    Ok(PretrainOutcome {
        state,
        finished: true,
        last_eval,
    })
}

/// The error for a loss or gradient that stopped being finite, naming the last good checkpoint.
fn non_finite(what: String, state: &TrainerState, last_checkpoint: &Option<PathBuf>) -> Error {
    Error::Training(format!(
        "{what} at step {}; stopped without saving. The last good checkpoint is {}",
        state.step + 1,
        last_checkpoint
            .as_ref()
            .map_or("none (nothing saved yet)".into(), |p| p
                .display()
                .to_string())
    ))
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

fn check_same_settings(
    saved: &serde_json::Value,
    now: &serde_json::Value,
    dir: &Path,
) -> Result<()> {
    if saved.is_null() || saved == now {
        return Ok(());
    }
    let changed: Vec<String> = now
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| saved.get(key.as_str()) != Some(value))
        .map(|(key, value)| {
            format!(
                "{key} {} -> {value}",
                saved.get(key.as_str()).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect();
    Err(Error::InvalidInput(format!(
        "--resume with other settings than {} was trained with ({}); resume with the same ones",
        dir.display(),
        changed.join(", ")
    )))
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
            for var in vars {
                if let Some(g) = grads.remove(var) {
                    grads.insert(var, (g * scale)?);
                }
            }
        }
        gathered.loss *= scale;
    }
    Ok(gathered)
}

fn optimizer_vars(store: &ParamStore) -> Vec<Tensor> {
    store
        .vars()
        .values()
        .map(|v| v.as_tensor().clone())
        .collect()
}

/// Adds this micro-batch's gradients to those gathered so far.
fn accumulate(sum: Option<GradStore>, mut new: GradStore, vars: &[Tensor]) -> Result<GradStore> {
    let Some(mut sum) = sum else {
        return Ok(new);
    };
    for var in vars {
        if let Some(g) = new.remove(var) {
            let total = match sum.get(var) {
                Some(old) => (old + g)?,
                None => g,
            };
            sum.insert(var, total);
        }
    }
    Ok(sum)
}

/// `metrics.jsonl`: one JSON line per logged step or evaluation, kept across resumed runs.
struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending, first dropping lines past `step` (written after the checkpoint
    /// being resumed, by a run that then crashed).
    fn open(out: &Path, step: usize) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            write_file(&path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    fn write(&mut self, value: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(value).map_err(|e| Error::Training(e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// What the output directory holds: a checkpoint to resume from, or another run's files that
/// `--overwrite` removes (only once the new run has checked its inputs).
struct OutDir {
    resume_from: Option<PathBuf>,
    previous_run: Vec<PathBuf>,
}

impl OutDir {
    fn clear_previous_run(&self) -> Result<()> {
        for path in &self.previous_run {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            removed.map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    }
}

/// Checks the output directory: a new run needs it free of another run (or `--overwrite`); `--resume`
/// needs a checkpoint there.
fn inspect_out_dir(options: &PretrainOptions) -> Result<OutDir> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let existing = checkpoints(out)?;
    if options.resume {
        return match existing.last() {
            Some((_, dir)) => Ok(OutDir {
                resume_from: Some(dir.clone()),
                previous_run: Vec::new(),
            }),
            None => Err(Error::InvalidInput(format!(
                "--resume: {} holds no checkpoint to resume from",
                out.display()
            ))),
        };
    }
    let earlier_files: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    let occupied = !existing.is_empty() || !earlier_files.is_empty();
    if occupied && !options.overwrite {
        return Err(Error::InvalidInput(format!(
            "{} holds another run ({}); use --resume to continue it or --overwrite to replace it",
            out.display(),
            existing
                .last()
                .map(|(step, _)| format!("checkpoint-{step}"))
                .unwrap_or_else(|| earlier_files.join(", "))
        )));
    }
    let previous_run = existing
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(earlier_files.iter().map(|f| out.join(f)))
        .collect();
    Ok(OutDir {
        resume_from: None,
        previous_run,
    })
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

/// Redraws `loss.png` from `metrics.jsonl` (which holds every run of a resumed training).
fn draw_loss_curve(out: &Path) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = value["step"].as_f64().unwrap_or(0.0);
        if let Some(loss) = value["loss"].as_f64() {
            train.push((step, loss));
        } else if let Some(loss) = value["eval_mlm_loss"].as_f64() {
            eval.push((step, loss));
        }
    }
    write_loss_curve(&out.join("loss.png"), &train, &eval)
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
