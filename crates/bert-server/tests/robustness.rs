//! The server under bad input, overload, slow work, concurrency and shutdown: every client mistake is
//! a 4xx with a JSON error, the server keeps answering, batched results equal single ones, and
//! SIGTERM-style shutdown finishes what is in flight.

mod common;

use bert_server::commands::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bert_server::{AppState, ServerConfig, Task, ROUTES};
use common::*;
use serde_json::{json, Value};

/// Occupies the model thread until the returned sender is used (or dropped).
fn block_worker(state: &AppState) -> mpsc::Sender<()> {
    let (release, wait) = mpsc::channel::<()>();
    let (started, has_started) = mpsc::channel();
    let state = state.clone();
    tokio::spawn(async move {
        let _ = state
            .worker
            .ask(|reply| Command::Hold {
                started,
                release: wait,
                reply,
            })
            .await;
    });
    has_started
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker took the blocking job");
    release
}

/// Waits until `/metrics` shows `line`.
async fn wait_for_metric(state: &AppState, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.metrics.render().lines().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "never saw `{line}` in\n{}",
            state.metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_error(answer: &Answer, status: u16, error_type: &str, mentions: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.error_type(), error_type, "{}", answer.body);
    assert!(
        answer.error().contains(mentions),
        "`{}` does not mention `{mentions}`",
        answer.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_errors_and_the_server_keeps_answering() {
    let router = default_server("tiny-base");
    let embed = |body: &'static str| post(&router, "/embed", body);

    assert_error(
        &embed("{\"inputs\": ").await,
        400,
        "validation",
        "not valid JSON",
    );
    assert_error(&embed("").await, 400, "validation", "not valid JSON");
    assert_error(
        &embed("{\"inputs\": \"a\",}").await,
        400,
        "validation",
        "line 1",
    );
    assert_error(
        &embed("{\"inputs\": 3}").await,
        422,
        "validation",
        "a string or a list of strings",
    );
    assert_error(
        &embed("{\"inputs\": [\"a\", null]}").await,
        422,
        "validation",
        "`inputs[1]`",
    );
    assert_error(
        &embed("{\"inputs\": \"a\", \"normalize\": \"yes\"}").await,
        422,
        "validation",
        "normalize",
    );
    assert_error(
        &embed("{\"text\": \"a\"}").await,
        422,
        "validation",
        "`inputs` is required",
    );
    assert_error(&embed("{\"inputs\": []}").await, 400, "empty", "empty");
    assert_error(&embed("[\"a\"]").await, 422, "validation", "expected");

    let many = json!({"inputs": vec!["a"; 10_000]});
    assert_error(
        &post_json(&router, "/embed", &many).await,
        413,
        "validation",
        "10000 items",
    );

    let megabyte = "word ".repeat(200_000);
    let long = json!({"inputs": megabyte});
    assert_error(
        &post_json(&router, "/embed", &long).await,
        413,
        "validation",
        "truncate",
    );
    let truncated = post_json(
        &router,
        "/embed",
        &json!({"inputs": megabyte, "truncate": true}),
    )
    .await;
    assert_eq!(truncated.status, 200, "a 1 MB text, truncated, embeds");
    let huge = json!({"inputs": "word ".repeat(500_000)});
    assert_error(
        &post_json(&router, "/embed", &huge).await,
        413,
        "validation",
        "too large",
    );

    let invalid_utf8 = post(&router, "/embed", b"{\"inputs\": \"\xff\xfe\"}".to_vec()).await;
    assert_error(&invalid_utf8, 400, "validation", "not valid JSON");
    // Control characters and odd text are text: they embed.
    let odd = post_json(
        &router,
        "/embed",
        &json!({"inputs": ["\u{0}\u{7}", "😀 ☃", " "]}),
    )
    .await;
    assert_eq!(odd.status, 200, "{}", odd.body);

    // Without a JSON content type (curl -d sends a form type), the body is still read as JSON.
    let form = Request::post("/embed")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("{\"inputs\": \"a\"}"))
        .unwrap();
    assert_eq!(send(&router, form).await.status, 200);

    assert_error(
        &get(&router, "/nowhere").await,
        404,
        "not_found",
        "/nowhere",
    );
    assert_error(&get(&router, "/embed").await, 405, "not_found", "GET");

    assert_eq!(get(&router, "/health").await.status, 200);
    assert_eq!(
        post_json(&router, "/embed", &json!({"inputs": "still here"}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_routes_check_their_own_fields() {
    let qa = default_server("tiny-qa");
    let ask = async |body: Value| post_json(&qa, "/qa", &body).await;
    assert_error(
        &ask(json!({"context": "c"})).await,
        422,
        "validation",
        "`question` is required",
    );
    assert_error(
        &ask(json!({"question": 1, "context": "c"})).await,
        422,
        "validation",
        "`question` must be a string",
    );
    assert_error(
        &ask(json!({"question": " ", "context": "c"})).await,
        400,
        "empty",
        "`question`",
    );
    assert_error(
        &ask(json!({"question": "q", "context": "c", "top_k": 0})).await,
        422,
        "validation",
        "top_k",
    );
    assert_error(
        &ask(json!({"question": "q", "context": "c", "top_k": u64::MAX})).await,
        422,
        "validation",
        "top_k",
    );
    assert_error(
        &ask(json!({"question": "q", "context": "c", "top_k": -1})).await,
        422,
        "validation",
        "top_k",
    );
    let long_question = ask(json!({"question": "where ".repeat(100), "context": "the sea"})).await;
    assert!(
        long_question.status.is_client_error(),
        "{}",
        long_question.body
    );
    let long = json!({"question": "where", "context": "the sea is far. ".repeat(2000)});
    assert_error(&ask(long).await, 413, "validation", "windows");

    let mlm = default_server("tiny-mlm");
    let fill = json!({"inputs": "a [MASK]", "top_k": 0});
    assert_error(
        &post_json(&mlm, "/fill-mask", &fill).await,
        422,
        "validation",
        "top_k",
    );

    let reranker = default_server("tiny-regression");
    let rerank = json!({"query": ["q"], "texts": ["a"]});
    assert_error(
        &post_json(&reranker, "/rerank", &rerank).await,
        422,
        "validation",
        "`query`",
    );
    let rerank = json!({"query": "q", "texts": []});
    assert_error(
        &post_json(&reranker, "/rerank", &rerank).await,
        400,
        "empty",
        "`texts`",
    );
    let predict = json!({"inputs": [["a", "b", "c"]]});
    assert_error(
        &post_json(&reranker, "/predict", &predict).await,
        422,
        "validation",
        "`inputs[0]`",
    );

    let base = default_server("tiny-base");
    let openai = json!({"input": [1, 2, 3]});
    assert_error(
        &post_json(&base, "/v1/embeddings", &openai).await,
        422,
        "validation",
        "token ids",
    );
    let openai = json!({"input": "a", "encoding_format": "int8"});
    assert_error(
        &post_json(&base, "/v1/embeddings", &openai).await,
        422,
        "validation",
        "encoding_format",
    );
    let openai = json!({"input": "a", "dimensions": 100000});
    assert_error(
        &post_json(&base, "/v1/embeddings", &openai).await,
        422,
        "validation",
        "dimensions",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_every_route_but_health() {
    let config = ServerConfig {
        api_key: Some("sesame".into()),
        ..Default::default()
    };
    let (router, _) = server("tiny-base", &[], config);
    let with = |key: Option<&str>| {
        let mut request = Request::post("/embed");
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        send(
            &router,
            request.body(Body::from("{\"inputs\": \"a\"}")).unwrap(),
        )
    };
    assert_error(&with(None).await, 401, "unauthorized", "Bearer");
    assert_error(
        &with(Some("Bearer wrong")).await,
        401,
        "unauthorized",
        "wrong",
    );
    assert_error(&with(Some("sesame")).await, 401, "unauthorized", "Bearer");
    assert_eq!(with(Some("Bearer sesame")).await.status, 200);
    assert_error(&get(&router, "/info").await, 401, "unauthorized", "Bearer");
    assert_error(
        &get(&router, "/metrics").await,
        401,
        "unauthorized",
        "Bearer",
    );
    assert_eq!(get(&router, "/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_concurrency_cap_get_429() {
    let config = ServerConfig {
        max_concurrent_requests: 1,
        ..Default::default()
    };
    let (router, state) = server("tiny-base", &[], config);
    let release = block_worker(&state);
    let waiting = tokio::spawn({
        let router = router.clone();
        async move {
            post_json(&router, "/embed", &json!({"inputs": "a"}))
                .await
                .status
        }
    });
    wait_for_metric(&state, "bert_requests_in_flight 1").await;
    let refused = post_json(&router, "/embed", &json!({"inputs": "b"})).await;
    assert_error(&refused, 429, "overloaded", "maximum of 1");
    release.send(()).unwrap();
    assert_eq!(waiting.await.unwrap(), 200);
    assert_eq!(
        post_json(&router, "/embed", &json!({"inputs": "c"}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_gets_504_and_its_work_is_dropped() {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (router, state) = server("tiny-base", &[], config);
    let release = block_worker(&state);
    let late = post_json(&router, "/embed", &json!({"inputs": "a"})).await;
    assert_error(&late, 504, "timeout", "longer than");
    release.send(()).unwrap();
    assert_eq!(
        post_json(&router, "/embed", &json!({"inputs": "b"}))
            .await
            .status,
        200
    );
    // Only the second request's pass ran: the timed-out job was dropped unrun.
    assert!(state
        .metrics
        .render()
        .lines()
        .any(|l| l == "bert_batches_total 1"));
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("text number {i} {}", "and more words ".repeat(i % 7)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_share_a_forward_pass_and_get_their_own_results() {
    let (router, state) = server(
        "tiny-classify",
        &[Task::Embed, Task::Classify],
        ServerConfig::default(),
    );
    let texts = texts(8);
    let mut singles = Vec::new();
    for text in &texts {
        singles.push(
            matrix(
                &post_json(&router, "/embed", &json!({"inputs": text}))
                    .await
                    .body,
            )
            .remove(0),
        );
    }
    wait_for_metric(&state, "bert_batches_total 8").await;

    let release = block_worker(&state);
    let mut requests = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let router = router.clone();
        // Embedding and classification jobs interleave in the queue; each kind batches with its own.
        let (path, body) = if i % 2 == 0 {
            ("/embed", json!({"inputs": [text, "a shared second input"]}))
        } else {
            ("/predict", json!({"inputs": text}))
        };
        requests.push(tokio::spawn(async move {
            post_json(&router, path, &body).await
        }));
    }
    wait_for_metric(&state, "bert_queue_depth 8").await;
    release.send(()).unwrap();
    for (i, request) in requests.into_iter().enumerate() {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        if i % 2 == 0 {
            assert_close(
                &matrix(&answer.body)[0],
                &singles[i],
                1e-5,
                "batched vs single",
            );
        }
    }
    // 8 single passes before; then the 8 embedding inputs of 4 requests and the 4 classification
    // inputs share passes (a long input may go in a pass of its own rather than pad short ones).
    wait_for_metric(&state, "bert_batch_inputs_total 20").await;
    let passes = metric(&state, "bert_batches_total") - 8.0;
    assert!(
        (2.0..=4.0).contains(&passes),
        "{passes} passes for 8 requests"
    );
}

/// The value of a counter of `/metrics`.
fn metric(state: &AppState, name: &str) -> f64 {
    let text = state.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_equal_single_requests() {
    let config = ServerConfig {
        max_batch_tokens: 64,
        ..Default::default()
    };
    let (router, _) = server("tiny-base", &[], config);
    let texts = texts(24);
    let mut singles = Vec::new();
    for text in &texts {
        singles.push(
            matrix(
                &post_json(&router, "/embed", &json!({"inputs": text}))
                    .await
                    .body,
            )
            .remove(0),
        );
    }
    let mut requests = Vec::new();
    for round in 0..4 {
        for (i, text) in texts.iter().enumerate() {
            let router = router.clone();
            let body = json!({"inputs": [text, texts[(i + round) % texts.len()]]});
            requests.push((
                i,
                (i + round) % texts.len(),
                tokio::spawn(async move { post_json(&router, "/embed", &body).await }),
            ));
        }
    }
    for (first, second, request) in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        let vectors = matrix(&answer.body);
        assert_close(&vectors[0], &singles[first], 1e-5, "first input");
        assert_close(&vectors[1], &singles[second], 1e-5, "second input");
    }
}

#[test]
fn shutdown_answers_requests_in_flight_and_refuses_new_ones() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (state, model_thread) =
        bert_server::start(models("tiny-base", &[]), ServerConfig::default());
    let router = bert_server::router(state.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(bert_server::serve(listener, router, async {
        let _ = stopped.await;
    }));

    let release = runtime.block_on(async { block_worker(&state) });
    let in_flight = std::thread::spawn({
        let url = url.clone();
        move || {
            ureq::post(&format!("{url}/embed"))
                .send_string("{\"inputs\": \"a\"}")
                .map(|r| r.status())
                .map_err(|e| e.to_string())
        }
    });
    runtime.block_on(wait_for_metric(&state, "bert_requests_in_flight 1"));
    stop.send(()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("{url}/health"))
        .timeout(Duration::from_secs(1))
        .call()
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "new connections still accepted after shutdown began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    release.send(()).unwrap();
    assert_eq!(
        in_flight
            .join()
            .unwrap()
            .expect("the request in flight is answered"),
        200
    );
    runtime.block_on(server).unwrap().unwrap();
    drop(state);
    model_thread
        .join()
        .expect("the model thread ends with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_makes_any_route_answer_5xx() {
    let bodies = [
        "not json",
        "[]",
        "\"text\"",
        "{}",
        r#"{"inputs": null}"#,
        r#"{"inputs": {}}"#,
        r#"{"inputs": [[[]]]}"#,
        r#"{"inputs": [], "texts": [], "query": ""}"#,
        r#"{"inputs": "", "dimensions": 0, "prompt_name": 3}"#,
        r#"{"inputs": "a", "truncation_direction": "Up", "long_text": "all"}"#,
        r#"{"inputs": {"source_sentence": 1, "sentences": "a"}, "parameters": []}"#,
        r#"{"ids": [[4294967296]], "query": "q", "documents": [{}], "top_n": -1}"#,
        r#"{"question": "", "context": "", "top_k": 0}"#,
    ];
    for name in [
        "tiny-base",
        "tiny-classify",
        "tiny-regression",
        "tiny-mlm",
        "tiny-qa",
    ] {
        let router = default_server(name);
        for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "POST") {
            for body in bodies {
                let answer = post(&router, path, body).await;
                assert!(
                    answer.status.is_client_error() || answer.status.is_success(),
                    "{name}: {method} {path} {body} -> {} {}",
                    answer.status,
                    answer.body
                );
            }
        }
    }
}
