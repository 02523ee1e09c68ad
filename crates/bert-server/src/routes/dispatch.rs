//! `POST /` and `POST /invocations` (the path SageMaker-style hosts call): the body goes to the route
//! that fits the loaded model, by text-embeddings-inference's rule: a cross-encoder (one output) to
//! `/rerank`, a classifier to `/predict`, a SPLADE server to `/embed_sparse`, an embedding model to
//! `/embed`; beyond it, a server of one other task answers as that task's route.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::input::{parse, JsonBody};
use crate::models::Task;
use crate::routes::{classify, embed, tasks};
use crate::AppState;

/// Answers the body as the route that fits the model would.
pub async fn invoke(State(state): State<AppState>, body: Bytes) -> Response {
    let models = &state.models;
    let cross_encoder = (models.classifier.as_ref()).is_some_and(|c| c.labels().len() == 1);
    let main = models.tasks().first().copied();
    let body = body.as_ref();
    match main {
        Some(Task::Classify) if cross_encoder => call(state, body, classify::rerank).await,
        Some(Task::Classify) => call(state, body, classify::predict).await,
        Some(Task::Embed) => call(state, body, embed::embed).await,
        _ if models.splade => call(state, body, embed::embed_sparse).await,
        Some(Task::FillMask) => call(state, body, tasks::fill_mask).await,
        Some(Task::Ner) => call(state, body, tasks::ner).await,
        Some(Task::Nlu) => call(state, body, tasks::nlu).await,
        Some(Task::Qa) => call(state, body, tasks::qa).await,
        Some(Task::Generate) => call(state, body, tasks::generate).await,
        Some(Task::Search) => call(state, body, tasks::search).await,
        None => ApiError::unsupported("this server has no model loaded").into_response(),
    }
}

/// Parses `body` as `handler`'s request and answers with what it answers.
async fn call<T, R, F>(
    state: AppState,
    body: &[u8],
    handler: impl FnOnce(State<AppState>, JsonBody<T>) -> F,
) -> Response
where
    T: DeserializeOwned,
    R: IntoResponse,
    F: Future<Output = Result<R, ApiError>>,
{
    match parse::<T>(body) {
        Ok(request) => handler(State(state), JsonBody(request))
            .await
            .into_response(),
        Err(error) => error.into_response(),
    }
}
