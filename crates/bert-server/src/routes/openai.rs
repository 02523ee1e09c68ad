//! `POST /v1/embeddings` (and `/embeddings`, as text-embeddings-inference also names it): OpenAI's
//! embeddings API, so that OpenAI's client libraries work unchanged.

use axum::extract::State;
use axum::Json;
use bert::pooling::normalize;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::input::{texts, JsonBody};
use crate::routes::embed::{embeddings, keep_dimensions, EmbedInput};
use crate::AppState;

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
    let input = EmbedInput::new(&state, texts, "input");
    let (mut vectors, tokens) = embeddings(&state, input).await?;
    if let Some(d) = request.dimensions {
        keep_dimensions(&mut vectors, d)?;
    }
    vectors.iter_mut().for_each(|v| normalize(v));
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
