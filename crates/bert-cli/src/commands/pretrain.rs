//! `bert pretrain`: masked LM and next-sentence prediction on plain text, with a progress line on
//! stderr and a checkpoint saved on SIGINT/SIGTERM; on one process or on each rank of `mpirun`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pretraining::data::{HoldOut, PretrainData};
use bert::pretraining::trainer::{pretrain, ModelInit};
use bert::pretraining::{Corpus, InstanceConfig};
use bert::train::{EvalStrategy, Event, World};
use bert::weights::config::BertConfig;
use bert::Tokenizer;

use crate::args::{PretrainArgs, TrainingDefaults};
use crate::distributed::{self, StopNotice};
use crate::progress::Progress;

/// `bert pretrain`, on one process or on each rank of `mpirun -np N bert pretrain`.
pub fn run(args: PretrainArgs) -> Result<ExitCode> {
    let shards = crate::threads::shards();
    let world = distributed::join()?;
    distributed::on_rank(&world, || pretrain_on(args, &world, shards))
}

fn pretrain_on(args: PretrainArgs, world: &World, shards: usize) -> Result<ExitCode> {
    let tokenizer_dir = match (&args.tokenizer, &args.model) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => {
            bail!("--tokenizer DIR is needed to train from scratch (make one with `bert vocab`)")
        }
    };
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir)?;
    let init = match (&args.model, &args.config) {
        (Some(dir), _) => ModelInit::Checkpoint(dir.clone()),
        (None, Some(path)) => ModelInit::Fresh(Box::new(BertConfig::from_file(path)?)),
        (None, None) => {
            let mut config = BertConfig::for_size(args.size, tokenizer.vocab_size());
            config.max_position_embeddings = config
                .max_position_embeddings
                .max(args.max_seq_length as usize);
            ModelInit::Fresh(Box::new(config))
        }
    };
    let corpus = Corpus::new(&args.files)?;
    let instances = InstanceConfig {
        max_seq_length: args.max_seq_length as usize,
        short_seq_prob: args.short_seq_prob,
        window_documents: args.window_documents,
        shuffle_buffer: args.shuffle_buffer,
    };
    let hold_out = HoldOut {
        count: args.eval_documents,
        stride: args.eval_stride,
    };
    let data = PretrainData::new(
        corpus,
        tokenizer,
        instances,
        bert::masking::MaskingOptions {
            masked_lm_prob: args.masked_lm_prob,
            max_predictions_per_seq: args.max_predictions_per_seq as usize,
            whole_word: args.whole_word_masking,
        },
        hold_out,
        args.training.seed,
    )?;
    let defaults = TrainingDefaults {
        epochs: None,
        max_steps: Some(10_000),
        batch_size: 32,
        learning_rate: 1e-4,
        warmup_share: 0.01,
        weight_decay: 0.01,
        eval_strategy: EvalStrategy::Steps(500),
        save_steps: 1000,
    };
    let mut options = args.training.options(defaults, tokenizer_dir);
    options.metric_for_best = None; // the last model is kept
    options.world = world.clone();
    options.shards = shards;
    let stop = crate::progress::stop_flag(
        "saving a checkpoint after this step",
        StopNotice::new(world, &args.training.out),
    )?;
    let mut progress = Progress::new(args.training.logging_steps);
    let number = |metrics: &serde_json::Map<String, serde_json::Value>, key: &str| {
        metrics
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    };
    let outcome = pretrain(&data, &init, &options, &stop, &mut |event| match event {
        Event::Started {
            step,
            max_steps,
            parameters,
            ..
        } => progress.start(step, max_steps, parameters),
        Event::Step(m) => progress.step(m),
        Event::Eval { step, metrics, .. } => progress.note(&format!(
            "eval at step {step}: mlm loss {:.4}, mlm accuracy {:.4}, nsp accuracy {:.4}",
            number(metrics, "eval_mlm_loss"),
            number(metrics, "eval_mlm_accuracy"),
            number(metrics, "eval_nsp_accuracy")
        )),
        Event::Saved(path) => progress.note(&format!("saved {}", path.display())),
        Event::EarlyStopped { .. } => {}
    })
    .with_context(|| format!("pretraining into {}", options.out.display()))?;
    if !world.is_leader() {
        return Ok(if outcome.finished {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(130)
        });
    }
    progress.finish();
    if data.corpus.skipped_lines() > 0 {
        eprintln!(
            "skipped {} corpus lines that are not UTF-8",
            data.corpus.skipped_lines()
        );
    }
    if !outcome.finished {
        eprintln!(
            "stopped at step {}; continue with the same command and --resume",
            outcome.steps
        );
        return Ok(ExitCode::from(130));
    }
    eprintln!(
        "done: {} steps, {} tokens, {:.0}s; model in {}",
        outcome.steps,
        outcome.tokens,
        outcome.seconds,
        options.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
