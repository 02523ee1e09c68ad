//! Reading request bodies: JSON parsed whatever the content type says (curl's `-d` sends a form
//! type), with errors that name the field and say what was expected, and the checks every inference
//! route shares (list size, input length).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bert::{Encoding, Tokenizer, TruncationSide};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ErrorType};

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the request body is too large: {}",
                    rejection.body_text()
                ))
            } else {
                ApiError::new(status, ErrorType::Validation, rejection.body_text())
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a body: a syntax error (or bytes that are not UTF-8) is 400, a well-formed body of the
/// wrong shape 422.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::Validation,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match e.path().to_string() {
            path if path == "." => String::new(),
            path => format!("`{path}`: "),
        };
        ApiError::validation(format!(
            "the request body does not have the expected fields: {field}{}",
            e.into_inner()
        ))
    })
}

/// `"text"` or `["text", ...]`; `field` names the field in errors.
pub fn texts(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::validation(format!(
                    "`{field}[{i}]` must be a string, not {}",
                    kind(other)
                ))),
            })
            .collect(),
        Value::Null => Err(ApiError::validation(format!("`{field}` is required"))),
        other => Err(ApiError::validation(format!(
            "`{field}` must be a string or a list of strings, not {}",
            kind(other)
        ))),
    }
}

/// A JSON value's type, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Refuses an empty list or one longer than the server takes.
pub fn check_count(count: usize, field: &str, max: usize) -> Result<(), ApiError> {
    check_batch(count, field, max, false)
}

/// [`check_count`], except that a request that says `"split_batch": true` may send more than `max`
/// (the server then runs them in parts of `max`).
pub fn check_batch(count: usize, field: &str, max: usize, split: bool) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::empty(format!("`{field}` is empty")));
    }
    if count > max && !split {
        return Err(ApiError::too_large(format!(
            "`{field}` has {count} items; this server takes at most {max} per request \
             (--max-client-batch-size), or send \"split_batch\": true to have it split"
        )));
    }
    Ok(())
}

/// Which end of a too-long input loses tokens: text-embeddings-inference's `truncation_direction`,
/// `"Right"` (default) or `"Left"`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub enum Direction {
    #[default]
    #[serde(alias = "right")]
    Right,
    #[serde(alias = "left")]
    Left,
}

impl From<Direction> for TruncationSide {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Right => TruncationSide::Right,
            Direction::Left => TruncationSide::Left,
        }
    }
}

/// What to do with a text longer than the model takes: `"truncate"` (or refuse it, as `truncate`
/// says) or `"chunk"` it into windows whose results are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongText {
    #[default]
    Truncate,
    Chunk,
}

/// `prompt + text` for each text.
pub fn with_prompt(texts: Vec<String>, prompt: Option<&str>) -> Vec<String> {
    match prompt {
        Some(prompt) if !prompt.is_empty() => {
            texts.into_iter().map(|t| format!("{prompt}{t}")).collect()
        }
        _ => texts,
    }
}

/// Tokenizes each input with `encode`; one longer than the model takes is an error unless
/// `truncate`.
pub fn encode_all<I>(
    inputs: &[I],
    field: &str,
    truncate: bool,
    max_length: usize,
    encode: impl Fn(&I) -> bert::Result<Encoding>,
) -> Result<Vec<Encoding>, ApiError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let encoding = encode(input).map_err(|e| at(ApiError::from(e), field, i))?;
            if encoding.truncated && !truncate {
                return Err(ApiError::too_large(format!(
                    "`{field}[{i}]` is longer than this server's maximum input length of \
                     {max_length} tokens; send \"truncate\": true to cut it"
                )));
            }
            Ok(encoding)
        })
        .collect()
}

/// Each text cut into windows by `chunker` (a tokenizer with windows), and how many windows each took.
pub fn encode_windows<'t>(
    texts: impl IntoIterator<Item = &'t str>,
    field: &str,
    chunker: &Tokenizer,
) -> Result<(Vec<Encoding>, Vec<usize>), ApiError> {
    let mut encodings = Vec::new();
    let mut windows = Vec::new();
    for (i, text) in texts.into_iter().enumerate() {
        let w = (chunker.encode_windows(text)).map_err(|e| at(ApiError::from(e), field, i))?;
        windows.push(w.len());
        encodings.extend(w);
    }
    Ok((encodings, windows))
}

/// The mean of each input's window rows (`windows[i]` consecutive rows per input).
pub fn average_windows(rows: Vec<Vec<f32>>, windows: &[usize]) -> Vec<Vec<f32>> {
    if windows.iter().all(|&n| n == 1) {
        return rows;
    }
    let mut rest = rows.as_slice();
    windows
        .iter()
        .map(|&n| {
            let (mine, others) = rest.split_at(n);
            rest = others;
            bert::pipelines::mean(mine)
        })
        .collect()
}

/// Names the input an error came from.
fn at(mut error: ApiError, field: &str, i: usize) -> ApiError {
    error.message = format!("`{field}[{i}]`: {}", error.message);
    error
}
