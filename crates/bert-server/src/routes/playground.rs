//! The web playground: `GET /` gives a browser one self-contained page (compiled into the binary,
//! no build step) with a tab for each task the server runs and an attention view; API clients asking
//! `GET /` (without `Accept: text/html`) get the health check, as text-embeddings-inference answers.
//! `POST /attention` gives the page each layer's attention probabilities for one text.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::Command;
use crate::error::ApiError;
use crate::input::{kind, JsonBody};
use crate::routes::{meta, off_runtime};
use crate::AppState;

/// The page, with its styles and script inline.
const PAGE: &str = include_str!("../playground.html");

/// The longest text the attention view takes: `layers x heads x T x T` numbers go back as JSON.
pub const ATTENTION_TOKENS: usize = 128;

/// `GET /`: the playground for a browser, the health check for anything else.
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        return Html(PAGE).into_response();
    }
    meta::health(State(state)).await.into_response()
}

#[derive(Deserialize)]
pub struct AttentionRequest {
    #[serde(default)]
    inputs: Value,
}

#[derive(Serialize)]
pub struct AttentionResponse {
    tokens: Vec<String>,
    layers: usize,
    heads: usize,
    /// `[layer][head][query][key]`; each row sums to 1.
    attentions: Vec<Vec<Vec<Vec<f32>>>>,
}

/// `POST /attention`: one text's tokens and every layer's and head's attention probabilities.
pub async fn attention(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<AttentionRequest>,
) -> Result<Json<AttentionResponse>, ApiError> {
    let Value::String(text) = request.inputs else {
        return Err(ApiError::validation(format!(
            "`inputs` must be one string, not {}",
            kind(&request.inputs)
        )));
    };
    if text.trim().is_empty() {
        return Err(ApiError::empty("`inputs` is empty"));
    }
    if state.models.encoder().is_none() {
        return Err(ApiError::unsupported(format!(
            "the attention view needs a BERT encoder; this server serves {}",
            state.models.routes().join(", ")
        )));
    }
    let encoding = off_runtime(&state, move |models| {
        let encoding = models.encode(&text)?;
        if encoding.ids.len() > ATTENTION_TOKENS || encoding.truncated {
            return Err(ApiError::too_large(format!(
                "`inputs` takes {} tokens; the attention view shows at most {ATTENTION_TOKENS}",
                encoding.ids.len()
            )));
        }
        Ok(encoding)
    })
    .await?;
    let tokens = encoding.tokens.clone();
    let attentions = state
        .worker
        .ask(|reply| Command::Attention { encoding, reply })
        .await?;
    Ok(Json(AttentionResponse {
        tokens,
        layers: attentions.len(),
        heads: attentions.first().map_or(0, Vec::len),
        attentions,
    }))
}

/// `GET /playground` (and `/docs`): the page whatever the client accepts.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
