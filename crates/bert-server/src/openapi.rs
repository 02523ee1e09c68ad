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

fn scores() -> Value {
    json!({"type": "array", "items": {"type": "object", "properties": {
        "label": {"type": "string"}, "score": {"type": "number"}}}})
}

pub fn document() -> Value {
    let truncate = json!({"type": "boolean", "description": "Cut inputs longer than the model takes instead of answering 413 (default: the server's --auto-truncate)"});
    let vectors = json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}});
    let paths = json!({
        "/embed": post("Sentence embeddings (text-embeddings-inference)", json!({
            "inputs": texts(),
            "normalize": {"type": "boolean", "default": true},
            "truncate": truncate}), &["inputs"], vectors),
        "/v1/embeddings": post("Sentence embeddings (OpenAI)", json!({
            "input": texts(),
            "model": {"type": "string"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1}}), &["input"], json!({"type": "object",
            "properties": {"object": {"const": "list"}, "data": {"type": "array"}, "model": {"type": "string"},
                "usage": {"type": "object"}}})),
        "/predict": post("Labels of texts or [text, text_pair] pairs; one input gives a list of labels, a batch a list of lists", json!({
            "inputs": {"description": "a string, a [text, text_pair] list, or a list of those"},
            "truncate": truncate,
            "raw_scores": {"type": "boolean", "default": false}}), &["inputs"],
            json!({"oneOf": [scores(), {"type": "array", "items": scores()}]})),
        "/rerank": post("Passages scored against a query by a cross-encoder, best first", json!({
            "query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
            "truncate": truncate, "raw_scores": {"type": "boolean", "default": false},
            "return_text": {"type": "boolean", "default": false}}), &["query", "texts"],
            json!({"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}}}})),
        "/tokenize": post("Tokens with character offsets", json!({
            "inputs": texts(), "add_special_tokens": {"type": "boolean", "default": true}}), &["inputs"],
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
        "/info": get("The model, its tasks and routes, and the server's limits", "application/json"),
        "/metrics": get("Prometheus metrics", "text/plain"),
        "/openapi.json": get("This document", "application/json"),
    });
    json!({
        "openapi": "3.1.0",
        "info": {"title": "bert serve", "version": env!("CARGO_PKG_VERSION"),
            "description": "BERT models over HTTP. Routes a model has no head for answer 400 (error_type unsupported)."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
