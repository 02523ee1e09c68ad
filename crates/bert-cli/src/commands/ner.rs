//! `bert ner`: named entities (token classification) with transformers' aggregation strategies.

use std::process::ExitCode;

use anyhow::Result;
use bert::pipelines::TokenClassifier;
use serde::Serialize;

use crate::args::NerArgs;
use crate::runner::{drive, load_pipeline, to_line, BatchLimits};

pub fn run(args: NerArgs) -> Result<ExitCode> {
    let tagger = load_pipeline(&args.model, false, TokenClassifier::load, |t| {
        &t.pipeline().report
    })?;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        tagger.pipeline().max_length,
        |item| tagger.encode(&item.text),
        |items, encodings| {
            let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
            let results = tagger.tag(
                &texts,
                encodings,
                args.aggregation_strategy,
                &args.ignore_labels,
            )?;
            items
                .iter()
                .zip(results)
                .map(|(item, entities)| {
                    to_line(&NerLine {
                        text: &item.text,
                        entities,
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct NerLine<'a> {
    text: &'a str,
    entities: Vec<bert::pipelines::Entity>,
}
