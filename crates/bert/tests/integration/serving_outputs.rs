//! The outputs the server's extra routes are built on, against `transformers`
//! (`scripts/make_fixtures.py --only-serving`): each layer's attention probabilities
//! (`output_attentions`), every token's final state (`embed_all`) and SPLADE vectors
//! (`log(1 + relu(logits))` max-pooled over tokens, `embed_sparse`); and truncation from the left.

use crate::common::fixture;
use bert::pipelines::{EmbedOptions, Embedder, FillMask, PipelineOptions};
use bert::TruncationSide;
use serde::Deserialize;

#[derive(Deserialize)]
struct Serving {
    texts: Vec<String>,
    /// Per text, per layer: (heads, T, T) flattened.
    attentions: Vec<Vec<Vec<f32>>>,
    /// Per text: (T, C) flattened.
    last_hidden_state: Vec<Vec<f32>>,
    /// Per text: `[token id, weight]` of the non-zero entries.
    splade: Vec<Vec<(u32, f32)>>,
}

fn serving() -> Serving {
    let text = std::fs::read_to_string(fixture("serving.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn attention_probabilities_match_transformers_output_attentions() {
    let reference = serving();
    let embedder = Embedder::load(&fixture("tiny-base"), &EmbedOptions::default()).unwrap();
    let pipeline = embedder.pipeline();
    let encodings: Vec<_> = (reference.texts.iter())
        .map(|t| embedder.encode(t).unwrap())
        .collect();
    // One padded batch: padding must not change a text's probabilities over its own tokens.
    let batch = pipeline.batch(&encodings).unwrap();
    let layers = pipeline.model.attentions(&batch).unwrap();
    assert_eq!(layers.len(), pipeline.config.num_hidden_layers);
    for (i, (encoding, expected)) in encodings.iter().zip(&reference.attentions).enumerate() {
        let t = encoding.ids.len();
        for (layer, (probs, expected)) in layers.iter().zip(expected).enumerate() {
            let mine = probs
                .get(i)
                .unwrap()
                .narrow(1, 0, t)
                .unwrap()
                .narrow(2, 0, t)
                .unwrap();
            let mine: Vec<f32> = mine.flatten_all().unwrap().to_vec1().unwrap();
            let diff = worst(&mine, expected);
            assert!(diff < 1e-5, "text {i} layer {layer}: max difference {diff}");
        }
    }
}

#[test]
fn every_token_state_matches_transformers_last_hidden_state() {
    let reference = serving();
    let embedder = Embedder::load(&fixture("tiny-base"), &EmbedOptions::default()).unwrap();
    let encodings: Vec<_> = (reference.texts.iter())
        .map(|t| embedder.encode(t).unwrap())
        .collect();
    let states = embedder.token_states(&encodings).unwrap();
    for (i, (rows, expected)) in states.iter().zip(&reference.last_hidden_state).enumerate() {
        assert_eq!(
            rows.len(),
            encodings[i].ids.len(),
            "one row per token, padding left out"
        );
        let diff = worst(&rows.concat(), expected);
        assert!(diff < 1e-4, "text {i}: max difference {diff}");
    }
}

#[test]
fn splade_vectors_match_the_masked_lm_logits_max_pooled() {
    let reference = serving();
    let filler = FillMask::load(&fixture("tiny-mlm"), &PipelineOptions::default()).unwrap();
    let encodings: Vec<_> = (reference.texts.iter())
        .map(|t| {
            filler
                .pipeline()
                .tokenizer
                .encode_from(t, TruncationSide::Right)
                .unwrap()
        })
        .collect();
    let vectors = filler.splade(&encodings).unwrap();
    for (i, (mine, expected)) in vectors.iter().zip(&reference.splade).enumerate() {
        let ids = |v: &[(u32, f32)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(ids(mine), ids(expected), "text {i}: non-zero entries");
        let weights = |v: &[(u32, f32)]| v.iter().map(|p| p.1).collect::<Vec<_>>();
        let diff = worst(&weights(mine), &weights(expected));
        assert!(diff < 1e-4, "text {i}: max difference {diff}");
    }
}

#[test]
fn truncation_from_the_left_keeps_the_end() {
    let options = PipelineOptions {
        max_length: Some(6),
        ..Default::default()
    };
    let (tokenizer, _) =
        bert::pipelines::load_tokenizer(&fixture("tiny-base"), &options, None).unwrap();
    let text = "the sea is calm tonight and the city is far";
    let whole = bert::Tokenizer::from_dir(&fixture("tiny-base"))
        .unwrap()
        .encode(text)
        .unwrap();
    let n = whole.ids.len();
    let right = tokenizer.encode_from(text, TruncationSide::Right).unwrap();
    let left = tokenizer.encode_from(text, TruncationSide::Left).unwrap();
    assert!(right.truncated && left.truncated);
    assert_eq!(right.ids[1..5], whole.ids[1..5]);
    assert_eq!(left.ids[1..5], whole.ids[n - 5..n - 1]);
    assert_eq!(
        (left.ids[0], left.ids[5]),
        (whole.ids[0], whole.ids[n - 1]),
        "[CLS] and [SEP] stay"
    );
    assert_eq!(
        left.offsets[1..5],
        whole.offsets[n - 5..n - 1],
        "offsets into the text"
    );
    let pair = tokenizer
        .encode_pair_from(text, "a good movie", TruncationSide::Left)
        .unwrap();
    assert_eq!(pair.ids.len(), 6);
}
