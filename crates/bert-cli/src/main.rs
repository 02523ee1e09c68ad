//! The `bert` command: argument parsing and output formatting over the `bert` library. Results go to
//! stdout as JSON Lines, one object per input; progress, warnings and errors go to stderr.

mod args;
mod commands;
mod distributed;
mod input;
mod output;
mod progress;
mod runner;
mod threads;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::args::Command;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = args::Cli::parse();
    threads::prepare(cli.command.shards());
    match run(cli.command) {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one subcommand.
fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::FillMask(args) => commands::fill_mask::run(args),
        Command::Classify(args) => commands::classify::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Ner(args) => commands::ner::run(args),
        Command::Nlu(args) => commands::nlu::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Qa(args) => commands::qa::run(args),
        Command::Vocab(args) => commands::vocab::run(args),
        Command::Pretrain(args) => commands::pretrain::run(args),
        Command::Finetune(args) => commands::finetune::run(*args),
        Command::Distill(args) => commands::finetune::run((*args).into()),
        Command::Serve(args) => commands::serve::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Search(args) => commands::search::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Align(args) => commands::align::run(args),
    }
}

/// candle allocates a fresh buffer for every op; if freed memory goes back to the OS, each new buffer
/// is page-faulted and zeroed again (a quarter of a training step, measured). Keeping it is faster.
fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same in v2 and v3; the Rust bindings do
    /// not name it): -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide allocator option before any threads exist; the option takes effect
    // for later frees.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
