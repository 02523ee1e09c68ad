//! `POST /predict` (labels of texts and text pairs) and `POST /rerank` (a cross-encoder scoring
//! passages against a query), shaped as text-embeddings-inference answers them.

use axum::extract::State;
use axum::Json;
use bert::pipelines::{ClassificationScore, ScoreFunction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::input::{check_count, encode_all, kind, texts, JsonBody};
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
    /// Logits instead of probabilities.
    #[serde(default)]
    raw_scores: bool,
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
    check_count(
        sequences.len(),
        "inputs",
        state.config.max_client_batch_size,
    )?;
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let logits = logits(&state, sequences, "inputs", truncate).await?;
    let classifier = state
        .models
        .classifier
        .as_ref()
        .ok_or_else(|| state.models.missing(Task::Classify))?;
    let function = if request.raw_scores {
        ScoreFunction::None
    } else {
        classifier.score_function()
    };
    let mut ranked: Vec<Vec<ClassificationScore>> = logits
        .iter()
        .map(|row| classifier.ranked(function.apply(row)).scores)
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
    if let Some(pair) = as_pair(value) {
        return Ok((vec![pair], false));
    }
    match value {
        Value::String(s) => Ok((vec![Sequence::Single(s.clone())], false)),
        Value::Array(items) => {
            let batch = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(Sequence::Single(s.clone())),
                    other => as_pair(other).ok_or_else(|| {
                        ApiError::validation(format!(
                            "`inputs[{i}]` must be a string or a [text, text_pair] list, not {}",
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

fn as_pair(value: &Value) -> Option<Sequence> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(a), Value::String(b)]) => Some(Sequence::Pair(a.clone(), b.clone())),
        _ => None,
    }
}

/// Classifier logits of each sequence.
async fn logits(
    state: &AppState,
    sequences: Vec<Sequence>,
    field: &'static str,
    truncate: bool,
) -> Result<Vec<Vec<f32>>, ApiError> {
    if state.models.classifier.is_none() {
        return Err(state.models.missing(Task::Classify));
    }
    let encodings = off_runtime(state, move |models: &Models| {
        let classifier = models.classifier.as_ref().expect("checked above");
        encode_all(
            &sequences,
            field,
            truncate,
            models.max_input_length,
            |s| match s {
                Sequence::Single(text) => classifier.encode(text),
                Sequence::Pair(text, pair) => classifier.encode_pair(text, pair),
            },
        )
    })
    .await?;
    state.worker.rows(Rows::Logits, encodings).await
}

#[derive(Deserialize)]
pub struct RerankRequest {
    #[serde(default)]
    query: Value,
    #[serde(default)]
    texts: Value,
    truncate: Option<bool>,
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
    let Value::String(query) = &request.query else {
        return Err(ApiError::validation(format!(
            "`query` must be a string, not {}",
            kind(&request.query)
        )));
    };
    let passages = texts(&request.texts, "texts")?;
    check_count(passages.len(), "texts", state.config.max_client_batch_size)?;
    if let Some(classifier) = &state.models.classifier {
        let labels = classifier.labels().len();
        if labels != 1 {
            return Err(ApiError::unsupported(format!(
                "/rerank needs a cross-encoder with one output; this classifier has {labels} labels \
                 (use /predict)"
            )));
        }
    }
    let sequences = passages
        .iter()
        .map(|p| Sequence::Pair(query.clone(), p.clone()))
        .collect();
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let logits = logits(&state, sequences, "texts", truncate).await?;
    let mut ranks: Vec<Rank> = logits
        .iter()
        .zip(passages)
        .enumerate()
        .map(|(index, (row, text))| Rank {
            index,
            score: if request.raw_scores {
                row[0]
            } else {
                sigmoid(row[0])
            },
            text: request.return_text.then_some(text),
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Json(ranks))
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
        assert_eq!(sequences(&json!(["a"])).unwrap(), (vec![single("a")], true));
        assert_eq!(
            sequences(&json!([["a", "b"], "c"])).unwrap(),
            (vec![pair("a", "b"), single("c")], true)
        );
        let error = sequences(&json!(["a", 3, "c"])).unwrap_err();
        assert!(error.message.contains("`inputs[1]`"), "{}", error.message);
        assert!(sequences(&json!({"text": "a"})).is_err());
    }
}
