//! Every route, in process, on the tiny fixture checkpoints: each answer equals what the library's
//! pipeline gives for the same input (the pipelines themselves are checked against transformers in
//! the `bert` crate), in the documented shape.

mod common;

use bert::generation::GenerationOverrides;
use bert::pipelines::{
    Aggregation, EmbedOptions, Embedder, FillMask, Generator, IntentSlotParser, PipelineOptions,
    QaOptions, QuestionAnswerer, TextClassifier, TokenClassifier,
};
use bert_server::{ServerConfig, Task, ROUTES};
use common::*;
use serde_json::{json, Value};

const TEXTS: [&str; 3] = [
    "the sea is calm tonight",
    "a good movie",
    "hello world, again and again",
];

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_gives_the_pipelines_vectors_normalised_unless_asked_not_to() {
    let router = default_server("tiny-base");
    let embedder = Embedder::load(&fixture("tiny-base"), &EmbedOptions::default()).unwrap();
    let expected = embedder.embed_texts(&TEXTS).unwrap();

    let answer = post_json(&router, "/embed", &json!({"inputs": TEXTS})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = matrix(&answer.body);
    assert_eq!(got.len(), 3);
    for (g, e) in got.iter().zip(&expected) {
        assert_close(g, &unit(e.clone()), 1e-5, "normalised embedding");
    }

    let raw = post_json(
        &router,
        "/embed",
        &json!({"inputs": TEXTS[1], "normalize": false}),
    )
    .await;
    let raw = matrix(&raw.body);
    assert_eq!(raw.len(), 1, "one string gives one vector in a list");
    assert_close(&raw[0], &expected[1], 1e-5, "raw embedding");
}

fn decode_base64(text: &str) -> Vec<f32> {
    base64_bytes(text)
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embeddings_match_embed_in_floats_and_base64() {
    let router = default_server("tiny-base");
    let embed = matrix(
        &post_json(&router, "/embed", &json!({"inputs": TEXTS}))
            .await
            .body,
    );

    let answer = post_json(
        &router,
        "/v1/embeddings",
        &json!({"input": TEXTS, "model": "mine"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = &answer.body;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "mine");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 6);
    for (i, item) in body["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let v: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
        assert_close(&v, &embed[i], 1e-6, "openai float");
    }

    let answer = post_json(
        &router,
        "/v1/embeddings",
        &json!({"input": TEXTS[0], "encoding_format": "base64"}),
    )
    .await;
    let encoded = answer.body["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string");
    assert_close(&decode_base64(encoded), &embed[0], 1e-6, "openai base64");

    let answer = post_json(
        &router,
        "/v1/embeddings",
        &json!({"input": TEXTS[0], "dimensions": 8}),
    )
    .await;
    let v: Vec<f32> = serde_json::from_value(answer.body["data"][0]["embedding"].clone()).unwrap();
    assert_close(
        &v,
        &unit(embed[0][..8].to_vec()),
        1e-6,
        "first 8 dimensions renormalised",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_reads_texts_pairs_and_batches_as_text_embeddings_inference() {
    let router = default_server("tiny-classify");
    let classifier =
        TextClassifier::load(&fixture("tiny-classify"), &PipelineOptions::default(), None).unwrap();
    let labels =
        |c: &bert::pipelines::Classification| -> Value { serde_json::to_value(&c.scores).unwrap() };
    let close = |got: &Value, want: &Value| {
        let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["label"], w["label"]);
            assert!((g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs() < 1e-5);
        }
    };

    let single = classifier
        .classify(&[classifier.encode(TEXTS[0]).unwrap()])
        .unwrap();
    let answer = post_json(&router, "/predict", &json!({"inputs": TEXTS[0]})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    close(&answer.body, &labels(&single[0]));

    // Two strings are one pair; three are a batch.
    let pair = classifier
        .classify(&[classifier.encode_pair(TEXTS[0], TEXTS[1]).unwrap()])
        .unwrap();
    let answer = post_json(
        &router,
        "/predict",
        &json!({"inputs": [TEXTS[0], TEXTS[1]]}),
    )
    .await;
    close(&answer.body, &labels(&pair[0]));

    let answer = post_json(
        &router,
        "/predict",
        &json!({"inputs": [[TEXTS[0], TEXTS[1]], TEXTS[2]]}),
    )
    .await;
    let batch = answer
        .body
        .as_array()
        .expect("a batch gives a list per input");
    close(&batch[0], &labels(&pair[0]));
    let third = classifier
        .classify(&[classifier.encode(TEXTS[2]).unwrap()])
        .unwrap();
    close(&batch[1], &labels(&third[0]));

    let raw = post_json(
        &router,
        "/predict",
        &json!({"inputs": TEXTS[0], "raw_scores": true}),
    )
    .await;
    let logits = classifier
        .logits(&[classifier.encode(TEXTS[0]).unwrap()])
        .unwrap();
    let best = logits[0].iter().copied().fold(f32::MIN, f32::max);
    assert!((raw.body[0]["score"].as_f64().unwrap() as f32 - best).abs() < 1e-5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_scores_passages_against_the_query_best_first() {
    let router = default_server("tiny-regression");
    let classifier = TextClassifier::load(
        &fixture("tiny-regression"),
        &PipelineOptions::default(),
        None,
    )
    .unwrap();
    let query = "where is the sea";
    let encodings: Vec<_> = TEXTS
        .iter()
        .map(|t| classifier.encode_pair(query, t).unwrap())
        .collect();
    let logits = classifier.logits(&encodings).unwrap();

    let body = json!({"query": query, "texts": TEXTS, "return_text": true});
    let answer = post_json(&router, "/rerank", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ranks = answer.body.as_array().unwrap();
    assert_eq!(ranks.len(), 3);
    let mut previous = f64::INFINITY;
    for rank in ranks {
        let index = rank["index"].as_u64().unwrap() as usize;
        let score = rank["score"].as_f64().unwrap();
        let expected = 1.0 / (1.0 + (-logits[index][0] as f64).exp());
        assert!((score - expected).abs() < 1e-5, "{score} vs {expected}");
        assert_eq!(rank["text"], TEXTS[index]);
        assert!(score <= previous, "best first");
        previous = score;
    }

    let three_labels = default_server("tiny-classify");
    let answer = post_json(
        &three_labels,
        "/rerank",
        &json!({"query": query, "texts": TEXTS}),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_type(), "unsupported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_lists_tokens_with_offsets_and_can_leave_out_special_tokens() {
    let router = default_server("tiny-base");
    let tokenizer = bert::Tokenizer::from_dir(&fixture("tiny-base")).unwrap();
    let encoding = tokenizer.encode(TEXTS[2]).unwrap();
    let answer = post_json(&router, "/tokenize", &json!({"inputs": TEXTS[2]})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tokens = answer.body[0].as_array().unwrap();
    assert_eq!(tokens.len(), encoding.ids.len());
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(token["id"], encoding.ids[i]);
        assert_eq!(token["text"], encoding.tokens[i].as_str());
        assert_eq!(token["special"], encoding.special_tokens_mask[i] == 1);
        if encoding.special_tokens_mask[i] == 0 {
            assert_eq!(token["start"], encoding.offsets[i].0);
            assert_eq!(token["stop"], encoding.offsets[i].1);
        }
    }
    let plain = post_json(
        &router,
        "/tokenize",
        &json!({"inputs": [TEXTS[2]], "add_special_tokens": false}),
    )
    .await;
    assert_eq!(
        plain.body[0].as_array().unwrap().len(),
        encoding.ids.len() - 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_mask_answers_as_the_cli_prints() {
    let router = default_server("tiny-mlm");
    let filler = FillMask::load(&fixture("tiny-mlm"), &PipelineOptions::default()).unwrap();
    let texts = ["the sea is [MASK] tonight", "[MASK] good [MASK]"];
    let encodings: Vec<_> = texts.iter().map(|t| filler.encode(t).unwrap()).collect();
    let expected = filler.predict(&encodings, 3).unwrap();

    let answer = post_json(&router, "/fill-mask", &json!({"inputs": texts, "top_k": 3})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let results = answer.body.as_array().unwrap();
    assert_eq!(results[0]["text"], texts[0]);
    // One mask: a list of predictions; two: a list per mask.
    let one = results[0]["predictions"].as_array().unwrap();
    assert_eq!(one.len(), 3);
    assert_eq!(one[0]["token_id"], expected[0][0][0].token_id);
    assert_eq!(one[0]["sequence"], expected[0][0][0].sequence.as_str());
    let two = results[1]["predictions"].as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[1][0]["token"], expected[1][1][0].token.as_str());

    let no_mask = post_json(&router, "/fill-mask", &json!({"inputs": "no mask here"})).await;
    assert_eq!(no_mask.status, 422);
    assert!(no_mask.error().contains("inputs[0]"), "{}", no_mask.error());
    // A masked-LM checkpoint also serves embeddings.
    assert_eq!(
        post_json(&router, "/embed", &json!({"inputs": "the sea"}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ner_answers_as_the_cli_prints_for_each_aggregation() {
    let router = default_server("tiny-ner");
    let tagger = TokenClassifier::load(&fixture("tiny-ner"), &PipelineOptions::default()).unwrap();
    let encodings: Vec<_> = TEXTS.iter().map(|t| tagger.encode(t).unwrap()).collect();
    for strategy in ["none", "simple", "first", "average", "max"] {
        let aggregation: Aggregation = strategy.parse().unwrap();
        let expected = tagger
            .tag(&TEXTS, &encodings, aggregation, &["O".to_string()])
            .unwrap();
        let body = json!({"inputs": TEXTS, "aggregation_strategy": strategy});
        let answer = post_json(&router, "/ner", &body).await;
        assert_eq!(answer.status, 200, "{strategy}: {}", answer.body);
        for (i, result) in answer.body.as_array().unwrap().iter().enumerate() {
            assert_eq!(result["text"], TEXTS[i]);
            let got = result["entities"].as_array().unwrap();
            assert_eq!(got.len(), expected[i].len(), "{strategy}, text {i}");
            for (g, e) in got.iter().zip(&expected[i]) {
                let e = serde_json::to_value(e).unwrap();
                assert_eq!(g["word"], e["word"]);
                assert_eq!(g["start"], e["start"]);
                assert_eq!(g["entity"], e["entity"]);
                assert_eq!(g["entity_group"], e["entity_group"]);
            }
        }
    }
    let bad = post_json(
        &router,
        "/ner",
        &json!({"inputs": "x", "aggregation_strategy": "most"}),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.error().contains("aggregation_strategy"),
        "{}",
        bad.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nlu_answers_intent_and_slots_as_the_cli_prints() {
    // The server picks /nlu from the checkpoint's `architectures` (BertForIntentAndSlots).
    let router = default_server("tiny-intent-slots");
    let parser =
        IntentSlotParser::load(&fixture("tiny-intent-slots"), &PipelineOptions::default()).unwrap();
    let encodings: Vec<_> = TEXTS.iter().map(|t| parser.encode(t).unwrap()).collect();
    let expected = parser.understand(&TEXTS, &encodings).unwrap();
    let answer = post_json(&router, "/nlu", &json!({"inputs": TEXTS})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let results = answer.body.as_array().unwrap();
    assert_eq!(results.len(), TEXTS.len());
    for ((result, expected), text) in results.iter().zip(&expected).zip(TEXTS) {
        assert_eq!(result["text"], text);
        // Through JSON text, as the server writes it (f32 scores at their shortest).
        let mut want: Value =
            serde_json::from_str(&serde_json::to_string(expected).unwrap()).unwrap();
        want["text"] = json!(text);
        assert_eq!(result, &want);
        let scores = result["intents"].as_object().unwrap();
        let total: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "intent scores sum to {total}");
        assert_eq!(
            scores[result["intent"].as_str().unwrap()],
            result["intent_score"]
        );
    }
    // One text in, a list of one out; an empty list is a client error.
    let one = post_json(&router, "/nlu", &json!({"inputs": TEXTS[0]})).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body.as_array().unwrap().len(), 1);
    let empty = post_json(&router, "/nlu", &json!({"inputs": []})).await;
    assert!(empty.status.is_client_error(), "{}", empty.body);
    // A model without the joint heads has no /nlu, and says what it serves.
    let encoder = default_server("tiny-base");
    let answer = post_json(&encoder, "/nlu", &json!({"inputs": "x"})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("/embed"), "{}", answer.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qa_answers_as_the_cli_prints_with_request_options() {
    let router = default_server("tiny-qa");
    let answerer = QuestionAnswerer::load(
        &fixture("tiny-qa"),
        &PipelineOptions::default(),
        QaOptions::default(),
    )
    .unwrap();
    let (question, context) = (
        "where is the sea",
        "the sea is far from the town, by the old hill",
    );
    let windows = answerer.encode(question, context).unwrap();
    let options = QaOptions {
        top_k: 3,
        handle_impossible_answer: true,
        ..QaOptions::default()
    };
    let expected = answerer.answer_with(context, &windows, &options).unwrap();

    let body = json!({"question": question, "context": context, "top_k": 3, "handle_impossible_answer": true});
    let answer = post_json(&router, "/qa", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["question"], question);
    assert_eq!(answer.body["answer"], expected[0].answer.as_str());
    assert_eq!(answer.body["start"], expected[0].start);
    let answers = answer.body["answers"].as_array().unwrap();
    assert_eq!(answers.len(), expected.len());
    for (g, e) in answers.iter().zip(&expected) {
        assert_eq!(g["answer"], e.answer.as_str());
        assert!((g["score"].as_f64().unwrap() - f64::from(e.score)).abs() < 1e-5);
    }
    let one = post_json(
        &router,
        "/qa",
        &json!({"question": question, "context": context}),
    )
    .await;
    assert!(one.body.get("answers").is_none(), "top_k 1 gives no list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_a_model_has_no_head_for_say_which_it_serves() {
    let router = default_server("tiny-base");
    for path in [
        "/predict",
        "/rerank",
        "/ner",
        "/qa",
        "/fill-mask",
        "/generate",
        "/search",
    ] {
        let body =
            json!({"inputs": "x", "query": "q", "texts": ["x"], "question": "q", "context": "c"});
        let answer = post_json(&router, path, &body).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.error_type(), "unsupported");
        assert!(answer.error().contains("/embed"), "{}", answer.error());
    }
    // Asked for, a task loads whatever the head: a classifier can also embed.
    let (both, _) = server(
        "tiny-classify",
        &[Task::Classify, Task::Embed],
        ServerConfig::default(),
    );
    assert_eq!(
        post_json(&both, "/embed", &json!({"inputs": "x"}))
            .await
            .status,
        200
    );
    assert_eq!(
        post_json(&both, "/predict", &json!({"inputs": "x"}))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_health_metrics_and_openapi_describe_the_server() {
    let (router, _) = server(
        "tiny-classify",
        &[],
        ServerConfig {
            model_id: "tiny".into(),
            ..Default::default()
        },
    );
    assert_eq!(get(&router, "/health").await.status, 200);

    let info = get(&router, "/info").await.body;
    assert_eq!(info["model_id"], "tiny");
    assert_eq!(info["tasks"], json!(["classify"]));
    assert_eq!(
        info["model_type"]["classifier"]["id2label"]["2"],
        "positive"
    );
    assert_eq!(info["max_input_length"], 64);

    post_json(&router, "/predict", &json!({"inputs": "x"})).await;
    post_json(&router, "/predict", &json!({"inputs": 1})).await;
    let metrics = get(&router, "/metrics").await.body;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"bert_requests_total{route="/predict",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"bert_requests_total{route="/predict",status="422"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("bert_batches_total 1"), "{metrics}");

    let openapi = get(&router, "/openapi.json").await.body;
    assert_eq!(openapi["openapi"], "3.1.0");
    for (method, path) in ROUTES {
        let operation = &openapi["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        // And each documented route is routed: anything but a 404.
        let answer = match method {
            "GET" => get(&router, path).await,
            _ => post(&router, path, "{}").await,
        };
        assert_ne!(answer.status, 404, "{method} {path}");
    }
    let operations: usize = (openapi["paths"].as_object().unwrap().values())
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, ROUTES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_serves_an_index_with_its_own_model() {
    use bert::search::{Existing, IndexOptions, Searcher};
    let root = std::env::temp_dir().join(format!("bert-server-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        std::fs::write(root.join(format!("{i}.txt")), text).unwrap();
    }
    let index = root.join("index");
    let dir = fixture("tiny-base");
    let embedder = Embedder::load(&dir, &EmbedOptions::default()).unwrap();
    let model = bert::search::model_info(&dir.display().to_string(), &dir, &embedder).unwrap();
    let options = IndexOptions {
        chunk_tokens: 32,
        overlap: 4,
        existing: Existing::Refuse,
        batch_size: 8,
    };
    bert::search::build(
        &embedder,
        model,
        std::slice::from_ref(&root),
        &index,
        &options,
        &mut |_, _| {},
    )
    .unwrap();
    let expected = Searcher::open(&index, None)
        .unwrap()
        .search("a good film", 2)
        .unwrap();

    let models = bert_server::Models::load(
        None,
        &bert_server::ModelOptions {
            index: Some(index),
            ..Default::default()
        },
    )
    .unwrap();
    let router = bert_server::app(std::sync::Arc::new(models), ServerConfig::default()).0;
    let answer = post_json(
        &router,
        "/search",
        &json!({"query": "a good film", "top_k": 2}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expected: Value = serde_json::from_str(&serde_json::to_string(&expected).unwrap()).unwrap();
    assert_eq!(answer.body, expected);
    let info = get(&router, "/info").await.body;
    assert_eq!(info["tasks"], json!(["search"]));
    let empty = post_json(&router, "/search", &json!({"query": ""})).await;
    assert_eq!(empty.status, 400);
    let embed = post_json(&router, "/embed", &json!({"inputs": "x"})).await;
    assert_eq!(embed.status, 400, "an index alone serves search only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_answers_as_the_text2text_pipeline_with_request_parameters() {
    let router = default_server("tiny-seq2seq");
    let generator = Generator::load(&fixture("tiny-seq2seq"), &PipelineOptions::default()).unwrap();
    let sources = ["The capital of France is Paris.", "a good movie"];
    let beams = GenerationOverrides {
        num_beams: Some(3),
        max_new_tokens: Some(8),
        ..Default::default()
    }
    .apply(&generator.generation)
    .unwrap();
    let encodings: Vec<_> = sources
        .iter()
        .map(|s| generator.encode(s).unwrap())
        .collect();
    let expected = generator.generate(&encodings, &beams).unwrap();

    let body = json!({"inputs": sources, "parameters": {"num_beams": 3, "max_new_tokens": 8}});
    let answer = post_json(&router, "/generate", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let results = answer.body.as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (result, expected) in results.iter().zip(&expected) {
        assert_eq!(
            result["generated_text"],
            expected[0].generated_text.as_str()
        );
    }
    // One input, two sequences: a list of them.
    let body =
        json!({"inputs": sources[1], "parameters": {"num_beams": 2, "num_return_sequences": 2}});
    let answer = post_json(&router, "/generate", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body[0].as_array().unwrap().len(), 2);

    for (parameters, mentions) in [
        (json!({"num_beams": 0}), "num_beams"),
        (json!({"beams": 2}), "beams"),
        (json!({"max_new_tokens": 500}), "positions"),
    ] {
        let answer = post_json(
            &router,
            "/generate",
            &json!({"inputs": "x", "parameters": parameters}),
        )
        .await;
        assert_eq!(answer.status, 422, "{parameters}: {}", answer.body);
        assert!(answer.error().contains(mentions), "{}", answer.error());
    }
    let empty = post_json(&router, "/generate", &json!({"inputs": ""})).await;
    assert!(empty.status.is_client_error(), "{}", empty.body);
    // An encoder-only checkpoint has no /generate, and says what it serves.
    let encoder = default_server("tiny-base");
    let answer = post_json(&encoder, "/generate", &json!({"inputs": "x"})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("/embed"), "{}", answer.error());
}
