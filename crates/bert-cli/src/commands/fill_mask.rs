//! `bert fill-mask`: the likeliest tokens behind each `[MASK]`, as transformers' fill-mask pipeline.

use std::process::ExitCode;

use anyhow::Result;
use bert::pipelines::{FillMask, MaskPrediction};
use serde::Serialize;

use crate::args::FillMaskArgs;
use crate::runner::{drive, load_pipeline, single_text, to_line, BatchLimits};

pub fn run(args: FillMaskArgs) -> Result<ExitCode> {
    let pipeline = load_pipeline(&args.model, true, FillMask::load, |p| &p.pipeline().report)?;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        pipeline.pipeline().max_length,
        |item| pipeline.encode(single_text(item)?),
        |items, encodings| {
            let predictions = pipeline.predict(encodings, args.top_k as usize)?;
            items
                .iter()
                .zip(predictions)
                .map(|(item, mut masks)| {
                    // One mask: a list of predictions; several: a list per mask (as transformers).
                    let predictions = if masks.len() == 1 {
                        MaskPredictions::One(masks.remove(0))
                    } else {
                        MaskPredictions::Many(masks)
                    };
                    to_line(&FillMaskLine {
                        text: &item.text,
                        predictions,
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
#[serde(untagged)]
enum MaskPredictions {
    One(Vec<MaskPrediction>),
    Many(Vec<Vec<MaskPrediction>>),
}

#[derive(Serialize)]
struct FillMaskLine<'a> {
    text: &'a str,
    predictions: MaskPredictions,
}
