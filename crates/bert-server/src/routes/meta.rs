//! The routes about the server rather than the model's tasks: `GET /health` (and `/ping`),
//! `GET /info`, `GET /metrics`, `GET /openapi.json`, `POST /tokenize` and `POST /decode`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::commands::Command;
use crate::error::ApiError;
use crate::input::{check_count, kind, texts, with_prompt, JsonBody};
use crate::routes::off_runtime;
use crate::AppState;

/// 200 once the model thread answers; 503 if it does not.
pub async fn health(State(state): State<AppState>) -> Result<(), ApiError> {
    state.worker.ask(|reply| Command::Ping { reply }).await
}

pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let models = &state.models;
    let config = &state.config;
    let tasks = models.tasks();
    let model_type = if let Some(classifier) = &models.classifier {
        let id2label: serde_json::Map<String, Value> = classifier
            .labels()
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::from(l.as_str())))
            .collect();
        let label2id: serde_json::Map<String, Value> = classifier
            .labels()
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), Value::from(i)))
            .collect();
        let kind = if classifier.labels().len() == 1 {
            "reranker"
        } else {
            "classifier"
        };
        json!({ kind: { "id2label": id2label, "label2id": label2id } })
    } else if models.splade {
        json!({ "embedding": { "pooling": "splade" } })
    } else if let Some(embedder) = &models.embedder {
        json!({ "embedding": { "pooling": embedder.pooling().name() } })
    } else {
        json!({ "task": tasks.first().map(|t| t.name()) })
    };
    Json(json!({
        "model_id": config.model_id,
        "model_dtype": "float32",
        "model_type": model_type,
        "tasks": tasks.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "routes": models.routes(),
        "max_concurrent_requests": config.max_concurrent_requests,
        "max_input_length": models.max_input_length,
        "max_batch_tokens": config.max_batch_tokens,
        "max_client_batch_size": config.max_client_batch_size,
        "payload_limit": config.payload_limit,
        "request_timeout_seconds": config.request_timeout.as_secs_f64(),
        "auto_truncate": config.auto_truncate,
        "api_key_required": config.api_key.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

#[derive(Deserialize)]
pub struct TokenizeRequest {
    #[serde(default)]
    inputs: Value,
    /// Keep `[CLS]`, `[SEP]` (default true).
    add_special_tokens: Option<bool>,
    /// A prompt of `config_sentence_transformers.json` to put before each input.
    prompt_name: Option<String>,
}

/// One token as text-embeddings-inference lists it; `start`/`stop` are character offsets.
#[derive(Serialize)]
pub struct Token {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

pub async fn tokenize(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<TokenizeRequest>,
) -> Result<Json<Vec<Vec<Token>>>, ApiError> {
    let texts = texts(&request.inputs, "inputs")?;
    check_count(texts.len(), "inputs", state.config.max_client_batch_size)?;
    let special = request.add_special_tokens.unwrap_or(true);
    let tokens = off_runtime(&state, move |models| {
        let prompt = models.prompt(request.prompt_name.as_deref())?;
        with_prompt(texts, prompt)
            .iter()
            .map(|text| {
                let e = models.encode(text)?;
                Ok((0..e.ids.len())
                    .filter(|&i| special || e.special_tokens_mask[i] == 0)
                    .map(|i| {
                        let is_special = e.special_tokens_mask[i] == 1;
                        let (start, stop) = e.offsets[i];
                        Token {
                            id: e.ids[i],
                            text: e.tokens[i].clone(),
                            special: is_special,
                            start: (!is_special).then_some(start),
                            stop: (!is_special).then_some(stop),
                        }
                    })
                    .collect())
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(tokens))
}

#[derive(Deserialize)]
pub struct DecodeRequest {
    /// Token ids: one list, or a list of lists.
    #[serde(default)]
    ids: Value,
    /// Leave out `[CLS]`, `[SEP]`, `[PAD]`... (default true).
    skip_special_tokens: Option<bool>,
}

/// `POST /decode`: token ids back to text, one string per list of ids.
pub async fn decode(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DecodeRequest>,
) -> Result<Json<Vec<String>>, ApiError> {
    let lists = id_lists(&request.ids)?;
    check_count(lists.len(), "ids", state.config.max_client_batch_size)?;
    let skip = request.skip_special_tokens.unwrap_or(true);
    let texts = off_runtime(&state, move |models| {
        let tokenizer = models.tokenizer_and_limit().0;
        let vocab = tokenizer.vocab_size();
        (lists.iter().enumerate())
            .map(|(i, ids)| {
                if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(ApiError::validation(format!(
                        "`ids[{i}]`: {id} is not a token id (the vocabulary has {vocab})"
                    )));
                }
                Ok(tokenizer.decode(ids, skip)?)
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(texts))
}

/// `[id, ...]` or `[[id, ...], ...]`.
fn id_lists(value: &Value) -> Result<Vec<Vec<u32>>, ApiError> {
    let id = |v: &Value, at: &str| {
        (v.as_u64().and_then(|n| u32::try_from(n).ok())).ok_or_else(|| {
            ApiError::validation(format!("`{at}` must be a token id, not {}", kind(v)))
        })
    };
    match value {
        Value::Array(items) if items.iter().all(Value::is_array) && !items.is_empty() => {
            (items.iter().enumerate())
                .map(|(i, list)| {
                    let list = list.as_array().expect("checked");
                    if list.is_empty() {
                        return Err(ApiError::empty(format!("`ids[{i}]` is empty")));
                    }
                    (list.iter().enumerate())
                        .map(|(j, v)| id(v, &format!("ids[{i}][{j}]")))
                        .collect()
                })
                .collect()
        }
        Value::Array(items) if items.is_empty() => Err(ApiError::empty("`ids` is empty")),
        Value::Array(items) => Ok(vec![(items.iter().enumerate())
            .map(|(j, v)| id(v, &format!("ids[{j}]")))
            .collect::<Result<_, _>>()?]),
        Value::Null => Err(ApiError::validation("`ids` is required")),
        other => Err(ApiError::validation(format!(
            "`ids` must be a list of token ids or a list of such lists, not {}",
            kind(other)
        ))),
    }
}
