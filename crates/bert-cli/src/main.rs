//! The `bert` command: argument parsing and output formatting over the `bert` library. Results go to
//! stdout as JSON Lines, one object per input; progress, warnings and errors go to stderr.

mod args;
mod commands;
mod input;
mod output;
mod training;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
