//! `--long-text chunk`: a text longer than the model takes is cut into overlapping windows whose
//! results are averaged; a short text gives what truncation gives.

use crate::common::{fixture, max_abs};
use bert::pipelines::{EmbedOptions, Embedder, LongText, PipelineOptions, TextClassifier};

const LONG: &str = "the people of the north country wrote the story while the sun was hot and \
    the sea was far from the farm . each day they saw the city and the school , and each night \
    they thought of the long road to paris and the capital of france .";

fn options(max_length: usize) -> PipelineOptions {
    PipelineOptions {
        max_length: Some(max_length),
        ..Default::default()
    }
}

#[test]
fn windows_of_a_long_text_overlap_by_the_stride() {
    let tokenizer = bert::Tokenizer::from_dir(&fixture("tiny-base"))
        .unwrap()
        .with_windows(16, 4)
        .unwrap();
    let whole = bert::Tokenizer::from_dir(&fixture("tiny-base"))
        .unwrap()
        .encode(LONG)
        .unwrap();
    let windows = tokenizer.encode_windows(LONG).unwrap();
    assert!(windows.len() > 2);
    let inner: Vec<&[u32]> = windows.iter().map(|w| &w.ids[1..w.ids.len() - 1]).collect();
    for pair in inner.windows(2) {
        assert_eq!(pair[0][pair[0].len() - 4..], pair[1][..4]);
    }
    let mut joined = inner[0].to_vec();
    for part in &inner[1..] {
        joined.extend_from_slice(&part[4..]);
    }
    assert_eq!(joined, whole.ids[1..whole.ids.len() - 1]);
    assert!(windows
        .iter()
        .all(|w| w.ids.len() <= 16 && w.type_ids.iter().all(|&t| t == 0)));
}

#[test]
fn chunked_embeddings_average_the_windows() {
    let embed_options = EmbedOptions {
        pipeline: options(16),
        normalize: Some(true),
        ..Default::default()
    };
    let chunked = Embedder::load(&fixture("tiny-base"), &embed_options)
        .unwrap()
        .with_long_text(LongText::Chunk { stride: 4 })
        .unwrap();
    let plain = Embedder::load(&fixture("tiny-base"), &embed_options).unwrap();
    // A short text: one window, the same vector as without chunking.
    let short = chunked.embed_long(&["the sea"]).unwrap();
    let same = plain.embed_texts(&["the sea"]).unwrap();
    assert!(short[0]
        .iter()
        .zip(&same[0])
        .all(|(a, b)| (a - b).abs() < 1e-6));
    // A long text: the normalised mean of its windows' unnormalised vectors.
    let raw = Embedder::load(
        &fixture("tiny-base"),
        &EmbedOptions {
            pipeline: options(16),
            normalize: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let windows = bert::Tokenizer::from_dir(&fixture("tiny-base"))
        .unwrap()
        .with_windows(16, 4)
        .unwrap()
        .encode_windows(LONG)
        .unwrap();
    let vectors = raw.embed(&windows).unwrap();
    let mut mean = vec![0f32; vectors[0].len()];
    for v in &vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x / vectors.len() as f32;
        }
    }
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    let long = chunked.embed_long(&[LONG]).unwrap();
    let diff: Vec<f32> = long[0]
        .iter()
        .zip(&mean)
        .map(|(a, m)| a - m / norm)
        .collect();
    let diff = candle_core::Tensor::new(diff, &candle_core::Device::Cpu).unwrap();
    assert!(max_abs(&diff) < 1e-5);
    // And it differs from the truncated text's vector: the rest of the text counts.
    let truncated = plain.embed_texts(&[LONG]).unwrap();
    assert!(long[0]
        .iter()
        .zip(&truncated[0])
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn chunked_classification_averages_label_scores() {
    let classifier = TextClassifier::load(&fixture("tiny-classify"), &options(16), None)
        .unwrap()
        .with_long_text(LongText::Chunk { stride: 4 })
        .unwrap();
    let plain = TextClassifier::load(&fixture("tiny-classify"), &options(16), None).unwrap();
    let long = &classifier.classify_long(&[LONG]).unwrap()[0];
    let sum: f32 = long.scores.iter().map(|s| s.score).sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "averaged softmax scores still sum to 1"
    );
    let short = &classifier.classify_long(&["a good movie"]).unwrap()[0];
    let direct = &plain
        .classify(&[plain.encode("a good movie").unwrap()])
        .unwrap()[0];
    assert_eq!(short.top().label, direct.top().label);
    assert!((short.top().score - direct.top().score).abs() < 1e-6);
}
