//! `bert pretrain`: masked LM and next-sentence prediction on plain text, with a progress line on
//! stderr and a checkpoint saved on SIGINT/SIGTERM; on one process or on each rank of `mpirun`.

use bert::model::Precision;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pretraining::data::{HoldOut, PretrainData};
use bert::pretraining::trainer::{pretrain as run_pretraining, Event, ModelInit, PretrainOptions};
use bert::pretraining::{Corpus, InstanceConfig};
use bert::train::{AdamWConfig, World};
use bert::weights::config::BertConfig;
use bert::Tokenizer;

use crate::args::PretrainArgs;
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
        bert::pretraining::data::MaskingOptions {
            masked_lm_prob: args.masked_lm_prob,
            max_predictions_per_seq: args.max_predictions_per_seq as usize,
            whole_word: args.whole_word_masking,
        },
        hold_out,
        args.seed,
    )?;
    let options = PretrainOptions {
        out: args.out.clone(),
        init,
        tokenizer_dir,
        batch_size: args.batch_size as usize,
        gradient_accumulation_steps: args.gradient_accumulation_steps as usize,
        learning_rate: args.learning_rate,
        warmup_steps: args.warmup_steps.unwrap_or(args.max_steps as usize / 100),
        max_steps: args.max_steps as usize,
        epochs: args.epochs,
        optimizer: AdamWConfig {
            weight_decay: args.weight_decay,
            max_grad_norm: Some(args.max_grad_norm),
            ..Default::default()
        },
        eval_every: args.eval_every,
        save_every: args.save_every,
        save_total_limit: args.save_total_limit,
        log_every: args.log_every,
        resume: args.resume,
        overwrite: args.overwrite,
        seed: args.seed,
        world: world.clone(),
        shards,
        precision: if args.bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        },
    };
    let stop = crate::progress::stop_flag(
        "saving a checkpoint after this step",
        StopNotice::new(world, &args.out),
    )?;
    let mut progress = Progress::new(args.log_every);
    let outcome = run_pretraining(&data, &options, &stop, &mut |event| match event {
        Event::Started {
            step,
            max_steps,
            parameters,
        } => progress.start(step, max_steps, parameters),
        Event::Step(m) => progress.step(m),
        Event::Eval(e) => progress.note(&format!(
            "eval at step {}: mlm loss {:.4}, mlm accuracy {:.4}, nsp accuracy {:.4}",
            e.step, e.eval_mlm_loss, e.eval_mlm_accuracy, e.eval_nsp_accuracy
        )),
        Event::Saved(path) => progress.note(&format!("saved {}", path.display())),
    })
    .with_context(|| format!("pretraining into {}", args.out.display()))?;
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
            outcome.state.step
        );
        return Ok(ExitCode::from(130));
    }
    eprintln!(
        "done: {} steps, {} tokens, {:.0}s; model in {}",
        outcome.state.step,
        outcome.state.tokens_seen,
        outcome.state.elapsed_seconds,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
