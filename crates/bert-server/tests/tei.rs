//! text-embeddings-inference's API beyond the main routes, with request bodies from its API docs:
//! `POST /` and `/invocations` by model type, `GET /` and `/ping`, `/embed_all`, `/embed_sparse`,
//! `/similarity`, `/decode`, `/embeddings`, and the request fields `dimensions`, `prompt_name`,
//! `truncation_direction`, `raw_scores` (sigmoid for multi-label models); and what its users ask for
//! beyond it: `/v1/rerank`, `"long_text": "chunk"`, `"split_batch": true`, `/attention`. Each answer
//! is checked against the library (itself checked against transformers) or the fixtures
//! `scripts/make_fixtures.py` wrote.

mod common;

use bert::pipelines::{EmbedOptions, Embedder, LongText, PipelineOptions, TextClassifier};
use bert::TruncationSide;
use bert_server::models::ServedPooling;
use bert_server::{ModelOptions, ServerConfig};
use common::*;
use serde_json::{json, Value};

const TEXTS: [&str; 3] = [
    "the sea is calm tonight",
    "a good movie",
    "hello world, again and again",
];

const LONG: &str = "the people of the north country wrote the story while the sun was hot and \
    the sea was far from the farm . each day they saw the city and the school , and each night \
    they thought of the long road to paris and the capital of france .";

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    bert::pooling::normalize(&mut v);
    v
}

fn serving() -> Value {
    let text = std::fs::read_to_string(fixture("serving.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    serde_json::from_value(value.clone()).expect("a list of floats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_url_answers_as_the_route_that_fits_the_model() {
    // An embedding model: /embed (TEI's docs: {"inputs": "What is Deep Learning?"}).
    let embedder = default_server("tiny-base");
    let body = json!({"inputs": "What is Deep Learning?"});
    let embedded = post_json(&embedder, "/embed", &body).await;
    for path in ["/", "/invocations"] {
        let answer = post_json(&embedder, path, &body).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.body, embedded.body, "{path}");
    }
    // A classifier: /predict; a cross-encoder: /rerank.
    let classifier = default_server("tiny-classify");
    let body = json!({"inputs": "I like you."});
    let predicted = post_json(&classifier, "/predict", &body).await;
    assert_eq!(
        post_json(&classifier, "/", &body).await.body,
        predicted.body
    );
    let reranker = default_server("tiny-regression");
    let body = json!({"query": "What is Deep Learning?", "texts": ["Deep Learning is not...", "Deep learning is..."]});
    let ranked = post_json(&reranker, "/rerank", &body).await;
    assert_eq!(ranked.status, 200, "{}", ranked.body);
    assert_eq!(
        post_json(&reranker, "/invocations", &body).await.body,
        ranked.body
    );
    // SPLADE: /embed_sparse.
    let splade = splade_server();
    let body = json!({"inputs": "I like you."});
    let sparse = post_json(&splade, "/embed_sparse", &body).await;
    assert_eq!(sparse.status, 200, "{}", sparse.body);
    assert_eq!(post_json(&splade, "/", &body).await.body, sparse.body);
    // Another task: its own route; a wrong body: the route's own error.
    let tagger = default_server("tiny-ner");
    let body = json!({"inputs": "George lived in Virginia"});
    assert_eq!(
        post_json(&tagger, "/", &body).await.body,
        post_json(&tagger, "/ner", &body).await.body
    );
    let wrong = post_json(&embedder, "/", &json!({"inputs": 3})).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.error().contains("`inputs`"), "{}", wrong.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_root_is_the_health_check_for_clients_and_the_playground_for_browsers() {
    let (router, _) = server(
        "tiny-base",
        &[],
        ServerConfig {
            api_key: Some("secret".into()),
            ..Default::default()
        },
    );
    for path in ["/", "/ping", "/health"] {
        let answer = get(&router, path).await;
        assert_eq!(answer.status, 200, "{path} needs no key: {}", answer.body);
    }
    let page = get_accepting(&router, "/", "text/html,application/xhtml+xml").await;
    assert_eq!(page.status, 200);
    let html = page.body.as_str().expect("a page");
    assert!(html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"));
    assert!(html.contains("id=\"tablist\""), "the page has its tabs");
    // The API behind the page still needs the key.
    assert_eq!(get(&router, "/info").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_all_gives_every_tokens_state_as_transformers() {
    let router = default_server("tiny-base");
    let reference = serving();
    let answer = post_json(
        &router,
        "/embed_all",
        &json!({"inputs": reference["texts"]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let inputs = answer.body.as_array().unwrap();
    assert_eq!(inputs.len(), 3);
    for (i, tokens) in inputs.iter().enumerate() {
        let rows: Vec<Vec<f32>> = serde_json::from_value(tokens.clone()).unwrap();
        let expected = floats(&reference["last_hidden_state"][i]);
        assert_eq!(
            rows.concat().len(),
            expected.len(),
            "text {i}: one vector per token, specials included"
        );
        assert_close(&rows.concat(), &expected, 1e-4, "last_hidden_state");
    }
    // One string: still a list of inputs.
    let one = post_json(&router, "/embed_all", &json!({"inputs": TEXTS[0]})).await;
    assert_eq!(one.body.as_array().unwrap().len(), 1);
}

fn splade_server() -> axum::Router {
    let options = ModelOptions {
        pooling: Some(ServedPooling::Splade),
        ..Default::default()
    };
    server_at(&fixture("tiny-mlm"), options, ServerConfig::default()).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_sparse_gives_splade_vectors_and_says_when_there_is_no_masked_lm_head() {
    let reference = serving();
    let splade = splade_server();
    let answer = post_json(
        &splade,
        "/embed_sparse",
        &json!({"inputs": reference["texts"]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (i, vector) in answer.body.as_array().unwrap().iter().enumerate() {
        let expected = reference["splade"][i].as_array().unwrap();
        let entries = vector.as_array().unwrap();
        assert_eq!(entries.len(), expected.len(), "text {i}: non-zero entries");
        for (got, want) in entries.iter().zip(expected) {
            assert_eq!(got["index"], want[0]);
            let (g, w) = (got["value"].as_f64().unwrap(), want[1].as_f64().unwrap());
            assert!((g - w).abs() < 1e-4, "text {i}: {g} vs {w}");
        }
    }
    // /embed on a SPLADE server: the same vector written out in full.
    let dense = post_json(
        &splade,
        "/embed",
        &json!({"inputs": TEXTS[0], "normalize": false}),
    )
    .await;
    let dense = &matrix(&dense.body)[0];
    let sparse = post_json(&splade, "/embed_sparse", &json!({"inputs": TEXTS[0]})).await;
    for entry in sparse.body[0].as_array().unwrap() {
        let index = entry["index"].as_u64().unwrap() as usize;
        assert!((dense[index] - entry["value"].as_f64().unwrap() as f32).abs() < 1e-6);
    }
    let info = get(&splade, "/info").await.body;
    assert_eq!(
        info["model_type"],
        json!({"embedding": {"pooling": "splade"}})
    );
    let error = bert_server::Models::load(
        Some(&fixture("tiny-base")),
        &ModelOptions {
            pooling: Some(ServedPooling::Splade),
            ..Default::default()
        },
    )
    .err()
    .expect("no masked-LM head")
    .to_string();
    assert!(error.contains("masked-LM"), "{error}");
    // A masked-LM checkpoint served as it comes (embed, fill-mask) has the head too.
    let mlm = default_server("tiny-mlm");
    assert_eq!(
        post_json(&mlm, "/embed_sparse", &json!({"inputs": "a"}))
            .await
            .status,
        200
    );

    let base = default_server("tiny-base");
    let answer = post_json(&base, "/embed_sparse", &json!({"inputs": "a"})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_type(), "unsupported");
    assert!(
        answer.error().contains("masked-LM") && answer.error().contains("/embed"),
        "{}",
        answer.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similarity_is_the_cosine_of_the_sentence_vectors() {
    let router = default_server("tiny-base");
    let body = json!({"inputs": {"source_sentence": "What is Deep Learning?",
        "sentences": ["What is Machine Learning?", TEXTS[1]]}});
    let answer = post_json(&router, "/similarity", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let scores = floats(&answer.body);
    let vectors = matrix(
        &post_json(
            &router,
            "/embed",
            &json!({"inputs": ["What is Deep Learning?", "What is Machine Learning?", TEXTS[1]]}),
        )
        .await
        .body,
    );
    for (i, score) in scores.iter().enumerate() {
        let dot: f32 = vectors[0]
            .iter()
            .zip(&vectors[i + 1])
            .map(|(a, b)| a * b)
            .sum();
        assert!((score - dot).abs() < 1e-5, "{score} vs {dot}");
    }
    for (body, field) in [
        (json!({"inputs": ["a", "b"]}), "`inputs`"),
        (json!({"inputs": {"sentences": ["a"]}}), "source_sentence"),
        (
            json!({"inputs": {"source_sentence": "a", "sentences": [1]}}),
            "`inputs.sentences[0]`",
        ),
    ] {
        let answer = post_json(&router, "/similarity", &body).await;
        assert_eq!(answer.status, 422, "{body}");
        assert!(answer.error().contains(field), "{}", answer.error());
    }
    let empty = json!({"inputs": {"source_sentence": "a", "sentences": []}});
    assert_eq!(post_json(&router, "/similarity", &empty).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_turns_token_ids_back_into_text() {
    let router = default_server("tiny-base");
    let tokens = post_json(&router, "/tokenize", &json!({"inputs": TEXTS[0]})).await;
    let ids: Vec<u64> = (tokens.body[0].as_array().unwrap().iter())
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let answer = post_json(
        &router,
        "/decode",
        &json!({"ids": ids, "skip_special_tokens": true}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, json!([TEXTS[0]]));
    let kept = post_json(
        &router,
        "/decode",
        &json!({"ids": [ids.clone(), ids], "skip_special_tokens": false}),
    )
    .await;
    let kept = kept.body.as_array().unwrap();
    assert_eq!(kept.len(), 2);
    assert!(
        kept[0].as_str().unwrap().starts_with("[CLS]"),
        "{}",
        kept[0]
    );
    for (body, status, field) in [
        (json!({"ids": []}), 400, "`ids`"),
        (json!({"ids": [1, "a"]}), 422, "`ids[1]`"),
        (json!({"ids": [[1], [99999999]]}), 422, "`ids[1]`"),
        (json!({"ids": "1 2"}), 422, "`ids`"),
    ] {
        let answer = post_json(&router, "/decode", &body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.error().contains(field), "{}", answer.error());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_is_the_openai_route_by_its_other_name() {
    let router = default_server("tiny-base");
    let body = json!({"input": "What is Deep Learning?", "model": "text-embeddings-inference", "encoding_format": "float"});
    let v1 = post_json(&router, "/v1/embeddings", &body).await;
    let alias = post_json(&router, "/embeddings", &body).await;
    assert_eq!(alias.status, 200, "{}", alias.body);
    assert_eq!(alias.body, v1.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimensions_keep_the_first_values_then_normalise() {
    let router = default_server("tiny-base");
    let raw = matrix(
        &post_json(
            &router,
            "/embed",
            &json!({"inputs": TEXTS, "normalize": false}),
        )
        .await
        .body,
    );
    let size = raw[0].len();
    for path in ["/embed", "/v1/embeddings"] {
        let body = match path {
            "/embed" => json!({"inputs": TEXTS, "dimensions": 8}),
            _ => json!({"input": TEXTS, "dimensions": 8}),
        };
        let answer = post_json(&router, path, &body).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let got = match path {
            "/embed" => matrix(&answer.body),
            _ => (answer.body["data"].as_array().unwrap().iter())
                .map(|d| floats(&d["embedding"]))
                .collect(),
        };
        for (g, r) in got.iter().zip(&raw) {
            assert_close(g, &unit(r[..8].to_vec()), 1e-5, path);
        }
        for d in [0, size + 1] {
            let mut body = body.clone();
            body["dimensions"] = json!(d);
            let answer = post_json(&router, path, &body).await;
            assert_eq!(answer.status, 422, "{path} dimensions {d}");
            assert!(
                answer.error().contains("`dimensions`")
                    && answer.error().contains(&size.to_string())
            );
        }
    }
    // Unnormalised: the first values as they are.
    let cut = post_json(
        &router,
        "/embed",
        &json!({"inputs": TEXTS[0], "dimensions": 4, "normalize": false}),
    )
    .await;
    assert_close(
        &matrix(&cut.body)[0],
        &raw[0][..4],
        1e-6,
        "unnormalised cut",
    );
}

const PROMPTS: &str = r#"{"prompts": {"query": "query: ", "passage": "passage: "}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_come_before_the_text_by_name_or_by_default() {
    let dir = fixture_copy(
        "tiny-base",
        "prompts",
        &[("config_sentence_transformers.json", PROMPTS)],
    );
    let (router, _) = server_at(&dir, ModelOptions::default(), ServerConfig::default());
    let prompted = post_json(
        &router,
        "/embed",
        &json!({"inputs": TEXTS[0], "prompt_name": "query"}),
    )
    .await;
    assert_eq!(prompted.status, 200, "{}", prompted.body);
    let by_hand = post_json(
        &router,
        "/embed",
        &json!({"inputs": format!("query: {}", TEXTS[0])}),
    )
    .await;
    assert_eq!(prompted.body, by_hand.body);
    let plain = post_json(&router, "/embed", &json!({"inputs": TEXTS[0]})).await;
    assert_ne!(prompted.body, plain.body);
    let tokens = post_json(
        &router,
        "/tokenize",
        &json!({"inputs": "sea", "prompt_name": "query"}),
    )
    .await;
    // Offsets are into the prompted text: "sea" starts after "query: ".
    let last = &tokens.body[0]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .nth(1)
        .unwrap()
        .clone();
    assert_eq!(
        (last["text"].as_str(), last["start"].as_u64()),
        (Some("sea"), Some(7)),
        "{}",
        tokens.body
    );

    let unknown = post_json(
        &router,
        "/embed",
        &json!({"inputs": "a", "prompt_name": "document"}),
    )
    .await;
    assert_eq!(unknown.status, 422);
    let message = unknown.error();
    assert!(
        message.contains("`document`")
            && message.contains("`passage`")
            && message.contains("`query`"),
        "{message}"
    );

    // --default-prompt-name: requests without a prompt_name get it.
    let options = ModelOptions {
        default_prompt_name: Some("query".into()),
        ..Default::default()
    };
    let (defaulted, _) = server_at(&dir, options, ServerConfig::default());
    let answer = post_json(&defaulted, "/embed", &json!({"inputs": TEXTS[0]})).await;
    assert_eq!(answer.body, by_hand.body);
    let options = ModelOptions {
        default_prompt_name: Some("nope".into()),
        ..Default::default()
    };
    let error = bert_server::Models::load(Some(&dir), &options)
        .err()
        .expect("an unknown default")
        .to_string();
    assert!(
        error.contains("nope") && error.contains("`query`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_direction_left_keeps_the_end_of_the_text() {
    let options = ModelOptions {
        max_input_length: Some(8),
        ..Default::default()
    };
    let (router, _) = server_at(&fixture("tiny-base"), options, ServerConfig::default());
    let embedder = Embedder::load(
        &fixture("tiny-base"),
        &EmbedOptions {
            pipeline: PipelineOptions {
                max_length: Some(8),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let tokenizer = &embedder.pipeline().tokenizer;
    let left = tokenizer.encode_from(LONG, TruncationSide::Left).unwrap();
    let right = tokenizer.encode_from(LONG, TruncationSide::Right).unwrap();
    for (direction, encoding) in [("Left", &left), ("left", &left), ("Right", &right)] {
        let body = json!({"inputs": LONG, "truncate": true, "truncation_direction": direction, "normalize": false});
        let answer = post_json(&router, "/embed", &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let expected = embedder
            .pooled(std::slice::from_ref(encoding), false)
            .unwrap();
        assert_close(&matrix(&answer.body)[0], &expected[0], 1e-5, direction);
    }
    let wrong = json!({"inputs": LONG, "truncate": true, "truncation_direction": "LEFT"});
    let answer = post_json(&router, "/embed", &wrong).await;
    assert_eq!(answer.status, 422);
    assert!(
        answer.error().contains("truncation_direction"),
        "{}",
        answer.error()
    );
    let refused = post_json(
        &router,
        "/embed",
        &json!({"inputs": LONG, "truncate": false}),
    )
    .await;
    assert_eq!(refused.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_label_classifier_answers_a_sigmoid_per_label() {
    let router = default_server("tiny-multilabel");
    let answer = post_json(&router, "/predict", &json!({"inputs": TEXTS[0]})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let raw = post_json(
        &router,
        "/predict",
        &json!({"inputs": TEXTS[0], "raw_scores": true}),
    )
    .await;
    let scores = answer.body.as_array().unwrap();
    let total: f64 = scores.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() > 1e-3, "not a softmax: {total}");
    for score in scores {
        let logit = (raw.body.as_array().unwrap().iter())
            .find(|r| r["label"] == score["label"])
            .unwrap()["score"]
            .as_f64()
            .unwrap();
        let sigmoid = 1.0 / (1.0 + (-logit).exp());
        assert!((score["score"].as_f64().unwrap() - sigmoid).abs() < 1e-5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored_and_one_element_lists_are_single_texts() {
    let router = default_server("tiny-classify");
    let body = json!({"inputs": "I like you.", "model": "x", "parameters": {"a": 1}, "user": "me"});
    assert_eq!(post_json(&router, "/predict", &body).await.status, 200);
    // TEI's docs: {"inputs": [["I like you."], ["I hate pineapples"]]} is a batch of two texts.
    let batch = json!({"inputs": [["I like you."], ["I hate pineapples"]]});
    let answer = post_json(&router, "/predict", &batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let single = post_json(&router, "/predict", &json!({"inputs": "I like you."})).await;
    for (b, s) in answer.body[0]
        .as_array()
        .unwrap()
        .iter()
        .zip(single.body.as_array().unwrap())
    {
        assert_eq!(b["label"], s["label"]);
        assert!((b["score"].as_f64().unwrap() - s["score"].as_f64().unwrap()).abs() < 1e-5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_rerank_answers_in_cohere_and_jina_shape() {
    let router = default_server("tiny-regression");
    let query = "where is the sea";
    let tei = post_json(&router, "/rerank", &json!({"query": query, "texts": TEXTS})).await;
    let body = json!({"model": "reranker", "query": query, "documents": TEXTS, "top_n": 2});
    let answer = post_json(&router, "/v1/rerank", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["model"], "reranker");
    let results = answer.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "top_n");
    for (result, rank) in results.iter().zip(tei.body.as_array().unwrap()) {
        assert_eq!(result["index"], rank["index"]);
        assert_eq!(result["relevance_score"], rank["score"]);
        let index = result["index"].as_u64().unwrap() as usize;
        assert_eq!(result["document"]["text"], TEXTS[index]);
    }
    assert!(answer.body["usage"]["total_tokens"].as_u64().unwrap() > 3);
    let objects = json!({"query": query, "documents": [{"text": TEXTS[0]}, {"text": TEXTS[1]}], "return_documents": false});
    let answer = post_json(&router, "/v1/rerank", &objects).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["results"][0].get("document").is_none());
    for (body, field) in [
        (json!({"query": query, "documents": [1]}), "`documents[0]`"),
        (
            json!({"query": query, "documents": TEXTS, "top_n": 0}),
            "`top_n`",
        ),
        (json!({"query": 3, "documents": TEXTS}), "`query`"),
    ] {
        let answer = post_json(&router, "/v1/rerank", &body).await;
        assert_eq!(answer.status, 422, "{body}");
        assert!(answer.error().contains(field), "{}", answer.error());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_chunk_averages_windows_as_the_cli() {
    let options = ModelOptions {
        max_input_length: Some(16),
        ..Default::default()
    };
    let (router, _) = server_at(
        &fixture("tiny-base"),
        options.clone(),
        ServerConfig::default(),
    );
    let pipeline = PipelineOptions {
        max_length: Some(16),
        ..Default::default()
    };
    let embed_options = EmbedOptions {
        pipeline: pipeline.clone(),
        ..Default::default()
    };
    let embedder = Embedder::load(&fixture("tiny-base"), &embed_options)
        .unwrap()
        .with_long_text(LongText::Chunk { stride: 4 })
        .unwrap();
    let expected = embedder.embed_long(&[LONG, TEXTS[0]]).unwrap();
    let body = json!({"inputs": [LONG, TEXTS[0]], "long_text": "chunk"});
    let answer = post_json(&router, "/embed", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (got, want) in matrix(&answer.body).iter().zip(&expected) {
        assert_close(got, &unit(want.clone()), 1e-5, "chunked embedding");
    }

    let (classify, _) = server_at(&fixture("tiny-classify"), options, ServerConfig::default());
    let classifier = TextClassifier::load(&fixture("tiny-classify"), &pipeline, None)
        .unwrap()
        .with_long_text(LongText::Chunk { stride: 4 })
        .unwrap();
    let expected = classifier.classify_long(&[LONG]).unwrap();
    let answer = post_json(
        &classify,
        "/predict",
        &json!({"inputs": LONG, "long_text": "chunk"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (got, want) in answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected[0].scores)
    {
        assert_eq!(got["label"], want.label.as_str());
        assert!((got["score"].as_f64().unwrap() as f32 - want.score).abs() < 1e-5);
    }
    let pair = json!({"inputs": [LONG, "a"], "long_text": "chunk"});
    let answer = post_json(&classify, "/predict", &pair).await;
    assert_eq!(answer.status, 422);
    assert!(answer.error().contains("pairs"), "{}", answer.error());
    let refused = post_json(
        &classify,
        "/predict",
        &json!({"inputs": LONG, "truncate": false}),
    )
    .await;
    assert_eq!(
        refused.status, 413,
        "without chunk, a long text is still refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_batch_runs_a_big_batch_in_parts_instead_of_refusing_it() {
    let config = ServerConfig {
        max_client_batch_size: 4,
        ..Default::default()
    };
    let (router, _) = server("tiny-base", &[], config.clone());
    let texts: Vec<String> = (0..11).map(|i| format!("{} {i}", TEXTS[i % 3])).collect();
    let refused = post_json(&router, "/embed", &json!({"inputs": texts})).await;
    assert_eq!(refused.status, 413);
    assert!(
        refused.error().contains("split_batch"),
        "{}",
        refused.error()
    );
    let answer = post_json(
        &router,
        "/embed",
        &json!({"inputs": texts, "split_batch": true}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = matrix(&answer.body);
    assert_eq!(got.len(), 11);
    for (i, text) in texts.iter().enumerate() {
        let one = matrix(
            &post_json(&router, "/embed", &json!({"inputs": text}))
                .await
                .body,
        );
        assert_close(&got[i], &one[0], 1e-5, "split batch in order");
    }
    let (classify, _) = server("tiny-classify", &[], config);
    let answer = post_json(
        &classify,
        "/predict",
        &json!({"inputs": texts, "split_batch": true}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body.as_array().unwrap().len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attention_gives_each_layer_and_head_as_transformers() {
    let reference = serving();
    let router = default_server("tiny-base");
    let text = reference["texts"][0].as_str().unwrap();
    let answer = post_json(&router, "/attention", &json!({"inputs": text})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["tokens"][0], "[CLS]");
    let layers = answer.body["attentions"].as_array().unwrap();
    assert_eq!(layers.len() as u64, answer.body["layers"].as_u64().unwrap());
    for (layer, heads) in layers.iter().enumerate() {
        let heads: Vec<Vec<Vec<f32>>> = serde_json::from_value(heads.clone()).unwrap();
        assert_eq!(heads.len() as u64, answer.body["heads"].as_u64().unwrap());
        let flat: Vec<f32> = heads.concat().concat();
        assert_close(
            &flat,
            &floats(&reference["attentions"][0][layer]),
            1e-5,
            "attention",
        );
    }
    let long = vec!["sea"; 200].join(" ");
    assert_eq!(
        post_json(&router, "/attention", &json!({"inputs": long}))
            .await
            .status,
        413
    );
    assert_eq!(
        post_json(&router, "/attention", &json!({"inputs": ["a"]}))
            .await
            .status,
        422
    );
    assert_eq!(
        post_json(&router, "/attention", &json!({"inputs": " "}))
            .await
            .status,
        400
    );
    // An encoder-decoder serves generation only; a classifier has no /embed_all.
    let generator = default_server("tiny-seq2seq");
    let answer = post_json(&generator, "/attention", &json!({"inputs": "a"})).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_type()),
        (400, "unsupported")
    );
    assert!(answer.error().contains("/generate"), "{}", answer.error());
    let classifier = default_server("tiny-classify");
    let answer = post_json(&classifier, "/embed_all", &json!({"inputs": "a"})).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_type()),
        (400, "unsupported")
    );
    let answer = post_json(&classifier, "/attention", &json!({"inputs": "a"})).await;
    assert_eq!(
        answer.status, 200,
        "a classifier's encoder has attention too"
    );
}
