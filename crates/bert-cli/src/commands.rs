//! One function per subcommand: build the pipeline from the flags, then stream inputs through it in
//! batches and write one JSON object per input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bert::params::LoadReport;
use bert::pipelines::{
    load_tokenizer, EmbedOptions, Embedder, FillMask, MaskPrediction, PipelineOptions,
    TextClassifier,
};
use bert::Encoding;
use serde_json::{json, Map, Value};

use crate::args::{
    ClassifyArgs, Cli, Command, EmbedArgs, FillMaskArgs, InputArgs, ModelArgs, TokenizeArgs,
};
use crate::input::{self, Item};
use crate::output::Output;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Tokenize(args) => tokenize(args),
        Command::Embed(args) => embed(args),
        Command::FillMask(args) => fill_mask(args),
        Command::Classify(args) => classify(args),
    }
}

fn model_dir(args: &ModelArgs) -> Result<PathBuf> {
    Ok(bert::hub::resolve_model(
        &args.model,
        args.revision.as_deref(),
    )?)
}

fn pipeline_options(args: &ModelArgs) -> PipelineOptions {
    PipelineOptions {
        max_length: args.max_length,
        truncation: args.truncation,
    }
}

/// Warns, as transformers does, about head weights the checkpoint did not have and checkpoint weights
/// the model did not use.
fn warn_about(report: &LoadReport, model: &str) {
    if !report.newly_initialized.is_empty() {
        eprintln!(
            "warning: weights not in the checkpoint at {model} were newly initialized: {}; \
             outputs are untrained until the model is fine-tuned",
            report.newly_initialized.join(", ")
        );
    }
    if !report.unused.is_empty() {
        eprintln!(
            "note: weights in the checkpoint at {model} not used by this task: {}",
            report.unused.join(", ")
        );
    }
}

/// Streams inputs in batches: `encode` tokenizes one item (its error fails that line only), `run`
/// processes the encoded batch, one JSON line per encoding, in order.
fn drive(
    input: &InputArgs,
    batch_size: u64,
    allow_empty: bool,
    max_length: usize,
    encode: impl Fn(&Item) -> bert::Result<Encoding>,
    run: impl Fn(&[Item], &[Encoding]) -> Result<Vec<String>>,
) -> Result<ExitCode> {
    let mut out = Output::new();
    let mut inputs = input::read(input, allow_empty).peekable();
    while inputs.peek().is_some() {
        let chunk: Vec<input::Input> = inputs
            .by_ref()
            .take(batch_size as usize)
            .collect::<Result<_>>()?;
        let mut results: Vec<Result<String, (usize, String)>> = Vec::with_capacity(chunk.len());
        let (mut items, mut encodings, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        for entry in chunk {
            match entry.map_err(|e| (e.line, e.message)).and_then(|item| {
                encode(&item)
                    .map(|enc| (item.clone(), enc))
                    .map_err(|e| (item.line, e.to_string()))
            }) {
                Ok((item, encoding)) => {
                    if encoding.truncated {
                        out.note_truncation(item.line, max_length);
                    }
                    slots.push(results.len());
                    results.push(Ok(String::new()));
                    items.push(item);
                    encodings.push(encoding);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        for (slot, value) in slots.into_iter().zip(run(&items, &encodings)?) {
            results[slot] = Ok(value);
        }
        for result in results {
            match result {
                Ok(line) => out.write_line(&line)?,
                Err((line, message)) => out.line_error(line, &message)?,
            }
        }
        out.flush()?;
    }
    Ok(if out.failed_lines() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn with_pair(mut value: Map<String, Value>, item: &Item) -> Value {
    if let Some(pair) = &item.pair {
        value.insert("text_pair".into(), json!(pair));
    }
    Value::Object(value)
}

fn encode_item(tokenizer: &bert::Tokenizer, item: &Item) -> bert::Result<Encoding> {
    match &item.pair {
        Some(pair) => tokenizer.encode_pair(&item.text, pair),
        None => tokenizer.encode(&item.text),
    }
}

fn tokenize(args: TokenizeArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model)?;
    let (tokenizer, max_length) = load_tokenizer(&dir, &pipeline_options(&args.model), None)?;
    drive(
        &args.input,
        args.model.batch_size,
        true,
        max_length,
        |item| encode_item(&tokenizer, item),
        |items, encodings| {
            Ok(items
                .iter()
                .zip(encodings)
                .map(|(item, e)| {
                    let mut value = Map::new();
                    value.insert("text".into(), json!(item.text));
                    value.insert("tokens".into(), json!(e.tokens));
                    value.insert("ids".into(), json!(e.ids));
                    value.insert("type_ids".into(), json!(e.type_ids));
                    value.insert("offsets".into(), json!(e.offsets));
                    with_pair(value, item).to_string()
                })
                .collect())
        },
    )
}

fn embed(args: EmbedArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model)?;
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
    if args.input.jsonl {
        anyhow::bail!("--jsonl is not supported by `embed`: give one text per line");
    }
    drive(
        &args.input,
        args.model.batch_size,
        false,
        embedder.pipeline().max_length,
        |item| embedder.encode(&item.text),
        |items, encodings| {
            let vectors = embedder.embed(encodings)?;
            items
                .iter()
                .zip(vectors)
                .map(|(item, embedding)| {
                    serde_json::to_string(&EmbedLine {
                        text: &item.text,
                        embedding,
                    })
                    .map_err(Into::into)
                })
                .collect()
        },
    )
}

/// Embeddings as f32 (shortest round-trip digits), not widened to f64.
#[derive(serde::Serialize)]
struct EmbedLine<'a> {
    text: &'a str,
    embedding: Vec<f32>,
}

fn fill_mask(args: FillMaskArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model)?;
    let pipeline = FillMask::load(&dir, &pipeline_options(&args.model))
        .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(&pipeline.pipeline().report, &args.model.model);
    drive(
        &args.input,
        args.model.batch_size,
        false,
        pipeline.pipeline().max_length,
        |item| pipeline.encode(&item.text),
        |items, encodings| {
            let predictions = pipeline.predict(encodings, args.top_k as usize)?;
            Ok(items
                .iter()
                .zip(predictions)
                .map(|(item, masks)| {
                    json!({"text": item.text, "predictions": mask_json(masks)}).to_string()
                })
                .collect())
        },
    )
}

/// One mask: a list of predictions; several: a list per mask (as transformers returns them).
fn mask_json(mut masks: Vec<Vec<MaskPrediction>>) -> Value {
    if masks.len() == 1 {
        json!(masks.remove(0))
    } else {
        json!(masks)
    }
}

fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model)?;
    let classifier =
        TextClassifier::load(&dir, &pipeline_options(&args.model), args.function_to_apply)
            .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(&classifier.pipeline().report, &args.model.model);
    let top_k = args.top_k.map_or(usize::MAX, |k| k as usize);
    drive(
        &args.input,
        args.model.batch_size,
        false,
        classifier.pipeline().max_length,
        |item| encode_item(&classifier.pipeline().tokenizer, item),
        |items, encodings| {
            let results = classifier.classify(encodings)?;
            Ok(items
                .iter()
                .zip(results)
                .map(|(item, result)| {
                    let scores: Map<String, Value> = result
                        .scores
                        .iter()
                        .take(top_k)
                        .map(|s| (s.label.clone(), json!(s.score)))
                        .collect();
                    let mut value = Map::new();
                    value.insert("text".into(), json!(item.text));
                    value.insert("label".into(), json!(result.top().label));
                    value.insert("score".into(), json!(result.top().score));
                    value.insert("scores".into(), Value::Object(scores));
                    with_pair(value, item).to_string()
                })
                .collect())
        },
    )
}
