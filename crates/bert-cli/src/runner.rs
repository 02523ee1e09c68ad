//! What the inference commands share: which model a command runs (`--model`, a Hub id, or the bundled
//! model), how its pipeline is loaded and warned about, and how inputs stream through it: read and
//! tokenized a window ahead, sorted by length, cut into batches within the size and token limits, run
//! on every shard, and written back in input order, one JSON line each (a bad line's error in its place).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bert::pipelines::PipelineOptions;
use bert::train::shards::Shards;
use bert::weights::params::LoadReport;
use bert::Encoding;
use rayon::prelude::*;
use serde::Serialize;

use crate::args::{InputArgs, ModelArgs};
use crate::input::{self, Item};
use crate::output::Output;

/// The model bundled in the repository: an English and French sentence encoder that also fills in
/// masked words, made by `bert distill` (see its model card).
const BUNDLED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/minilm-l3-en-fr");

/// `--model` as a directory; without it, the bundled model where `bundled_ok` (a command it can serve).
pub fn model_dir(args: &ModelArgs, bundled_ok: bool) -> Result<PathBuf> {
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
    Ok(bert::weights::hub::resolve_model(
        model,
        args.revision.as_deref(),
    )?)
}

/// How warnings name the model.
fn model_name(args: &ModelArgs) -> &str {
    args.model.as_deref().unwrap_or("the bundled model")
}

pub fn pipeline_options(args: &ModelArgs) -> PipelineOptions {
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

/// Resolves `--model` (the bundled model where `bundled_ok`), loads it with `load`, and warns about
/// head weights it lacked and weights it left unused, as transformers does.
pub fn load_pipeline<P>(
    args: &ModelArgs,
    bundled_ok: bool,
    load: impl FnOnce(&Path, &PipelineOptions) -> bert::Result<P>,
    report: impl FnOnce(&P) -> &LoadReport,
) -> Result<P> {
    let dir = model_dir(args, bundled_ok)?;
    let pipeline = load(&dir, &pipeline_options(args))
        .with_context(|| format!("loading {}", dir.display()))?;
    warn_about(report(&pipeline), model_name(args));
    Ok(pipeline)
}

/// Batches read together and sorted by length before they are cut into batches, so that texts of
/// similar length share a batch and little padding is computed.
const SORT_WINDOW: usize = 8;

/// How many inputs one forward pass takes: at most `size`, and at most `max_tokens` tokens with the
/// padding to the longest.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub size: usize,
    pub max_tokens: usize,
}

impl BatchLimits {
    pub fn of(args: &ModelArgs) -> Self {
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
pub fn drive(
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
pub fn not_truncated_if(mut encoding: Encoding, chunked: bool) -> Encoding {
    encoding.truncated &= !chunked;
    encoding
}

/// An input that takes no text pair: a pair is a per-line error.
pub fn single_text(item: &Item) -> bert::Result<&str> {
    match item.pair {
        Some(_) => Err(bert::Error::InvalidInput(
            "`text_pair` is not used by this command".into(),
        )),
        None => Ok(&item.text),
    }
}

/// One output line: `value` as compact JSON.
pub fn to_line(value: &impl Serialize) -> Result<String> {
    Ok(serde_json::to_string(value)?)
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
