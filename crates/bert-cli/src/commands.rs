//! One function per subcommand: build the pipeline from the flags, then stream inputs through it in
//! batches and write one JSON object per input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::params::LoadReport;
use bert::pipelines::{
    load_tokenizer, ClassificationScore, EmbedOptions, Embedder, FillMask, LongText,
    MaskPrediction, PipelineOptions, TextClassifier, TokenClassifier,
};
use bert::train::shards::Shards;
use bert::Encoding;
use rayon::prelude::*;
use serde::Serialize;

use crate::args::{
    ClassifyArgs, Cli, Command, EmbedArgs, FillMaskArgs, InputArgs, ModelArgs, NerArgs,
    TokenizeArgs,
};
use crate::input::{self, Item};
use crate::output::Output;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Tokenize(args) => tokenize(args),
        Command::Embed(args) => embed(args),
        Command::FillMask(args) => fill_mask(args),
        Command::Classify(args) => classify(args),
        Command::Ner(args) => ner(args),
        Command::Qa(args) => crate::answering::run(args),
        Command::Vocab(args) => crate::training::vocab(args),
        Command::Pretrain(args) => crate::training::pretrain(args),
        Command::Finetune(args) => crate::finetuning::run(args),
        Command::Serve(args) => crate::serving::run(args),
        Command::Index(args) => crate::searching::index(args),
        Command::Search(args) => crate::searching::search(args),
        Command::Export(args) => crate::searching::export(args),
    }
}

/// The model bundled in the repository, pretrained by `bert pretrain` (see its README).
const BUNDLED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/kjv-bert-mini");

/// `--model` as a directory; without it, the bundled model where `bundled_ok` (a command it can serve).
pub(crate) fn model_dir(args: &ModelArgs, bundled_ok: bool) -> Result<PathBuf> {
    let Some(model) = &args.model else {
        if !bundled_ok {
            bail!("--model is required: give a checkpoint directory or a Hub id");
        }
        let dir = std::env::var_os("BERT_DEFAULT_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(BUNDLED_MODEL));
        if !dir.join("config.json").exists() {
            bail!(
                "no --model given and no bundled model at {}; give --model or set BERT_DEFAULT_MODEL",
                dir.display()
            );
        }
        return Ok(dir);
    };
    Ok(bert::hub::resolve_model(model, args.revision.as_deref())?)
}

/// How warnings name the model.
fn model_name(args: &ModelArgs) -> &str {
    args.model.as_deref().unwrap_or("the bundled model")
}

pub(crate) fn pipeline_options(args: &ModelArgs) -> PipelineOptions {
    PipelineOptions {
        max_length: args.max_length,
        truncation: args.truncation,
        precision: args.dtype,
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

/// Batches read together and sorted by length before they are cut into batches, so that texts of
/// similar length share a batch and little padding is computed.
const SORT_WINDOW: usize = 8;

/// How many inputs one forward pass takes: at most `size`, and at most `max_tokens` tokens with the
/// padding to the longest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub size: usize,
    pub max_tokens: usize,
}

impl BatchLimits {
    pub(crate) fn of(args: &ModelArgs) -> Self {
        BatchLimits {
            size: args.batch_size.max(1) as usize,
            max_tokens: args.max_batch_tokens.max(1) as usize,
        }
    }

    /// Cuts `order` (input indices sorted by `length`, shortest first) into batches within the
    /// limits; an input longer than the token budget makes a batch of its own.
    fn cut(self, order: &[usize], length: impl Fn(usize) -> usize) -> Vec<&[usize]> {
        let mut batches = Vec::new();
        let mut start = 0;
        for (end, &i) in order.iter().enumerate() {
            // Sorted: the newest input is the longest, so it sets the padded length.
            let count = end - start + 1;
            if end > start && (count > self.size || count * length(i) > self.max_tokens) {
                batches.push(&order[start..end]);
                start = end;
            }
        }
        if start < order.len() {
            batches.push(&order[start..]);
        }
        batches
    }
}

/// Runs `run` on batches of encodings of similar length within `limits`, spread over `shards` (each
/// runs every n-th batch at once with the others) when there are enough batches; the lines come back
/// in input order.
fn by_length(
    items: &[Item],
    encodings: &[Encoding],
    limits: BatchLimits,
    shards: &Shards,
    run: &(impl Fn(&[Item], &[Encoding]) -> Result<Vec<String>> + Sync),
) -> Result<Vec<String>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let groups = limits.cut(&order, |i| encodings[i].ids.len());
    // Fewer batches than shards (a few inputs): one at a time, each op on every thread.
    let one = Shards::new(1)?;
    let shards = if groups.len() < shards.count() {
        &one
    } else {
        shards
    };
    let count = shards.count();
    let done = shards.run(|shard| {
        let mut lines = Vec::new();
        for group in groups.iter().skip(shard).step_by(count) {
            let batch_items: Vec<Item> = group.iter().map(|&i| items[i].clone()).collect();
            let batch: Vec<Encoding> = group.iter().map(|&i| encodings[i].clone()).collect();
            lines.extend(group.iter().copied().zip(run(&batch_items, &batch)?));
        }
        anyhow::Ok(lines)
    })?;
    let mut lines = vec![String::new(); encodings.len()];
    for (i, line) in done.into_iter().flatten() {
        lines[i] = line;
    }
    Ok(lines)
}

/// One window of inputs, read and tokenized, in input order: an item and its encoding, or the line's
/// error.
type Window = Vec<Result<(Item, Encoding), (usize, String)>>;

/// Streams inputs in batches: `encode` tokenizes one item (its error fails that line only), `run`
/// processes the encoded batch, one JSON line per encoding, in order. A reader thread reads and
/// tokenizes the next window of inputs while this one runs through the model; its tokenization jobs go
/// to the same thread pool, so they fill the moments the model leaves a thread idle.
fn drive(
    input: &InputArgs,
    limits: BatchLimits,
    allow_empty: bool,
    max_length: usize,
    encode: impl Fn(&Item) -> bert::Result<Encoding> + Sync,
    run: impl Fn(&[Item], &[Encoding]) -> Result<Vec<String>> + Sync,
) -> Result<ExitCode> {
    let shards = Shards::new(crate::threads::shards())?;
    let mut out = Output::new();
    std::thread::scope(|scope| -> Result<()> {
        // One window waits while another runs: the reader stays a window ahead, no more.
        let (send, windows) = std::sync::mpsc::sync_channel(1);
        let (window_size, encode) = (limits.size * SORT_WINDOW, &encode);
        scope.spawn(move || read_windows(input, allow_empty, window_size, encode, send));
        for window in windows {
            run_window(window?, limits, max_length, &shards, &run, &mut out)?;
        }
        Ok(())
    })?;
    Ok(if out.failed_lines() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads the inputs `size` at a time and sends each window tokenized (on every thread at once), until
/// the inputs end, one cannot be read, or the receiver is gone.
fn read_windows(
    input: &InputArgs,
    allow_empty: bool,
    size: usize,
    encode: &(impl Fn(&Item) -> bert::Result<Encoding> + Sync),
    send: std::sync::mpsc::SyncSender<Result<Window>>,
) {
    let mut inputs = input::read(input, allow_empty).peekable();
    while inputs.peek().is_some() {
        let chunk: Result<Vec<input::Input>> = inputs.by_ref().take(size).collect();
        let window = chunk.map(|chunk| {
            chunk
                .into_par_iter()
                .map(|entry| {
                    entry.map_err(|e| (e.line, e.message)).and_then(|item| {
                        encode(&item)
                            .map(|enc| (item.clone(), enc))
                            .map_err(|e| (item.line, e.to_string()))
                    })
                })
                .collect()
        });
        let failed = window.is_err();
        if send.send(window).is_err() || failed {
            return;
        }
    }
}

/// Runs one tokenized window through `run` in batches of similar length and writes its lines (and
/// its lines' errors) in input order.
fn run_window(
    window: Window,
    limits: BatchLimits,
    max_length: usize,
    shards: &Shards,
    run: &(impl Fn(&[Item], &[Encoding]) -> Result<Vec<String>> + Sync),
    out: &mut Output,
) -> Result<()> {
    let mut results: Vec<Result<String, (usize, String)>> = Vec::with_capacity(window.len());
    let (mut items, mut encodings, mut slots) = (Vec::new(), Vec::new(), Vec::new());
    for entry in window {
        match entry {
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
    for (slot, value) in slots
        .into_iter()
        .zip(by_length(&items, &encodings, limits, shards, run)?)
    {
        results[slot] = Ok(value);
    }
    for result in results {
        match result {
            Ok(line) => out.write_line(&line)?,
            Err((line, message)) => out.line_error(line, &message)?,
        }
    }
    out.flush()?;
    Ok(())
}

/// With `--long-text chunk` nothing is cut off, so there is no truncation to note.
fn not_truncated_if(mut encoding: Encoding, chunked: bool) -> Encoding {
    encoding.truncated &= !chunked;
    encoding
}

/// An input that takes no text pair: a pair is a per-line error.
fn single_text(item: &Item) -> bert::Result<&str> {
    match item.pair {
        Some(_) => Err(bert::Error::InvalidInput(
            "`text_pair` is not used by this command".into(),
        )),
        None => Ok(&item.text),
    }
}

fn tokenize(args: TokenizeArgs) -> Result<ExitCode> {
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

fn embed(args: EmbedArgs) -> Result<ExitCode> {
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

fn fill_mask(args: FillMaskArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model, true)?;
    let pipeline = FillMask::load(&dir, &pipeline_options(&args.model))
        .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(&pipeline.pipeline().report, model_name(&args.model));
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

fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model, false)?;
    let classifier =
        TextClassifier::load(&dir, &pipeline_options(&args.model), args.function_to_apply)
            .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(&classifier.pipeline().report, model_name(&args.model));
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

fn ner(args: NerArgs) -> Result<ExitCode> {
    let dir = model_dir(&args.model, false)?;
    let tagger = TokenClassifier::load(&dir, &pipeline_options(&args.model))
        .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(&tagger.pipeline().report, model_name(&args.model));
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

fn to_line(value: &impl Serialize) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

// Output lines. Scores and embeddings are f32, written with the shortest digits that read back exactly.

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

#[derive(Serialize)]
struct NerLine<'a> {
    text: &'a str,
    entities: Vec<bert::pipelines::Entity>,
}

#[derive(Serialize)]
struct EmbedLine<'a> {
    text: &'a str,
    embedding: Vec<f32>,
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

#[cfg(test)]
mod tests {
    use super::BatchLimits;

    #[test]
    fn batches_hold_at_most_the_size_and_the_token_budget() {
        let lengths = [3, 4, 5, 10, 10, 10, 40, 100];
        let order: Vec<usize> = (0..lengths.len()).collect();
        let limits = BatchLimits {
            size: 3,
            max_tokens: 40,
        };
        let batches = limits.cut(&order, |i| lengths[i]);
        let expected: Vec<&[usize]> = vec![&[0, 1, 2], &[3, 4, 5], &[6], &[7]];
        assert_eq!(batches, expected);
        for batch in &batches {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(batch.len() == 1 || batch.len() * longest <= 40, "{batch:?}");
        }
        // Without a binding budget the size alone cuts.
        let loose = BatchLimits {
            size: 4,
            max_tokens: usize::MAX,
        };
        let sizes: Vec<usize> = loose
            .cut(&order, |i| lengths[i])
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [4, 4]);
        assert!(loose.cut(&[], |_| 0).is_empty());
    }
}
