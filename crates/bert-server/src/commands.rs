//! The work that runs alone on the model thread, as typed commands: each names what to compute and
//! carries the channel its answer goes back on. Routes build a command from a checked request; the
//! model thread runs it here, against the loaded models, and a model the server does not hold is an
//! error, not a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bert::generation::GenerationConfig;
use bert::pipelines::{
    attention_weights, Aggregation, Answer, Entity, GeneratedText, MaskPrediction, QaOptions,
    Understanding,
};
use bert::search::{Mode, SearchHit};
use bert::Encoding;
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::input::encode_all;
use crate::models::{Models, Task};
use crate::worker::groups_by_tokens;

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A request for the model thread that runs alone (not merged with others into one batch).
pub enum Command {
    /// Answers once the model thread is free: the health check.
    Ping { reply: Reply<()> },
    /// Occupies the model thread until `release` fires (or is dropped), saying on `started` when it
    /// has begun: a drill for queueing and admission limits, used by the tests.
    Hold {
        started: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
        reply: Reply<()>,
    },
    /// The likeliest tokens for each `[MASK]` of each text, forward passes of at most `budget`
    /// padded tokens.
    FillMask {
        texts: Vec<String>,
        top_k: usize,
        truncate: bool,
        budget: usize,
        reply: Reply<Vec<Vec<Vec<MaskPrediction>>>>,
    },
    /// The entities of each text.
    Ner {
        texts: Vec<String>,
        aggregation: Aggregation,
        ignore_labels: Vec<String>,
        truncate: bool,
        budget: usize,
        reply: Reply<Vec<Vec<Entity>>>,
    },
    /// The intent and slots of each text.
    Nlu {
        texts: Vec<String>,
        truncate: bool,
        budget: usize,
        reply: Reply<Vec<Understanding>>,
    },
    /// Answers to a question from its encoded windows over `context`.
    Answer {
        context: String,
        windows: Vec<Encoding>,
        options: QaOptions,
        reply: Reply<Vec<Answer>>,
    },
    /// Text generated from each text, decoded in batches of at most `budget` padded source tokens.
    Generate {
        texts: Vec<String>,
        config: GenerationConfig,
        truncate: bool,
        budget: usize,
        reply: Reply<Vec<Vec<GeneratedText>>>,
    },
    /// Every token's final state, per encoding, in forward passes of at most `budget` padded tokens.
    TokenStates {
        encodings: Vec<Encoding>,
        budget: usize,
        reply: Reply<Vec<Vec<Vec<f32>>>>,
    },
    /// SPLADE vectors from the masked-LM head, `(token id, weight)` per non-zero entry.
    Sparse {
        encodings: Vec<Encoding>,
        budget: usize,
        reply: Reply<Vec<Vec<(u32, f32)>>>,
    },
    /// Each layer's attention probabilities for one encoding, `[layer][head][query][key]`.
    Attention {
        encoding: Encoding,
        reply: Reply<Vec<Vec<Vec<Vec<f32>>>>>,
    },
    /// The passages of the index nearest a query.
    Search {
        query: String,
        top_k: usize,
        mode: Mode,
        reply: Reply<Vec<SearchHit>>,
    },
}

impl Command {
    /// Runs the command and sends its answer, unless the client has gone; a panic becomes an error
    /// answer.
    pub fn run(self, models: &Models) {
        match self {
            Command::Ping { reply } => answer(reply, || Ok(())),
            Command::Hold {
                started,
                release,
                reply,
            } => answer(reply, || {
                let _ = started.send(());
                let _ = release.recv();
                Ok(())
            }),
            Command::FillMask {
                texts,
                top_k,
                truncate,
                budget,
                reply,
            } => answer(reply, || fill_mask(models, &texts, top_k, truncate, budget)),
            Command::Ner {
                texts,
                aggregation,
                ignore_labels,
                truncate,
                budget,
                reply,
            } => answer(reply, || {
                ner(
                    models,
                    &texts,
                    aggregation,
                    &ignore_labels,
                    truncate,
                    budget,
                )
            }),
            Command::Nlu {
                texts,
                truncate,
                budget,
                reply,
            } => answer(reply, || nlu(models, &texts, truncate, budget)),
            Command::Answer {
                context,
                windows,
                options,
                reply,
            } => answer(reply, || {
                let answerer = models
                    .answerer
                    .as_ref()
                    .ok_or_else(|| models.missing(Task::Qa))?;
                Ok(answerer.answer_with(&context, &windows, &options)?)
            }),
            Command::Generate {
                texts,
                config,
                truncate,
                budget,
                reply,
            } => answer(reply, || {
                generate(models, &texts, &config, truncate, budget)
            }),
            Command::TokenStates {
                encodings,
                budget,
                reply,
            } => answer(reply, || {
                let embedder =
                    (models.embedder.as_ref()).ok_or_else(|| models.missing(Task::Embed))?;
                in_groups(&encodings, budget, |group| embedder.token_states(group))
            }),
            Command::Sparse {
                encodings,
                budget,
                reply,
            } => answer(reply, || {
                let filler =
                    (models.filler.as_ref()).ok_or_else(|| models.missing(Task::FillMask))?;
                in_groups(&encodings, budget, |group| filler.splade(group))
            }),
            Command::Attention { encoding, reply } => {
                answer(reply, || attention(models, &encoding))
            }
            Command::Search {
                query,
                top_k,
                mode,
                reply,
            } => answer(reply, || {
                let searcher = models
                    .searcher
                    .as_ref()
                    .ok_or_else(|| models.missing(Task::Search))?;
                Ok(searcher.search_with(&query, top_k, mode)?)
            }),
        }
    }
}

/// Sends what `work` gives, unless the client has gone; a panic in it is answered as an error.
fn answer<T>(reply: Reply<T>, work: impl FnOnce() -> Result<T, ApiError>) {
    if reply.is_closed() {
        return;
    }
    let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| Err(panicked()));
    let _ = reply.send(result);
}

/// The error for a panic in the model code.
pub fn panicked() -> ApiError {
    ApiError::backend("the model failed on this input (a bug: please report it with the input)")
}

fn fill_mask(
    models: &Models,
    texts: &[String],
    top_k: usize,
    truncate: bool,
    budget: usize,
) -> Result<Vec<Vec<Vec<MaskPrediction>>>, ApiError> {
    let filler = models
        .filler
        .as_ref()
        .ok_or_else(|| models.missing(Task::FillMask))?;
    let limit = models.max_input_length;
    let encodings = encode_all(texts, "inputs", truncate, limit, |t| filler.encode(t))?;
    in_groups(&encodings, budget, |group| filler.predict(group, top_k))
}

fn generate(
    models: &Models,
    texts: &[String],
    config: &GenerationConfig,
    truncate: bool,
    budget: usize,
) -> Result<Vec<Vec<GeneratedText>>, ApiError> {
    let generator = models
        .generator
        .as_ref()
        .ok_or_else(|| models.missing(Task::Generate))?;
    let limit = models.max_input_length;
    let encodings = encode_all(texts, "inputs", truncate, limit, |t| generator.encode(t))?;
    in_groups(&encodings, budget, |group| {
        generator.generate(group, config)
    })
}

fn nlu(
    models: &Models,
    texts: &[String],
    truncate: bool,
    budget: usize,
) -> Result<Vec<Understanding>, ApiError> {
    let parser = (models.parser.as_ref()).ok_or_else(|| models.missing(Task::Nlu))?;
    let limit = models.max_input_length;
    let encodings = encode_all(texts, "inputs", truncate, limit, |t| parser.encode(t))?;
    in_text_groups(texts, &encodings, budget, |texts, group| {
        parser.understand(texts, group)
    })
}

fn ner(
    models: &Models,
    texts: &[String],
    aggregation: Aggregation,
    ignore_labels: &[String],
    truncate: bool,
    budget: usize,
) -> Result<Vec<Vec<Entity>>, ApiError> {
    let tagger = models
        .tagger
        .as_ref()
        .ok_or_else(|| models.missing(Task::Ner))?;
    let limit = models.max_input_length;
    let encodings = encode_all(texts, "inputs", truncate, limit, |t| tagger.encode(t))?;
    in_text_groups(texts, &encodings, budget, |texts, group| {
        tagger.tag(texts, group, aggregation, ignore_labels)
    })
}

/// `run` over the encodings in groups of at most `budget` padded tokens, the outputs in order.
fn in_groups<T>(
    encodings: &[Encoding],
    budget: usize,
    mut run: impl FnMut(&[Encoding]) -> bert::Result<Vec<T>>,
) -> Result<Vec<T>, ApiError> {
    let mut outputs = Vec::with_capacity(encodings.len());
    for group in groups_by_tokens(encodings, budget, |e| e.ids.len()) {
        outputs.extend(run(group)?);
    }
    Ok(outputs)
}

/// `[layer][head][query][key]` attention probabilities of one encoding.
fn attention(models: &Models, encoding: &Encoding) -> Result<Vec<Vec<Vec<Vec<f32>>>>, ApiError> {
    let encoder = models
        .encoder()
        .ok_or_else(|| models.missing(Task::Embed))?;
    Ok(attention_weights(encoder, encoding)?)
}

/// `run` over the texts and their encodings in groups of at most `budget` padded tokens, the outputs
/// in the texts' order.
fn in_text_groups<T>(
    texts: &[String],
    encodings: &[Encoding],
    budget: usize,
    mut run: impl FnMut(&[&str], &[Encoding]) -> bert::Result<Vec<T>>,
) -> Result<Vec<T>, ApiError> {
    let mut done = 0;
    in_groups(encodings, budget, |group| {
        let mine: Vec<&str> = (texts[done..done + group.len()].iter())
            .map(String::as_str)
            .collect();
        done += group.len();
        run(&mine, group)
    })
}
