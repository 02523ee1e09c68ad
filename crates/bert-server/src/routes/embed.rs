//! `POST /embed` (text-embeddings-inference) and `POST /v1/embeddings` (OpenAI): sentence vectors.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use bert::pooling::normalize;

use crate::error::ApiError;
use crate::input::{check_count, encode_all, texts, JsonBody};
use crate::models::Task;
use crate::routes::off_runtime;
use crate::worker::Rows;
use crate::AppState;

#[derive(Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    inputs: Value,
    /// Unit length (default true, as text-embeddings-inference).
    normalize: Option<bool>,
    /// Cut inputs longer than the model takes instead of refusing them.
    truncate: Option<bool>,
}

pub async fn embed(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<EmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let texts = texts(&request.inputs, "inputs")?;
    let truncate = request.truncate.unwrap_or(state.config.auto_truncate);
    let (mut vectors, _) = embeddings(&state, texts, "inputs", truncate).await?;
    if request.normalize.unwrap_or(true) {
        vectors.iter_mut().for_each(|v| normalize(v));
    }
    Ok(Json(vectors))
}

#[derive(Deserialize)]
pub struct OpenAiRequest {
    #[serde(default)]
    input: Value,
    model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    encoding_format: Option<String>,
    /// Keep the first N dimensions (then renormalise).
    dimensions: Option<usize>,
}

#[derive(Serialize)]
pub struct OpenAiResponse {
    object: &'static str,
    data: Vec<OpenAiEmbedding>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
pub struct OpenAiEmbedding {
    object: &'static str,
    embedding: Value,
    index: usize,
}

#[derive(Serialize)]
pub struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

pub async fn openai_embeddings(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<OpenAiRequest>,
) -> Result<Json<OpenAiResponse>, ApiError> {
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "`encoding_format` must be \"float\" or \"base64\", not \"{other}\""
            )))
        }
    };
    if matches!(&request.input, Value::Array(items) if items.iter().any(Value::is_number)) {
        return Err(ApiError::validation(
            "`input` as token ids is not supported: send text",
        ));
    }
    let texts = texts(&request.input, "input")?;
    let (mut vectors, tokens) =
        embeddings(&state, texts, "input", state.config.auto_truncate).await?;
    for v in &mut vectors {
        if let Some(d) = request.dimensions {
            if d == 0 || d > v.len() {
                return Err(ApiError::validation(format!(
                    "`dimensions` must be between 1 and {}, not {d}",
                    v.len()
                )));
            }
            v.truncate(d);
        }
        normalize(v);
    }
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            embedding: if base64 {
                Value::String(to_base64(&v))
            } else {
                Value::from(v)
            },
            index,
        })
        .collect();
    Ok(Json(OpenAiResponse {
        object: "list",
        data,
        model: request
            .model
            .unwrap_or_else(|| state.config.model_id.clone()),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// Pooled, unnormalised vectors of `texts` and the number of tokens they took.
async fn embeddings(
    state: &AppState,
    texts: Vec<String>,
    field: &'static str,
    truncate: bool,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    check_count(texts.len(), field, state.config.max_client_batch_size)?;
    if state.models.embedder.is_none() {
        return Err(state.models.missing(Task::Embed));
    }
    let encodings = off_runtime(state, move |models| {
        let embedder = models
            .embedder
            .as_ref()
            .ok_or_else(|| models.missing(Task::Embed))?;
        encode_all(&texts, field, truncate, models.max_input_length, |t| {
            embedder.encode(t)
        })
    })
    .await?;
    let tokens = encodings.iter().map(|e| e.ids.len()).sum();
    let vectors = state.worker.rows(Rows::Embeddings, encodings).await?;
    Ok((vectors, tokens))
}

/// Standard base64 (with padding) of the vector's little-endian bytes, as OpenAI sends them.
fn to_base64(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3F; 2.0 = 00 00 00 40 (python: base64.b64encode(struct.pack('<f', x))).
        assert_eq!(to_base64(&[1.0]), "AACAPw==");
        assert_eq!(to_base64(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(to_base64(&[1.0, 2.0, 1.0]), "AACAPwAAAEAAAIA/");
    }
}
