//! The server's limits and switches, with the defaults text-embeddings-inference uses where it has
//! one.

use std::time::Duration;

/// How the server admits and batches work.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests handled at once; past this, 429.
    pub max_concurrent_requests: usize,
    /// Tokens (padding included) in one forward pass; the worker fills batches up to this.
    pub max_batch_tokens: usize,
    /// Inputs in one request; past this, 413.
    pub max_client_batch_size: usize,
    /// Bytes in one request body; past this, 413.
    pub payload_limit: usize,
    /// Time one request may take, queueing included; past this, 504.
    pub request_timeout: Duration,
    /// Requests must carry `Authorization: Bearer <key>` (all routes but `/health`).
    pub api_key: Option<String>,
    /// Truncate over-long inputs when a request does not say (`truncate` defaults to this).
    pub auto_truncate: bool,
    /// The name `/info` and `/v1/embeddings` report.
    pub model_id: String,
    /// Forward passes run at once, each on one thread, when batched requests make several (1: one
    /// pass at a time on every thread).
    pub shards: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent_requests: 512,
            max_batch_tokens: 16_384,
            max_client_batch_size: 32,
            payload_limit: 2_000_000,
            request_timeout: Duration::from_secs(60),
            api_key: None,
            auto_truncate: false,
            model_id: String::new(),
            shards: 1,
        }
    }
}
