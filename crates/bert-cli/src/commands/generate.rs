//! `bert generate`: text from text with a BERT2BERT encoder-decoder, one JSON line per input
//! (`{"text", "generated_text"}`), as transformers' text2text-generation pipeline.

use std::process::ExitCode;

use anyhow::Result;
use bert::pipelines::{GeneratedText, Generator};
use serde::Serialize;

use crate::args::GenerateArgs;
use crate::runner::{drive, load_pipeline, single_text, to_line, BatchLimits};

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let generator = load_pipeline(&args.model, false, Generator::load, |g| &g.report)?;
    let config = args.decoding.overrides().apply(&generator.generation)?;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        generator.max_length,
        |item| generator.encode(single_text(item)?),
        |items, encodings| {
            let outputs = generator.generate(encodings, &config)?;
            items
                .iter()
                .zip(outputs)
                .map(|(item, sequences)| {
                    to_line(&GenerateLine {
                        text: &item.text,
                        generated_text: &sequences[0].generated_text,
                        sequences: (sequences.len() > 1).then_some(&sequences),
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct GenerateLine<'a> {
    text: &'a str,
    generated_text: &'a str,
    /// Every output, best first, when more than one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequences: Option<&'a Vec<GeneratedText>>,
}
