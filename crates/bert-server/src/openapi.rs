//! The OpenAPI 3.1 document served at `/openapi.json`: every route, its request body and its answer,
//! written out here (a derive framework would cost more build than this page of JSON).

use serde_json::{json, Value};

/// A string or a list of strings.
fn texts() -> Value {
    json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
}

fn error() -> Value {
    json!({"description": "An error", "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "error_type": {"type": "string", "enum": [
            "validation", "tokenizer", "empty", "overloaded", "unauthorized", "unsupported",
            "not_found", "timeout", "unhealthy", "backend"]}},
        "required": ["error", "error_type"]}}}})
}

fn post(summary: &str, properties: Value, required: &[&str], answer: Value) -> Value {
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "properties": properties, "required": required}}}},
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
            "400": error(), "401": error(), "413": error(), "422": error(), "429": error(),
            "504": error()
        }
    }})
}

fn get(summary: &str, content_type: &str) -> Value {
    json!({"get": {"summary": summary, "responses": {
        "200": {"description": "OK", "content": {content_type: {"schema": {}}}}, "401": error()}}})
}

fn direction() -> Value {
    json!({"type": "string", "enum": ["Right", "Left", "right", "left"], "default": "Right",
        "description": "Which end of a too-long input loses tokens"})
}

fn prompt_name() -> Value {
    json!({"type": "string", "description": "A prompt of config_sentence_transformers.json to put before each input"})
}

fn long_text() -> Value {
    json!({"type": "string", "enum": ["truncate", "chunk"], "default": "truncate",
        "description": "chunk: cut a long text into windows (a quarter shared) and average their results"})
}

fn split_batch() -> Value {
    json!({"type": "boolean", "default": false,
        "description": "Accept more inputs than --max-client-batch-size and run them in parts"})
}

fn scores() -> Value {
    json!({"type": "array", "items": {"type": "object", "properties": {
        "label": {"type": "string"}, "score": {"type": "number"}}}})
}

pub fn document() -> Value {
    let truncate = json!({"type": "boolean", "description": "Cut inputs longer than the model takes instead of answering 413 (default: the server's --auto-truncate)"});
    let vectors = json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}});
    let paths = json!({
        "/invocations": post("As POST /: the route that fits the model", json!({}), &[], json!({})),
        "/embed": post("Sentence embeddings (text-embeddings-inference)", json!({
            "inputs": texts(),
            "normalize": {"type": "boolean", "default": true},
            "truncate": truncate,
            "truncation_direction": direction(),
            "prompt_name": prompt_name(),
            "dimensions": {"type": "integer", "minimum": 1, "description": "Keep the first N dimensions (Matryoshka), then normalise"},
            "long_text": long_text(),
            "split_batch": split_batch()}), &["inputs"], vectors.clone()),
        "/embed_all": post("Every token's final hidden state, special tokens included, per input", json!({
            "inputs": texts(), "truncate": truncate, "truncation_direction": direction(),
            "prompt_name": prompt_name()}), &["inputs"],
            json!({"type": "array", "items": vectors.clone()})),
        "/embed_sparse": post("SPLADE vectors from the masked-LM head: log(1 + relu(logits)) max-pooled over tokens, the non-zero entries by token id", json!({
            "inputs": texts(), "truncate": truncate, "truncation_direction": direction(),
            "prompt_name": prompt_name()}), &["inputs"],
            json!({"type": "array", "items": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "value": {"type": "number"}}}}})),
        "/similarity": post("Cosine similarity of a source sentence with each of the sentences", json!({
            "inputs": {"type": "object", "properties": {"source_sentence": {"type": "string"},
                "sentences": {"type": "array", "items": {"type": "string"}}}, "required": ["source_sentence", "sentences"]},
            "parameters": {"type": "object", "properties": {"truncate": truncate, "truncation_direction": direction(),
                "prompt_name": prompt_name()}}}), &["inputs"],
            json!({"type": "array", "items": {"type": "number"}})),
        "/embeddings": post("As /v1/embeddings", json!({}), &["input"], json!({})),
        "/v1/rerank": post("Documents ranked against a query by a cross-encoder, in Cohere's and Jina's shape", json!({
            "model": {"type": "string"}, "query": {"type": "string"},
            "documents": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"text": {"type": "string"}}}]}},
            "top_n": {"type": "integer", "minimum": 1}, "return_documents": {"type": "boolean", "default": true},
            "truncate": truncate}), &["query", "documents"],
            json!({"type": "object", "properties": {"model": {"type": "string"}, "results": {"type": "array", "items": {
                "type": "object", "properties": {"index": {"type": "integer"}, "relevance_score": {"type": "number"},
                "document": {"type": "object", "properties": {"text": {"type": "string"}}}}}},
                "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}}}})),
        "/decode": post("Token ids back to text", json!({
            "ids": {"oneOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}]},
            "skip_special_tokens": {"type": "boolean", "default": true}}), &["ids"],
            json!({"type": "array", "items": {"type": "string"}})),
        "/attention": post("One text's tokens and each layer's and head's attention probabilities (at most 128 tokens)", json!({
            "inputs": {"type": "string"}}), &["inputs"],
            json!({"type": "object", "properties": {"tokens": {"type": "array", "items": {"type": "string"}},
                "layers": {"type": "integer"}, "heads": {"type": "integer"},
                "attentions": {"description": "[layer][head][query][key]", "type": "array"}}})),
        "/v1/embeddings": post("Sentence embeddings (OpenAI)", json!({
            "input": texts(),
            "model": {"type": "string"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1}}), &["input"], json!({"type": "object",
            "properties": {"object": {"const": "list"}, "data": {"type": "array"}, "model": {"type": "string"},
                "usage": {"type": "object"}}})),
        "/predict": post("Labels of texts or [text, text_pair] pairs; one input gives a list of labels, a batch a list of lists", json!({
            "inputs": {"description": "a string, a [text, text_pair] list, or a list of those"},
            "truncate": truncate, "truncation_direction": direction(),
            "raw_scores": {"type": "boolean", "default": false, "description": "Logits instead of probabilities (softmax; sigmoid per label for a multi-label or one-output model)"},
            "long_text": long_text(), "split_batch": split_batch()}), &["inputs"],
            json!({"oneOf": [scores(), {"type": "array", "items": scores()}]})),
        "/rerank": post("Passages scored against a query by a cross-encoder, best first", json!({
            "query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
            "truncate": truncate, "truncation_direction": direction(), "raw_scores": {"type": "boolean", "default": false},
            "return_text": {"type": "boolean", "default": false}}), &["query", "texts"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}}}})),
        "/tokenize": post("Tokens with character offsets", json!({
            "inputs": texts(), "add_special_tokens": {"type": "boolean", "default": true},
            "prompt_name": prompt_name()}), &["inputs"],
            json!({"type": "array", "items": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "integer"}, "text": {"type": "string"}, "special": {"type": "boolean"},
                "start": {"type": ["integer", "null"]}, "stop": {"type": ["integer", "null"]}}}}})),
        "/fill-mask": post("Candidates for each [MASK] token, as `bert fill-mask` prints them", json!({
            "inputs": texts(), "top_k": {"type": "integer", "default": 5}, "truncate": truncate}), &["inputs"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "text": {"type": "string"}, "predictions": {"type": "array"}}}})),
        "/generate": post("Text generated from each input by the encoder-decoder (translation, replies), as transformers' text2text-generation pipeline answers", json!({
            "inputs": texts(),
            "parameters": {"type": "object", "properties": {
                "max_new_tokens": {"type": "integer"}, "min_new_tokens": {"type": "integer"},
                "num_beams": {"type": "integer", "default": 1}, "length_penalty": {"type": "number", "default": 1.0},
                "early_stopping": {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["never"]}]},
                "no_repeat_ngram_size": {"type": "integer", "default": 0},
                "do_sample": {"type": "boolean", "default": false}, "top_k": {"type": "integer", "default": 50},
                "top_p": {"type": "number", "default": 1.0}, "temperature": {"type": "number", "default": 1.0},
                "num_return_sequences": {"type": "integer", "default": 1}, "seed": {"type": "integer"}},
                "additionalProperties": false},
            "truncate": truncate}), &["inputs"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "generated_text": {"type": "string"}, "score": {"type": "number"}}}})),
        "/ner": post("Entities, as `bert ner` prints them", json!({
            "inputs": texts(),
            "aggregation_strategy": {"type": "string", "enum": ["none", "simple", "first", "average", "max"], "default": "none"},
            "ignore_labels": {"type": "array", "items": {"type": "string"}, "default": ["O"]},
            "truncate": truncate}), &["inputs"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "text": {"type": "string"}, "entities": {"type": "array"}}}})),
        "/nlu": post("Each text's intent and slots from a joint intent and slot model, as `bert nlu` prints them", json!({
            "inputs": texts(), "truncate": truncate}), &["inputs"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "text": {"type": "string"}, "intent": {"type": "string"}, "intent_score": {"type": "number"},
                "intents": {"type": "object", "additionalProperties": {"type": "number"}},
                "slots": {"type": "array", "items": {"type": "object", "properties": {
                    "slot": {"type": "string"}, "word": {"type": "string"}, "start": {"type": "integer"},
                    "end": {"type": "integer"}, "score": {"type": "number"}}}}}}})),
        "/qa": post("The answer to a question in a context, as `bert qa` prints it", json!({
            "question": {"type": "string"}, "context": {"type": "string"},
            "top_k": {"type": "integer", "default": 1}, "max_answer_len": {"type": "integer", "default": 15},
            "handle_impossible_answer": {"type": "boolean", "default": false}}), &["question", "context"],
            json!({"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"},
                "score": {"type": "number"}, "start": {"type": "integer"}, "end": {"type": "integer"},
                "answers": {"type": "array"}}})),
        "/search": post("The passages of the served index closest in meaning to a query, best first (as `bert search`)", json!({
            "query": {"type": "string"}, "top_k": {"type": "integer", "default": 10},
            "mode": {"type": "string", "enum": ["dense", "bm25", "hybrid"], "default": "dense"}}), &["query"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "score": {"type": "number"}, "file": {"type": "string"}, "start": {"type": "integer"},
                "end": {"type": "integer"}, "text": {"type": "string"}}}})),
        "/health": get("200 when the model thread answers, else 503 (needs no API key)", "text/plain"),
        "/ping": get("As /health", "text/plain"),
        "/playground": get("The web playground", "text/html"),
        "/api-doc/openapi.json": get("This document (text-embeddings-inference's path)", "application/json"),
        "/info": get("The model, its tasks and routes, and the server's limits", "application/json"),
        "/metrics": get("Prometheus metrics", "text/plain"),
        "/openapi.json": get("This document", "application/json"),
    });
    let mut paths = paths;
    let dispatch = post("The route that fits the model: /rerank for a cross-encoder, /predict for a classifier, /embed_sparse with --pooling splade, /embed for an embedding model, else the task's own route", json!({}), &[], json!({}));
    let root = get(
        "The web playground for a browser (Accept: text/html); the health check otherwise",
        "text/html",
    );
    paths["/"] = json!({"post": dispatch["post"], "get": root["get"]});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "bert serve", "version": env!("CARGO_PKG_VERSION"),
            "description": "BERT models over HTTP. Routes a model has no head for answer 400 (error_type unsupported)."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
