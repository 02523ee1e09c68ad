//! `bert classify`: text and text-pair classification (single-label, multi-label, regression), long
//! texts cut off or averaged over windows.

use std::process::ExitCode;

use anyhow::Result;
use std::path::Path;

use bert::pipelines::{ClassificationScore, LongText, PipelineOptions, TextClassifier};
use serde::Serialize;

use crate::args::ClassifyArgs;
use crate::runner::{drive, load_pipeline, not_truncated_if, to_line, BatchLimits};

pub fn run(args: ClassifyArgs) -> Result<ExitCode> {
    let load = |dir: &Path, options: &PipelineOptions| {
        TextClassifier::load(dir, options, args.function_to_apply)
    };
    let classifier = load_pipeline(&args.model, false, load, |c| &c.pipeline().report)?;
    let top_k = args.top_k.map_or(usize::MAX, |k| k as usize);
    let max_length = classifier.pipeline().max_length;
    let long_text = args.long_text.resolve(max_length);
    let classifier = classifier.with_long_text(long_text)?;
    let chunked = long_text != LongText::Truncate;
    drive(
        &args.input,
        BatchLimits::of(&args.model),
        false,
        max_length,
        |item| match (&item.pair, chunked) {
            (Some(_), true) => Err(bert::Error::InvalidInput(
                "--long-text chunk takes single texts, not pairs".into(),
            )),
            (Some(pair), false) => classifier.encode_pair(&item.text, pair),
            (None, _) => classifier
                .encode(&item.text)
                .map(|e| not_truncated_if(e, chunked)),
        },
        |items, encodings| {
            let results = if chunked {
                let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
                classifier.classify_long(&texts)?
            } else {
                classifier.classify(encodings)?
            };
            items
                .iter()
                .zip(results)
                .map(|(item, result)| {
                    let top = result.top();
                    to_line(&ClassifyLine {
                        text: &item.text,
                        text_pair: item.pair.as_deref(),
                        label: &top.label,
                        score: top.score,
                        scores: Scores(&result.scores[..top_k.min(result.scores.len())]),
                    })
                })
                .collect()
        },
    )
}

#[derive(Serialize)]
struct ClassifyLine<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_pair: Option<&'a str>,
    label: &'a str,
    score: f32,
    scores: Scores<'a>,
}

/// `{label: score}`, best first.
struct Scores<'a>(&'a [ClassificationScore]);

impl Serialize for Scores<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|s| (&s.label, s.score)))
    }
}
