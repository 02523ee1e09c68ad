//! BERT over HTTP: embeddings, classification, reranking, NER, QA and fill-mask, with the routes of
//! text-embeddings-inference (`/embed`, `/predict`, `/rerank`, `/tokenize`, `/info`, `/health`,
//! `/metrics`) and OpenAI's `/v1/embeddings`, so that existing clients work unchanged; and `/search`
//! over an index from `bert index`.
//!
//! The model runs on its own thread ([`worker`]), never on the async runtime; handlers parse, check
//! and tokenize, then await the model's reply. Limits ([`ServerConfig`]) turn overload and oversized
//! input into 4xx answers, never a crash.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use bert_server::{ModelOptions, Models, ServerConfig};
//!
//! let models = Models::load(Some("all-MiniLM-L6-v2".as_ref()), &ModelOptions::default()).unwrap();
//! let config = ServerConfig::default();
//! bert_server::run(Arc::new(models), config, "127.0.0.1:8080")
//! # }
//! ```

pub mod commands;
pub mod config;
pub mod error;
mod guard;
pub mod input;
pub mod metrics;
pub mod models;
mod openapi;
pub mod routes;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::ServerConfig;
pub use error::{ApiError, ErrorType};
pub use models::{ModelOptions, Models, Task};

use crate::metrics::Metrics;
use crate::worker::Worker;

/// What every handler shares.
pub struct Shared {
    pub models: Arc<Models>,
    pub worker: Worker,
    pub config: ServerConfig,
    pub metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
}

pub type AppState = Arc<Shared>;

/// Every route, with its method, as `/openapi.json` documents them.
pub const ROUTES: [(&str, &str); 28] = [
    ("POST", "/"),
    ("POST", "/invocations"),
    ("POST", "/embed"),
    ("POST", "/embed_all"),
    ("POST", "/embed_sparse"),
    ("POST", "/similarity"),
    ("POST", "/v1/embeddings"),
    ("POST", "/embeddings"),
    ("POST", "/predict"),
    ("POST", "/rerank"),
    ("POST", "/v1/rerank"),
    ("POST", "/tokenize"),
    ("POST", "/decode"),
    ("POST", "/fill-mask"),
    ("POST", "/generate"),
    ("POST", "/ner"),
    ("POST", "/nlu"),
    ("POST", "/qa"),
    ("POST", "/search"),
    ("POST", "/attention"),
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/ping"),
    ("GET", "/info"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api-doc/openapi.json"),
    ("GET", "/playground"),
];

/// The router over `models`, and the model thread it feeds (it ends once the router and every
/// clone of it are dropped).
pub fn app(models: Arc<Models>, config: ServerConfig) -> (Router, JoinHandle<()>) {
    let (state, thread) = start(models, config);
    (router(state), thread)
}

/// The shared state with its model thread running.
pub fn start(models: Arc<Models>, config: ServerConfig) -> (AppState, JoinHandle<()>) {
    let metrics = Arc::new(Metrics::default());
    let (worker, thread) = Worker::start(
        models.clone(),
        config.max_batch_tokens,
        config.shards,
        metrics.clone(),
    );
    let state = Arc::new(Shared {
        models,
        worker,
        permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
        metrics,
        config,
    });
    (state, thread)
}

/// Every route over `state`, behind the API key, body limit, admission and metrics middleware.
pub fn router(state: AppState) -> Router {
    use routes::{classify, dispatch, embed, meta, openai, playground, tasks};
    let inference = Router::new()
        .route("/", post(dispatch::invoke))
        .route("/invocations", post(dispatch::invoke))
        .route("/embed", post(embed::embed))
        .route("/embed_all", post(embed::embed_all))
        .route("/embed_sparse", post(embed::embed_sparse))
        .route("/similarity", post(embed::similarity))
        .route("/v1/embeddings", post(openai::openai_embeddings))
        .route("/embeddings", post(openai::openai_embeddings))
        .route("/predict", post(classify::predict))
        .route("/rerank", post(classify::rerank))
        .route("/v1/rerank", post(classify::v1_rerank))
        .route("/tokenize", post(meta::tokenize))
        .route("/decode", post(meta::decode))
        .route("/fill-mask", post(tasks::fill_mask))
        .route("/generate", post(tasks::generate))
        .route("/ner", post(tasks::ner))
        .route("/nlu", post(tasks::nlu))
        .route("/qa", post(tasks::qa))
        .route("/search", post(tasks::search))
        .route("/attention", post(playground::attention))
        .route_layer(from_fn_with_state(state.clone(), guard::admit));
    Router::new()
        .merge(inference)
        .route("/", get(playground::root))
        .route("/playground", get(playground::page))
        .route("/health", get(meta::health))
        .route("/ping", get(meta::health))
        .route("/info", get(meta::info))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .route("/api-doc/openapi.json", get(meta::openapi))
        .route_layer(from_fn_with_state(state.clone(), guard::record))
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), guard::authorize))
        .layer(DefaultBodyLimit::max(state.config.payload_limit))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes; requests in flight then finish and new
/// connections are refused.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `models` on `address` until SIGINT or SIGTERM, then finishes the requests in flight and
/// stops the model thread.
pub fn run(models: Arc<Models>, config: ServerConfig, address: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bert-http")
        .build()?;
    let (router, model_thread) = app(models, config);
    runtime.block_on(async {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
        })?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        serve(listener, router, shutdown_signal()).await
    })?;
    eprintln!("shutting down: requests in flight answered");
    let _ = model_thread.join();
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
