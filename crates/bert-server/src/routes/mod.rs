//! The handlers, one module per family of routes. Each parses and checks its request, tokenizes off
//! the async runtime, hands the model work to the [`Worker`](crate::worker::Worker) and shapes the
//! answer.

pub mod classify;
pub mod dispatch;
pub mod embed;
pub mod meta;
pub mod openai;
pub mod playground;
pub mod tasks;

use std::sync::Arc;

use crate::error::ApiError;
use crate::models::Models;
use crate::AppState;

/// Runs CPU work that is not the model's (tokenization) on tokio's blocking pool.
pub async fn off_runtime<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Models) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let models: Arc<Models> = state.models.clone();
    tokio::task::spawn_blocking(move || work(&models))
        .await
        .unwrap_or_else(|_| Err(ApiError::backend("tokenization failed unexpectedly")))
}
