//! `POST /predict` (labels of texts and text pairs) and `POST /rerank` (a cross-encoder scoring
//! passages against a query), shaped as text-embeddings-inference answers them, and `POST /v1/rerank`
//! in the shape of Cohere's and Jina's rerank APIs.

use axum::extract::State;
use axum::Json;
use bert::pipelines::{ClassificationScore, ScoreFunction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::input::{
    average_windows, check_batch, encode_all, encode_windows, kind, texts, Direction, JsonBody,
    LongText,
};
use bert::Encoding;

use crate::models::{Models, Task};
use crate::routes::off_runtime;
use crate::worker::Rows;
use crate::AppState;

/// A text or a text pair.
#[derive(Debug, Clone, PartialEq)]
enum Sequence {
    Single(String),
    Pair(String, String),
}

#[derive(Deserialize)]
pub struct PredictRequest {
    #[serde(default)]
    inputs: Value,
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Direction,
    /// Logits instead of probabilities.
    #[serde(default)]
    raw_scores: bool,
    /// `"chunk"`: a text longer than the model takes is scored window by window, scores averaged.
    #[serde(default)]
    long_text: LongText,
    #[serde(default)]
    split_batch: bool,
}

/// One input's labels, best first; a batch gets a list of these.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PredictResponse {
    One(Vec<ClassificationScore>),
    Batch(Vec<Vec<ClassificationScore>>),
}

pub async fn predict(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let (sequences, batch) = sequences(&request.inputs)?;
    let max = state.config.max_client_batch_size;
    check_batch(sequences.len(), "inputs", max, request.split_batch)?;
    let Some(classifier) = &state.models.classifier else {
        return Err(state.models.missing(Task::Classify));
    };
    let function = if request.raw_scores {
        ScoreFunction::None
    } else {
        classifier.score_function()
    };
    let scoring = Scoring {
        field: "inputs",
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        direction: request.truncation_direction,
        long_text: request.long_text,
    };
    let (logits, windows, _) = logits(&state, sequences, scoring).await?;
    let scores: Vec<Vec<f32>> = logits.iter().map(|row| function.apply(row)).collect();
    let mut ranked: Vec<Vec<ClassificationScore>> = average_windows(scores, &windows)
        .into_iter()
        .map(|scores| classifier.ranked(scores).scores)
        .collect();
    Ok(Json(if batch {
        PredictResponse::Batch(ranked)
    } else {
        PredictResponse::One(ranked.remove(0))
    }))
}

/// `inputs` as text-embeddings-inference reads it: a string; a list of exactly two strings (one
/// pair); or a list of strings and two-string lists (a batch). Also says whether it was a batch.
fn sequences(value: &Value) -> Result<(Vec<Sequence>, bool), ApiError> {
    if let Some(sequence) = as_sequence(value) {
        return Ok((vec![sequence], false));
    }
    match value {
        Value::String(s) => Ok((vec![Sequence::Single(s.clone())], false)),
        Value::Array(items) => {
            let batch = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(Sequence::Single(s.clone())),
                    other => as_sequence(other).ok_or_else(|| {
                        ApiError::validation(format!(
                            "`inputs[{i}]` must be a string, a [text] or a [text, text_pair] list, \
                             not {}",
                            kind(other)
                        ))
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((batch, true))
        }
        Value::Null => Err(ApiError::validation("`inputs` is required")),
        other => Err(ApiError::validation(format!(
            "`inputs` must be a string, a [text, text_pair] list or a list of those, not {}",
            kind(other)
        ))),
    }
}

/// `[text]` or `[text, text_pair]`.
fn as_sequence(value: &Value) -> Option<Sequence> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(a)]) => Some(Sequence::Single(a.clone())),
        Some([Value::String(a), Value::String(b)]) => Some(Sequence::Pair(a.clone(), b.clone())),
        _ => None,
    }
}

/// How a request's sequences are tokenized for the classifier.
#[derive(Clone, Copy)]
struct Scoring {
    /// The request field the sequences came from, for errors.
    field: &'static str,
    truncate: bool,
    direction: Direction,
    long_text: LongText,
}

/// Classifier logits of each sequence (of each window, with `long_text` chunk), the number of
/// windows of each sequence, and the tokens they took.
async fn logits(
    state: &AppState,
    sequences: Vec<Sequence>,
    scoring: Scoring,
) -> Result<(Vec<Vec<f32>>, Vec<usize>, usize), ApiError> {
    if state.models.classifier.is_none() {
        return Err(state.models.missing(Task::Classify));
    }
    let (encodings, windows) = off_runtime(state, move |models: &Models| {
        encode_sequences(models, &sequences, scoring)
    })
    .await?;
    let tokens = encodings.iter().map(|e| e.ids.len()).sum();
    let part = state.config.max_client_batch_size;
    let rows = state
        .worker
        .rows_in_parts(Rows::Logits, encodings, part)
        .await?;
    Ok((rows, windows, tokens))
}

fn encode_sequences(
    models: &Models,
    sequences: &[Sequence],
    scoring: Scoring,
) -> Result<(Vec<Encoding>, Vec<usize>), ApiError> {
    let classifier = (models.classifier.as_ref()).ok_or_else(|| models.missing(Task::Classify))?;
    let pipeline = classifier.pipeline();
    let tokenizer = &pipeline.tokenizer;
    if scoring.long_text == LongText::Chunk {
        let chunker = models.chunker.as_ref().unwrap_or(tokenizer);
        let texts = (sequences.iter().enumerate())
            .map(|(i, sequence)| match sequence {
                Sequence::Single(text) => Ok(text.as_str()),
                Sequence::Pair(..) => Err(ApiError::validation(format!(
                    "`{}[{i}]`: \"long_text\": \"chunk\" takes single texts, not pairs",
                    scoring.field
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return encode_windows(texts, scoring.field, chunker);
    }
    let side = scoring.direction.into();
    let limit = models.max_input_length;
    let encodings = encode_all(
        sequences,
        scoring.field,
        scoring.truncate,
        limit,
        |s| match s {
            Sequence::Single(text) => tokenizer.encode_from(text, side),
            Sequence::Pair(text, pair) => pipeline.encode_pair_from(text, pair, side),
        },
    )?;
    let windows = vec![1; encodings.len()];
    Ok((encodings, windows))
}

#[derive(Deserialize)]
pub struct RerankRequest {
    #[serde(default)]
    query: Value,
    #[serde(default)]
    texts: Value,
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Direction,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
}

#[derive(Serialize)]
pub struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

pub async fn rerank(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RerankRequest>,
) -> Result<Json<Vec<Rank>>, ApiError> {
    let passages = texts(&request.texts, "texts")?;
    let scoring = Scoring {
        field: "texts",
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        direction: request.truncation_direction,
        long_text: LongText::Truncate,
    };
    let (ranked, _) = rank(
        &state,
        &request.query,
        &passages,
        scoring,
        request.raw_scores,
    )
    .await?;
    Ok(Json(
        ranked
            .into_iter()
            .map(|(index, score)| Rank {
                index,
                score,
                text: request.return_text.then(|| passages[index].clone()),
            })
            .collect(),
    ))
}

/// Each passage's index and score against the query by the cross-encoder, best first, and the
/// tokens the pairs took.
async fn rank(
    state: &AppState,
    query: &Value,
    passages: &[String],
    scoring: Scoring,
    raw_scores: bool,
) -> Result<(Vec<(usize, f32)>, usize), ApiError> {
    let Value::String(query) = query else {
        return Err(ApiError::validation(format!(
            "`query` must be a string, not {}",
            kind(query)
        )));
    };
    let max = state.config.max_client_batch_size;
    check_batch(passages.len(), scoring.field, max, false)?;
    if let Some(classifier) = &state.models.classifier {
        let labels = classifier.labels().len();
        if labels != 1 {
            return Err(ApiError::unsupported(format!(
                "reranking needs a cross-encoder with one output; this classifier has {labels} \
                 labels (use /predict)"
            )));
        }
    }
    let sequences = (passages.iter())
        .map(|p| Sequence::Pair(query.clone(), p.clone()))
        .collect();
    let (logits, _, tokens) = logits(state, sequences, scoring).await?;
    let mut ranked: Vec<(usize, f32)> = (logits.iter().enumerate())
        .map(|(index, row)| (index, if raw_scores { row[0] } else { sigmoid(row[0]) }))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((ranked, tokens))
}

/// Cohere's and Jina's rerank request.
#[derive(Deserialize)]
pub struct V1RerankRequest {
    model: Option<String>,
    #[serde(default)]
    query: Value,
    /// Strings, or `{"text": ...}` objects.
    #[serde(default)]
    documents: Value,
    /// Keep the best N (default: all).
    top_n: Option<usize>,
    /// Echo each document in its result (default true, as Jina).
    return_documents: Option<bool>,
    truncate: Option<bool>,
}

#[derive(Serialize)]
pub struct V1RerankResponse {
    model: String,
    results: Vec<V1RerankResult>,
    usage: V1Usage,
}

#[derive(Serialize)]
pub struct V1RerankResult {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Document>,
}

#[derive(Serialize)]
pub struct Document {
    text: String,
}

#[derive(Serialize)]
pub struct V1Usage {
    total_tokens: usize,
}

/// `POST /v1/rerank`: documents ranked against a query, in Cohere's and Jina's shape.
pub async fn v1_rerank(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<V1RerankRequest>,
) -> Result<Json<V1RerankResponse>, ApiError> {
    let documents = documents(&request.documents)?;
    if request.top_n == Some(0) {
        return Err(ApiError::validation("`top_n` must be at least 1"));
    }
    let scoring = Scoring {
        field: "documents",
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        direction: Direction::Right,
        long_text: LongText::Truncate,
    };
    let (mut ranked, total_tokens) =
        rank(&state, &request.query, &documents, scoring, false).await?;
    ranked.truncate(request.top_n.unwrap_or(usize::MAX));
    let echo = request.return_documents.unwrap_or(true);
    let results = (ranked.into_iter())
        .map(|(index, relevance_score)| V1RerankResult {
            index,
            relevance_score,
            document: echo.then(|| Document {
                text: documents[index].clone(),
            }),
        })
        .collect();
    Ok(Json(V1RerankResponse {
        model: request
            .model
            .unwrap_or_else(|| state.config.model_id.clone()),
        results,
        usage: V1Usage { total_tokens },
    }))
}

/// `documents` as strings, from strings or `{"text": ...}` objects.
fn documents(value: &Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return texts(value, "documents");
    };
    (items.iter().enumerate())
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => match o.get("text") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(ApiError::validation(format!(
                    "`documents[{i}]` must be a string or an object with a string `text`"
                ))),
            },
            other => Err(ApiError::validation(format!(
                "`documents[{i}]` must be a string or {{\"text\": ...}}, not {}",
                kind(other)
            ))),
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_read_as_text_embeddings_inference_reads_them() {
        let single = |s: &str| Sequence::Single(s.into());
        let pair = |a: &str, b: &str| Sequence::Pair(a.into(), b.into());
        assert_eq!(sequences(&json!("a")).unwrap(), (vec![single("a")], false));
        assert_eq!(
            sequences(&json!(["a", "b"])).unwrap(),
            (vec![pair("a", "b")], false)
        );
        assert_eq!(
            sequences(&json!(["a", "b", "c"])).unwrap(),
            (vec![single("a"), single("b"), single("c")], true)
        );
        assert_eq!(
            sequences(&json!(["a"])).unwrap(),
            (vec![single("a")], false)
        );
        assert_eq!(
            sequences(&json!([["a"], ["b", "c"]])).unwrap(),
            (vec![single("a"), pair("b", "c")], true)
        );
        assert_eq!(
            sequences(&json!([["a", "b"], "c"])).unwrap(),
            (vec![pair("a", "b"), single("c")], true)
        );
        let error = sequences(&json!(["a", 3, "c"])).unwrap_err();
        assert!(error.message.contains("`inputs[1]`"), "{}", error.message);
        assert!(sequences(&json!({"text": "a"})).is_err());
    }
}
