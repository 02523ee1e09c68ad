//! `bert vocab`: a WordPiece vocabulary trained on text files, written as `vocab.txt` and
//! `tokenizer.json`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use bert::pretraining::Corpus;
use bert::vocab::{train_vocab, VocabOptions};

use crate::args::VocabArgs;

pub fn run(args: VocabArgs) -> Result<ExitCode> {
    let corpus = Corpus::new(&args.files)?;
    let started = Instant::now();
    let options = VocabOptions {
        vocab_size: args.vocab_size,
        lowercase: args.lowercase,
        min_frequency: args.min_frequency,
        overwrite: args.overwrite,
    };
    let size = train_vocab(&corpus, &options, &args.out)?;
    if corpus.skipped_lines() > 0 {
        eprintln!(
            "skipped {} lines that are not UTF-8",
            corpus.skipped_lines()
        );
    }
    eprintln!(
        "wrote a {size}-token vocabulary to {} in {:.1}s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
