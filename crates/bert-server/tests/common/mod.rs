//! Helpers the server tests share: load a fixture checkpoint, build the router, call it in process.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use bert_server::{AppState, ModelOptions, Models, ServerConfig, Task};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bert/tests/fixtures")
        .join(name)
}

pub fn models(name: &str, tasks: &[Task]) -> Arc<Models> {
    let options = ModelOptions {
        tasks: tasks.to_vec(),
        ..Default::default()
    };
    Arc::new(Models::load(Some(&fixture(name)), &options).expect("loading a fixture"))
}

/// The router and its state over a fixture checkpoint.
pub fn server(name: &str, tasks: &[Task], config: ServerConfig) -> (Router, AppState) {
    let (state, _thread) = bert_server::start(models(name, tasks), config);
    (bert_server::router(state.clone()), state)
}

pub fn default_server(name: &str) -> Router {
    server(name, &[], ServerConfig::default()).0
}

/// An answer: status and body (JSON if it parses, else a string).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The `error_type` of an error answer.
    pub fn error_type(&self) -> &str {
        self.body["error_type"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {}", self.body))
    }

    pub fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {}", self.body))
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer { status, body }
}

pub async fn post(router: &Router, path: &str, body: impl Into<Body>) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(router, request).await
}

pub async fn post_json(router: &Router, path: &str, body: &Value) -> Answer {
    post(router, path, body.to_string()).await
}

pub async fn get(router: &Router, path: &str) -> Answer {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

/// Rows of floats from a JSON answer.
pub fn matrix(value: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(value.clone()).expect("a list of float lists")
}

pub fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tolerance, "{what}[{i}]: {x} vs {y}");
    }
}

/// The router over the checkpoint in `dir` loaded with `options`.
pub fn server_at(
    dir: &std::path::Path,
    options: ModelOptions,
    config: ServerConfig,
) -> (Router, AppState) {
    let models = Arc::new(Models::load(Some(dir), &options).expect("loading a checkpoint"));
    let (state, _thread) = bert_server::start(models, config);
    (bert_server::router(state.clone()), state)
}

/// A copy of a fixture checkpoint in a fresh temporary directory, with `files` written into it.
pub fn fixture_copy(name: &str, tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-server-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    for (file, contents) in files {
        std::fs::write(dir.join(file), contents).unwrap();
    }
    dir
}

/// A request with `Accept: <accept>`.
pub async fn get_accepting(router: &Router, path: &str, accept: &str) -> Answer {
    let request = Request::get(path)
        .header("accept", accept)
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

/// The bytes of standard base64 text (with or without padding).
pub fn base64_bytes(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let n = (chunk.iter().enumerate())
            .fold(0u32, |n, (i, &c)| n | (u32::from(value(c)) << (18 - 6 * i)));
        bytes.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}
