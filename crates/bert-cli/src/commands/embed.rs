//! `bert embed`: sentence embeddings with the checkpoint's sentence-transformers pooling, long texts
//! cut off or averaged over windows.

use std::process::ExitCode;

use anyhow::Context;
use anyhow::Result;
use bert::pipelines::{EmbedOptions, Embedder, LongText};
use serde::Serialize;

use crate::args::EmbedArgs;
use crate::runner::{
    drive, model_dir, not_truncated_if, pipeline_options, single_text, to_line, BatchLimits,
};

pub fn run(args: EmbedArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model, true)?;
    let normalize = match (args.normalize, args.no_normalize) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let options = EmbedOptions {
        pipeline: pipeline_options(&args.model),
        pooling: args.pooling,
        normalize,
    };
    let embedder =
        Embedder::load(&dir, &options).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = embedder.pipeline().max_length;
    let long_text = args.long_text.resolve(max_length);
    let embedder = embedder.with_long_text(long_text)?;
    let chunked = long_text != LongText::Truncate;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        max_length,
        |item| {
            embedder
                .encode(single_text(item)?)
                .map(|e| not_truncated_if(e, chunked))
        },
        |items, encodings| {
            let vectors = if chunked {
                let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
                embedder.embed_long(&texts)?
            } else {
                embedder.embed(encodings)?
            };
            items
                .iter()
                .zip(vectors)
                .map(|(item, embedding)| {
                    to_line(&EmbedLine {
                        text: &item.text,
                        embedding,
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct EmbedLine<'a> {
    text: &'a str,
    embedding: Vec<f32>,
}
