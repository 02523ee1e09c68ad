//! Middleware in front of the handlers: the API key, the cap on requests in flight with the
//! per-request timeout, and the request counters.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorType};
use crate::AppState;

/// Refuses a request without `Authorization: Bearer <key>` when the server has a key; the health
/// checks (`GET /health`, `/ping`, `/`) stay open for load balancers, and the playground page for
/// browsers (it asks for the key before calling the API).
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    let public = ["/health", "/ping", "/", "/playground"];
    if request.method() == Method::GET && public.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), key.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("wrong API key"),
        None => unauthorized("this server needs an API key: send `Authorization: Bearer <key>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::Unauthorized, message).into_response()
}

/// Compares keys in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Admits a request if fewer than `max_concurrent_requests` are in flight (else 429) and gives it
/// `request_timeout` (else 504; its queued model work is then dropped unrun).
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Overloaded,
            format!(
                "the server is handling its maximum of {} requests; retry later",
                state.config.max_concurrent_requests
            ),
        )
        .into_response();
    };
    state.metrics.in_flight(1);
    let answer = tokio::time::timeout(state.config.request_timeout, next.run(request)).await;
    state.metrics.in_flight(-1);
    drop(permit);
    answer.unwrap_or_else(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::Timeout,
            format!(
                "the request took longer than the server's limit of {:?}",
                state.config.request_timeout
            ),
        )
        .into_response()
    })
}

/// Counts each answered request by route and status, with its latency.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request(&route, response.status().as_u16(), started.elapsed());
    response
}

pub async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::NotFound,
        format!(
            "no route {}; GET /openapi.json lists them",
            request.uri().path()
        ),
    )
}

pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorType::NotFound,
        format!(
            "{} does not take {}",
            request.uri().path(),
            request.method()
        ),
    )
}
