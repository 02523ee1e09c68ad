//! `bert tokenize`: tokens, ids, type ids and character offsets of each input, as the fast tokenizer
//! gives them.

use std::process::ExitCode;

use anyhow::Result;
use bert::pipelines::load_tokenizer;
use serde::Serialize;

use crate::args::TokenizeArgs;
use crate::runner::{drive, model_dir, pipeline_options, to_line, BatchLimits};

pub fn run(args: TokenizeArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model, true)?;
    let (tokenizer, max_length) = load_tokenizer(&dir, &pipeline_options(&args.model), None)?;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        true,
        max_length,
        |item| match &item.pair {
            Some(pair) => tokenizer.encode_pair(&item.text, pair),
            None => tokenizer.encode(&item.text),
        },
        |items, encodings| {
            items
                .iter()
                .zip(encodings)
                .map(|(item, e)| {
                    to_line(&TokenizeLine {
                        text: &item.text,
                        text_pair: item.pair.as_deref(),
                        tokens: &e.tokens,
                        ids: &e.ids,
                        type_ids: &e.type_ids,
                        offsets: &e.offsets,
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct TokenizeLine<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_pair: Option<&'a str>,
    tokens: &'a [String],
    ids: &'a [u32],
    type_ids: &'a [u32],
    offsets: &'a [(usize, usize)],
}
