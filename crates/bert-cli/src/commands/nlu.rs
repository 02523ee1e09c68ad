//! `bert nlu`: a user's turn understood by a joint intent and slot model, one JSON line per text.

use std::process::ExitCode;

use anyhow::Result;
use bert::pipelines::{IntentSlotParser, Understanding};
use serde::Serialize;

use crate::args::NluArgs;
use crate::runner::{drive, load_pipeline, to_line, BatchLimits};

pub fn run(args: NluArgs) -> Result<ExitCode> {
    let parser = load_pipeline(&args.model, false, IntentSlotParser::load, |p| {
        &p.pipeline().report
    })?;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        parser.pipeline().max_length,
        |item| parser.encode(&item.text),
        |items, encodings| {
            let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
            let results = parser.understand(&texts, encodings)?;
            (items.iter().zip(results))
                .map(|(item, understanding)| {
                    to_line(&NluLine {
                        text: &item.text,
                        understanding,
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct NluLine<'a> {
    text: &'a str,
    #[serde(flatten)]
    understanding: Understanding,
}
