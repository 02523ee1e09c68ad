//! `bert finetune`: reads labelled data, trains the checkpoint with a task head, and reports the
//! evaluations as they come, with a progress line on stderr; SIGINT/SIGTERM stops it with the best model
//! so far kept.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bert::finetune::distill::{prepare_distill, DistillData, SentenceFile};
use bert::finetune::masked_lm::MaskedLmText;
use bert::finetune::student::{make_student, StudentRecipe};
use bert::finetune::FinetuneTask;
use bert::finetune::{
    prepare_classification, prepare_intent_slots, prepare_qa, prepare_seq2seq, prepare_tagging,
    ClassificationData, Columns, IntentSlotsData, PairColumns, PairFile, Prepared, QaData,
    Seq2SeqData, SpanOptions, TaggingData, WeightSetup,
};
use bert::train::{train, EvalStrategy, Event, TrainingOptions, World};
use bert::weights::save::SavedConfig;
use serde_json::{Map, Value};

use crate::args::{FinetuneArgs, TaskKind, TrainingDefaults};
use crate::distributed::{self, StopNotice};
use crate::progress::{stop_flag, Progress};

/// `bert finetune`, on one process or on each rank of `mpirun -np N bert finetune`.
pub fn run(args: FinetuneArgs) -> Result<ExitCode> {
    let shards = crate::threads::shards();
    let world = distributed::join()?;
    distributed::on_rank(&world, || run_on(args, &world, shards))
}

fn run_on(args: FinetuneArgs, world: &World, shards: usize) -> Result<ExitCode> {
    let leader = world.is_leader();
    let out = &args.training.out;
    let model_dir = if args.training.resume {
        // The newest checkpoint holds the weights (task head included), config and tokenizer.
        match bert::train::checkpoints(out)?.pop() {
            Some((_, dir)) => dir,
            None => anyhow::bail!("--resume: {} holds no checkpoint", out.display()),
        }
    } else {
        bert::weights::hub::resolve_model(&args.model, args.revision.as_deref())?
    };
    let cut_down = args.distill.keep_layers_every.is_some() || args.distill.vocab_size.is_some();
    let student = if cut_down && !args.training.resume {
        Some(StudentDir::make(&model_dir, &args)?)
    } else {
        None
    };
    let model_dir = student.as_ref().map_or(model_dir, |s| s.0.clone());
    let mut options = options(&args, &model_dir);
    options.world = world.clone();
    options.shards = shards;
    let setup = WeightSetup {
        seed: options.seed,
        precision: options.precision,
    };
    let eval = args.eval.as_deref().map(|data| Scored {
        data,
        target: args.eval_target.as_deref(),
    });
    let prepared = prepare(&args, &model_dir, eval, setup)?;
    for note in prepared.notes.iter().filter(|_| leader) {
        eprintln!("note: {note}");
    }
    if leader && !prepared.newly_initialized.is_empty() {
        eprintln!(
            "newly initialised (not in the checkpoint): {}",
            prepared.newly_initialized.join(", ")
        );
    }
    let stop = stop_flag(
        "saving a checkpoint after this step",
        StopNotice::new(world, out),
    )?;
    let mut progress = Progress::new(options.logging_steps);
    let outcome = train(
        prepared.task.as_ref(),
        &prepared.store,
        prepared.config.as_ref(),
        &options,
        &stop,
        &mut |event| match event {
            Event::Started {
                step,
                max_steps,
                parameters,
                train_examples,
            } => {
                let unit = match args.task {
                    TaskKind::Qa => "question/context windows",
                    TaskKind::Seq2seq => "source -> target pairs",
                    TaskKind::IntentSlots => "utterances",
                    TaskKind::Distill if args.train_target.is_some() => "sentence pairs",
                    TaskKind::Distill => "sentences",
                    _ => "examples",
                };
                eprintln!("{} training {unit}", train_examples.unwrap_or(0));
                progress.start(step, max_steps, parameters);
            }
            Event::Step(m) => progress.step(m),
            Event::Eval {
                step,
                metrics,
                best,
            } => progress.note(&format!(
                "eval at step {step}: {}{}",
                summary(metrics),
                if best { " (best so far: saved)" } else { "" }
            )),
            Event::Saved(path) => progress.note(&format!("saved {}", path.display())),
            Event::EarlyStopped { step } => progress.note(&format!(
                "early stopping at step {step}: no better {} for {} evaluations",
                args.metric_for_best,
                args.early_stopping_patience.unwrap_or(0)
            )),
        },
    )
    .with_context(|| format!("fine-tuning into {}", out.display()))?;
    if !leader {
        return Ok(match outcome.finished {
            true => ExitCode::SUCCESS,
            false => ExitCode::from(130),
        });
    }
    progress.finish();
    if let Some(best) = &outcome.best {
        eprintln!("best: {}", summary(best));
    }
    eprintln!("model in {}", out.display());
    if !outcome.finished {
        eprintln!(
            "stopped at step {}; continue with the same command and --resume",
            outcome.steps
        );
        return Ok(ExitCode::from(130));
    }
    drop(prepared);
    if args.task == TaskKind::Distill {
        bert::finetune::distill::save_modules(out, &model_dir, &distill_data(&args, None)?)
            .with_context(|| {
                format!(
                    "writing the sentence-transformers modules into {}",
                    out.display()
                )
            })?;
    }
    if let Some(data) = args.test.as_deref() {
        let test = Scored {
            data,
            target: args.test_target.as_deref(),
        };
        score_test(&args, test, setup, options.batch_size)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Scores the model kept in the output directory on the test data: the metrics on stderr and in
/// `test_results.json`.
fn score_test(args: &FinetuneArgs, test: Scored, setup: WeightSetup, batch: usize) -> Result<()> {
    let out = &args.training.out;
    let tested = prepare(args, out, Some(test), setup)
        .with_context(|| format!("reading the test data {}", test.data.display()))?;
    for note in &tested.notes {
        eprintln!("note (test): {note}");
    }
    let metrics = bert::train::evaluate(tested.task.as_ref(), batch)
        .with_context(|| format!("scoring {} on {}", out.display(), test.data.display()))?;
    eprintln!("test: {}", summary(&metrics));
    let path = out.join("test_results.json");
    let json = serde_json::to_string_pretty(&metrics)?;
    std::fs::write(&path, format!("{json}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The data a task is scored on: --eval, or --test once training ends.
#[derive(Clone, Copy)]
struct Scored<'a> {
    data: &'a Path,
    /// seq2seq: the targets, line for line with `data`.
    target: Option<&'a Path>,
}

/// The task `args` names, its model loaded from `model_dir`, scored on `eval`.
fn prepare(
    args: &FinetuneArgs,
    model_dir: &Path,
    eval: Option<Scored>,
    setup: WeightSetup,
) -> Result<Prepared<Box<dyn FinetuneTask>, Box<dyn SavedConfig>>> {
    Ok(match args.task {
        TaskKind::Classify => prepare_classification(
            model_dir,
            &ClassificationData {
                train: args.train.clone(),
                eval: eval.map(|eval| eval.data.to_path_buf()),
                columns: Columns {
                    text: args.text_column.clone(),
                    text_pair: args.text_pair_column.clone(),
                    label: args.label_column.clone(),
                },
                problem: args.problem_type.into(),
                max_length: args.max_length,
            },
            setup,
        )
        .map(Prepared::boxed)?,
        TaskKind::Ner => prepare_tagging(
            model_dir,
            &TaggingData {
                train: args.train.clone(),
                eval: eval.map(|eval| eval.data.to_path_buf()),
                max_length: args.max_length,
            },
            setup,
        )
        .map(Prepared::boxed)?,
        TaskKind::Qa => {
            let (prepared, _) = prepare_qa(
                model_dir,
                &QaData {
                    train: args.train.clone(),
                    eval: eval.map(|eval| eval.data.to_path_buf()),
                    max_length: args.max_length,
                    doc_stride: args.doc_stride,
                    spans: SpanOptions {
                        n_best_size: args.n_best_size,
                        max_answer_length: args.max_answer_length,
                        null_score_diff_threshold: args.null_score_diff_threshold,
                    },
                },
                setup,
            )?;
            prepared.boxed()
        }
        TaskKind::Seq2seq => prepare_seq2seq(model_dir, &seq2seq_data(args, eval), setup)?.boxed(),
        TaskKind::Distill => prepare_distill(model_dir, &distill_data(args, eval)?, setup)?.boxed(),
        TaskKind::IntentSlots => prepare_intent_slots(
            model_dir,
            &IntentSlotsData {
                train: args.train.clone(),
                eval: eval.map(|eval| eval.data.to_path_buf()),
                max_length: args.max_length,
                slot_loss_coef: args.slot_loss_coef,
            },
            setup,
        )?
        .boxed(),
    })
}

/// A student made of a checkpoint (every K-th layer, a cut vocabulary), in a directory removed when
/// done with.
struct StudentDir(std::path::PathBuf);

impl StudentDir {
    fn make(from: &Path, args: &FinetuneArgs) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bert-student-{}", std::process::id()));
        let every = args.distill.keep_layers_every.unwrap_or(1) as usize;
        let recipe = StudentRecipe {
            keep_layers_every: every,
            vocab_size: args.distill.vocab_size.map(|n| n as usize),
            texts: [
                Some(&args.train),
                args.train_target.as_ref(),
                args.distill.mlm_text.as_ref(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        };
        let student = make_student(from, &recipe, &dir)
            .with_context(|| format!("making a student of {}", from.display()))?;
        let config = &student.config;
        if every > 1 {
            eprintln!(
                "student: layers 0, {every}, {}, ... of {}: {} layers",
                2 * every,
                from.display(),
                config.num_hidden_layers
            );
        }
        if args.distill.vocab_size.is_some() {
            eprintln!(
                "student: vocabulary cut from {} to {} pieces",
                student.vocab_before, config.vocab_size
            );
        }
        Ok(StudentDir(dir))
    }
}

impl Drop for StudentDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `--task distill` reads: the teacher, and sentences (with --train-target, pairs).
fn distill_data(args: &FinetuneArgs, eval: Option<Scored>) -> Result<DistillData> {
    let Some(teacher) = &args.distill.teacher else {
        anyhow::bail!(
            "--task distill needs --teacher: the sentence encoder whose vectors the student learns"
        )
    };
    Ok(DistillData {
        teacher: bert::weights::hub::resolve_model(teacher, None)?,
        train: SentenceFile {
            sentences: args.train.clone(),
            target: args.train_target.clone(),
        },
        eval: eval.map(|eval| SentenceFile {
            sentences: eval.data.to_path_buf(),
            target: eval.target.map(Path::to_path_buf),
        }),
        max_length: args.max_length,
        batch_size: args.training.batch_size.unwrap_or(32) as usize,
        projection: args.distill.projection,
        masked_lm: (args.distill.mlm_text.clone()).map(|path| MaskedLmText {
            path,
            eval: args.distill.mlm_eval.clone(),
            weight: args.distill.mlm_weight,
        }),
    })
}

/// What `--task seq2seq` reads: a table, or sources and targets line for line.
fn seq2seq_data(args: &FinetuneArgs, eval: Option<Scored>) -> Seq2SeqData {
    let file = |path: &Path, target: Option<&Path>| match target {
        Some(target) => PairFile::Aligned {
            source: path.to_path_buf(),
            target: target.to_path_buf(),
        },
        None => PairFile::Table(path.to_path_buf()),
    };
    Seq2SeqData {
        train: file(&args.train, args.train_target.as_deref()),
        eval: eval.map(|eval| file(eval.data, eval.target)),
        columns: PairColumns {
            source: args.source_column.clone(),
            target: args.target_column.clone(),
        },
        max_source_length: args.max_length,
        max_target_length: args.max_target_length,
        label_smoothing: args.label_smoothing_factor,
        generation_num_beams: args.generation_num_beams as usize,
        generation_max_new_tokens: args.generation_max_new_tokens,
        decoder_model: args.decoder_model.clone(),
        tie_encoder_decoder: args.tie_encoder_decoder,
    }
}

/// The loop's settings: the training flags with fine-tuning's defaults (transformers'), and the
/// model kept by --metric-for-best.
fn options(args: &FinetuneArgs, model_dir: &std::path::Path) -> TrainingOptions {
    let defaults = TrainingDefaults {
        epochs: Some(3),
        max_steps: None,
        batch_size: 16,
        learning_rate: 5e-5,
        warmup_share: 0.0,
        weight_decay: 0.0,
        eval_strategy: EvalStrategy::Epoch,
        save_steps: 500,
    };
    let mut options = args.training.options(defaults, model_dir.to_path_buf());
    options.metric_for_best = Some(args.metric_for_best.clone());
    options.early_stopping_patience = args.early_stopping_patience.map(|n| n as usize);
    options
}

/// The headline numbers of an evaluation, `name value` pairs.
fn summary(metrics: &Map<String, Value>) -> String {
    metrics
        .iter()
        .filter(|(k, v)| v.is_f64() && k.as_str() != "epoch")
        .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(", ")
}
