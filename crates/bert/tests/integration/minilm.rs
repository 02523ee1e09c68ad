//! The real all-MiniLM-L6-v2 (from `BERT_TEST_MODELS`): token ids identical to the HF fast tokenizer on
//! 600 varied lines, sentence embeddings within 1e-4 of sentence-transformers, and a padded batch equal
//! to one text at a time.

use crate::common::{fixture, minilm};
use bert::pipelines::{load_tokenizer, EmbedOptions, Embedder, PipelineOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
    offsets: Vec<(usize, usize)>,
}

#[derive(Deserialize)]
struct EmbeddingCase {
    text: String,
    embedding: Vec<f32>,
}

fn jsonl<T: serde::de::DeserializeOwned>(name: &str) -> Vec<T> {
    std::fs::read_to_string(fixture("minilm").join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn token_ids_match_the_fast_tokenizer_on_varied_lines() {
    let Some(dir) = minilm() else { return };
    let options = PipelineOptions {
        max_length: Some(512),
        ..Default::default()
    };
    let (tokenizer, _) = load_tokenizer(&dir, &options, None).unwrap();
    let cases: Vec<TokenCase> = jsonl("token_ids.jsonl");
    assert!(cases.len() >= 500);
    for case in &cases {
        let e = tokenizer.encode(&case.text).unwrap();
        assert_eq!(e.ids, case.ids, "ids of {:?}", case.text);
        assert_eq!(e.offsets, case.offsets, "offsets of {:?}", case.text);
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(dir) = minilm() else { return };
    let embedder = Embedder::load(&dir, &EmbedOptions::default()).unwrap();
    assert!(
        embedder.normalize(),
        "modules.json asks for a Normalize module"
    );
    assert_eq!(
        embedder.pipeline().max_length,
        256,
        "sentence_bert_config.json max_seq_length"
    );
    let cases: Vec<EmbeddingCase> = jsonl("embeddings.jsonl");
    for chunk in cases.chunks(8) {
        let texts: Vec<&str> = chunk.iter().map(|c| c.text.as_str()).collect();
        let got = embedder.embed_texts(&texts).unwrap();
        for (case, vector) in chunk.iter().zip(got) {
            let worst = vector
                .iter()
                .zip(&case.embedding)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-4, "{:?}: max abs difference {worst}", case.text);
        }
    }
}

#[test]
fn a_padded_batch_equals_one_text_at_a_time() {
    let Some(dir) = minilm() else { return };
    for pooling in ["mean", "cls", "max"] {
        let options = EmbedOptions {
            pooling: Some(pooling.parse().unwrap()),
            ..Default::default()
        };
        let embedder = Embedder::load(&dir, &options).unwrap();
        let texts = [
            "short",
            "a somewhat longer sentence, with punctuation and more words in it",
            "中文 text",
        ];
        let batched = embedder.embed_texts(&texts).unwrap();
        for (text, row) in texts.iter().zip(&batched) {
            let alone = embedder.embed_texts(&[text]).unwrap().remove(0);
            let worst = row
                .iter()
                .zip(&alone)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5,
                "{pooling} {text:?}: batched differs by {worst}"
            );
        }
    }
}
