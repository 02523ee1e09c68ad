//! Errors as the server answers them: a status code and `{"error", "error_type"}`, the shape
//! text-embeddings-inference uses, so that clients of either read them the same way. Every failure a
//! client can cause maps to a 4xx here; 500 is kept for faults of the server itself.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// What kind of failure, as `error_type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is malformed or breaks a limit.
    Validation,
    /// A text could not be tokenized.
    Tokenizer,
    /// Nothing to do: an empty list.
    Empty,
    /// Too many requests in flight.
    Overloaded,
    /// A missing or wrong API key.
    Unauthorized,
    /// The model has no head for this route.
    Unsupported,
    /// No such route or method.
    NotFound,
    /// The request took longer than the server allows.
    Timeout,
    /// The server is shutting down.
    Unhealthy,
    /// The model failed on valid input: a fault of the server.
    Backend,
}

/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    /// A well-formed request with invalid values (422).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Validation,
            message,
        )
    }

    /// A request past a size limit (413).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::Validation,
            message,
        )
    }

    pub fn empty(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::Empty, message)
    }

    pub fn tokenizer(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Tokenizer,
            message,
        )
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::Unsupported, message)
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Backend,
            message,
        )
    }

    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Unhealthy,
            message,
        )
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_type: ErrorType,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            error_type: self.error_type,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Library errors on a client's input are the client's (422); the others are the server's.
impl From<bert::Error> for ApiError {
    fn from(e: bert::Error) -> Self {
        match e {
            bert::Error::InvalidInput(m) => ApiError::validation(m),
            bert::Error::Tokenize(m) => ApiError::tokenizer(m),
            other => ApiError::backend(other.to_string()),
        }
    }
}
