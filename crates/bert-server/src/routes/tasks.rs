//! `POST /fill-mask`, `/ner`, `/nlu`, `/qa`, `/generate` and `/search`: the CLI's pipelines over HTTP,
//! answering with the shapes the CLI prints (`/generate`: transformers' text2text-generation
//! pipeline's). Each request runs alone on the model thread, its inputs in token-bounded
//! batches.

use axum::extract::State;
use axum::Json;
use bert::generation::GenerationOverrides;
use bert::pipelines::{
    Aggregation, Answer, Entity, GeneratedText, MaskPrediction, QaOptions, Understanding,
};
use bert::search::{Mode, SearchHit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::Command;
use crate::error::ApiError;
use crate::input::{check_count, kind, texts, JsonBody};
use crate::models::Task;
use crate::routes::off_runtime;
use crate::AppState;

/// Rows of masked-LM logits in one pass (each row is a vocabulary of floats).
const FILL_MASK_TOKENS: usize = 2048;

/// Source tokens in one generation batch (each step of decoding runs over the batch).
const GENERATE_TOKENS: usize = 4096;

#[derive(Deserialize)]
pub struct GenerateRequest {
    #[serde(default)]
    inputs: Value,
    /// Decoding settings under `transformers`' names; the checkpoint's where absent.
    #[serde(default)]
    parameters: Option<Value>,
    truncate: Option<bool>,
}

/// One input's outputs: one object, or a list when `num_return_sequences` is above 1.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Generated {
    One(GeneratedText),
    Many(Vec<GeneratedText>),
}

pub async fn generate(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<Json<Vec<Generated>>, ApiError> {
    let Some(generator) = &state.models.generator else {
        return Err(state.models.missing(Task::Generate));
    };
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let overrides: GenerationOverrides = match request.parameters {
        Some(parameters) => serde_json::from_value(parameters)
            .map_err(|e| ApiError::validation(format!("`parameters`: {e}")))?,
        None => GenerationOverrides::default(),
    };
    let config = overrides
        .apply(&generator.generation)
        .map_err(|e| ApiError::validation(format!("`parameters`: {e}")))?;
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let budget = GENERATE_TOKENS.min(state.config.max_batch_tokens);
    let many = config.num_return_sequences > 1;
    let outputs = state
        .worker
        .ask(|reply| Command::Generate {
            texts,
            config,
            truncate,
            budget,
            reply,
        })
        .await?;
    Ok(Json(
        outputs
            .into_iter()
            .flat_map(|mut sequences| match many {
                true => vec![Generated::Many(sequences)],
                false => vec![Generated::One(sequences.remove(0))],
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct FillMaskRequest {
    #[serde(default)]
    inputs: Value,
    /// Predictions per mask (default 5).
    top_k: Option<usize>,
    truncate: Option<bool>,
}

/// One mask's predictions, or one list per mask when a text has several (as transformers).
#[derive(Serialize)]
#[serde(untagged)]
pub enum MaskPredictions {
    One(Vec<MaskPrediction>),
    Many(Vec<Vec<MaskPrediction>>),
}

#[derive(Serialize)]
pub struct FillMaskResult {
    text: String,
    predictions: MaskPredictions,
}

pub async fn fill_mask(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<FillMaskRequest>,
) -> Result<Json<Vec<FillMaskResult>>, ApiError> {
    let Some(filler) = &state.models.filler else {
        return Err(state.models.missing(Task::FillMask));
    };
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let top_k = request.top_k.unwrap_or(5);
    let vocab = filler.pipeline().config.vocab_size;
    if top_k == 0 || top_k > vocab {
        return Err(ApiError::validation(format!(
            "`top_k` must be between 1 and the vocabulary size {vocab}, not {top_k}"
        )));
    }
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let budget = FILL_MASK_TOKENS.min(state.config.max_batch_tokens);
    let predictions = state
        .worker
        .ask(|reply| Command::FillMask {
            texts: texts.clone(),
            top_k,
            truncate,
            budget,
            reply,
        })
        .await?;
    let results = texts
        .into_iter()
        .zip(predictions)
        .map(|(text, mut masks)| FillMaskResult {
            text,
            predictions: if masks.len() == 1 {
                MaskPredictions::One(masks.remove(0))
            } else {
                MaskPredictions::Many(masks)
            },
        })
        .collect();
    Ok(Json(results))
}

#[derive(Deserialize)]
pub struct NerRequest {
    #[serde(default)]
    inputs: Value,
    /// none (default), simple, first, average or max.
    aggregation_strategy: Option<String>,
    /// Labels left out (default ["O"]).
    ignore_labels: Option<Vec<String>>,
    truncate: Option<bool>,
}

#[derive(Serialize)]
pub struct NerResult {
    text: String,
    entities: Vec<Entity>,
}

pub async fn ner(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<NerRequest>,
) -> Result<Json<Vec<NerResult>>, ApiError> {
    if state.models.tagger.is_none() {
        return Err(state.models.missing(Task::Ner));
    }
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let aggregation: Aggregation = request
        .aggregation_strategy
        .as_deref()
        .unwrap_or("none")
        .parse()
        .map_err(|e: String| ApiError::validation(format!("`aggregation_strategy`: {e}")))?;
    let ignore = request.ignore_labels.unwrap_or_else(|| vec!["O".into()]);
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let budget = state.config.max_batch_tokens;
    let entities = state
        .worker
        .ask(|reply| Command::Ner {
            texts: texts.clone(),
            aggregation,
            ignore_labels: ignore,
            truncate,
            budget,
            reply,
        })
        .await?;
    let results = texts
        .into_iter()
        .zip(entities)
        .map(|(text, entities)| NerResult { text, entities })
        .collect();
    Ok(Json(results))
}

#[derive(Deserialize)]
pub struct NluRequest {
    #[serde(default)]
    inputs: Value,
    truncate: Option<bool>,
}

#[derive(Serialize)]
pub struct NluResult {
    text: String,
    #[serde(flatten)]
    understanding: Understanding,
}

/// `POST /nlu`: each text's intent and slots, as `bert nlu` prints them.
pub async fn nlu(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<NluRequest>,
) -> Result<Json<Vec<NluResult>>, ApiError> {
    if state.models.parser.is_none() {
        return Err(state.models.missing(Task::Nlu));
    }
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let budget = state.config.max_batch_tokens;
    let understood = state
        .worker
        .ask(|reply| Command::Nlu {
            texts: texts.clone(),
            truncate,
            budget,
            reply,
        })
        .await?;
    let results = (texts.into_iter().zip(understood))
        .map(|(text, understanding)| NluResult {
            text,
            understanding,
        })
        .collect();
    Ok(Json(results))
}

#[derive(Deserialize)]
pub struct QaRequest {
    #[serde(default)]
    question: Value,
    #[serde(default)]
    context: Value,
    /// Answers returned (default 1; more adds `answers`).
    top_k: Option<usize>,
    /// Longest answer in tokens (default 15).
    max_answer_len: Option<usize>,
    /// Allow the empty answer (default false).
    #[serde(default)]
    handle_impossible_answer: bool,
}

#[derive(Serialize)]
pub struct QaResult {
    question: String,
    answer: String,
    score: f32,
    start: usize,
    end: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    answers: Option<Vec<Answer>>,
}

pub async fn qa(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<QaRequest>,
) -> Result<Json<QaResult>, ApiError> {
    if state.models.answerer.is_none() {
        return Err(state.models.missing(Task::Qa));
    }
    let question = string(&request.question, "question")?;
    let context = string(&request.context, "context")?;
    let defaults = QaOptions::default();
    let options = QaOptions {
        top_k: positive(request.top_k, defaults.top_k, "top_k")?,
        max_answer_len: positive(
            request.max_answer_len,
            defaults.max_answer_len,
            "max_answer_len",
        )?,
        handle_impossible_answer: request.handle_impossible_answer,
        ..defaults
    };
    let windows = off_runtime(&state, {
        let (question, context) = (question.clone(), context.clone());
        move |models| {
            let answerer = models
                .answerer
                .as_ref()
                .ok_or_else(|| models.missing(Task::Qa))?;
            Ok(answerer.encode(&question, &context)?)
        }
    })
    .await?;
    let most = state.config.max_client_batch_size;
    if windows.len() > most {
        return Err(ApiError::too_large(format!(
            "`context` is too long: it makes {} windows of the model's input and this server \
             takes at most {most} (--max-client-batch-size)",
            windows.len()
        )));
    }
    let answers = state
        .worker
        .ask(|reply| Command::Answer {
            context,
            windows,
            options,
            reply,
        })
        .await?;
    let best = answers.first();
    Ok(Json(QaResult {
        question,
        answer: best.map_or_else(String::new, |a| a.answer.clone()),
        score: best.map_or(0.0, |a| a.score),
        start: best.map_or(0, |a| a.start),
        end: best.map_or(0, |a| a.end),
        answers: (options.top_k > 1).then_some(answers),
    }))
}

fn string(value: &Value, field: &str) -> Result<String, ApiError> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(ApiError::empty(format!("`{field}` is empty"))),
        Value::Null => Err(ApiError::validation(format!("`{field}` is required"))),
        other => Err(ApiError::validation(format!(
            "`{field}` must be a string, not {}",
            kind(other)
        ))),
    }
}

/// Largest `top_k` (and QA `max_answer_len`) a request may ask for.
const MOST: usize = 1000;

fn positive(value: Option<usize>, default: usize, field: &str) -> Result<usize, ApiError> {
    match value {
        Some(n) if n == 0 || n > MOST => Err(ApiError::validation(format!(
            "`{field}` must be between 1 and {MOST}, not {n}"
        ))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

#[derive(Deserialize)]
pub struct SearchRequest {
    #[serde(default)]
    query: Value,
    /// Passages returned (default 10).
    top_k: Option<usize>,
    /// dense (default), bm25 or hybrid.
    mode: Option<String>,
}

pub async fn search(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> Result<Json<Vec<SearchHit>>, ApiError> {
    if state.models.searcher.is_none() {
        return Err(state.models.missing(Task::Search));
    }
    let query = string(&request.query, "query")?;
    let top_k = positive(request.top_k, 10, "top_k")?;
    let mode: Mode = request
        .mode
        .as_deref()
        .unwrap_or("dense")
        .parse()
        .map_err(|e: String| ApiError::validation(format!("`mode`: {e}")))?;
    let hits = state
        .worker
        .ask(|reply| Command::Search {
            query,
            top_k,
            mode,
            reply,
        })
        .await?;
    Ok(Json(hits))
}
