//! The question-answering pipeline against `transformers`' (4.57, the last with one) on the tiny QA
//! checkpoint: top-k answers, spans widened to words, the longest-answer limit, the impossible answer,
//! and windows over a long context give the same answers, offsets and scores (1e-5).

use crate::common::fixture;
use bert::pipelines::{PipelineOptions, QaOptions, QuestionAnswerer};
use serde_json::Value;

#[test]
fn answers_match_transformers_pipeline() {
    let dir = fixture("tiny-qa");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pipeline.json")).unwrap()).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let settings = &case["settings"];
        let defaults = QaOptions::default();
        let get =
            |key: &str, default: usize| settings[key].as_u64().map_or(default, |v| v as usize);
        let options = QaOptions {
            top_k: get("top_k", defaults.top_k),
            max_answer_len: get("max_answer_len", defaults.max_answer_len),
            handle_impossible_answer: settings["handle_impossible_answer"]
                .as_bool()
                .unwrap_or(false),
            max_seq_len: get("max_seq_len", defaults.max_seq_len),
            doc_stride: settings["doc_stride"].as_u64().map(|v| v as usize),
        };
        let qa = QuestionAnswerer::load(&dir, &PipelineOptions::default(), options).unwrap();
        let (question, context) = (
            case["question"].as_str().unwrap(),
            case["context"].as_str().unwrap(),
        );
        let windows = qa.encode(question, context).unwrap();
        for w in &windows {
            eprintln!(
                "{} {:?} {:?}",
                w.ids.len(),
                &w.tokens[10..14],
                &w.tokens[w.tokens.len() - 4..]
            );
        }
        let answers = qa.answer(context, &windows).unwrap();
        let expected = case["answers"].as_array().unwrap();
        assert_eq!(answers.len(), expected.len(), "{settings}: {answers:?}");
        for (got, want) in answers.iter().zip(expected) {
            assert_eq!(got.answer, want["answer"].as_str().unwrap(), "{settings}");
            assert_eq!(
                got.start as u64,
                want["start"].as_u64().unwrap(),
                "{settings}"
            );
            assert_eq!(got.end as u64, want["end"].as_u64().unwrap(), "{settings}");
            let score = want["score"].as_f64().unwrap();
            assert!(
                (f64::from(got.score) - score).abs() < 1e-5,
                "{settings}: {got:?} vs {want}"
            );
        }
    }
}

#[test]
fn windows_cover_the_context_with_the_stride_shared() {
    let tokenizer = bert::Tokenizer::from_dir(&fixture("tiny-qa"))
        .unwrap()
        .with_truncation(64, bert::Truncation::LongestFirst)
        .unwrap()
        .with_windows(32, 8)
        .unwrap();
    let context = "The people of the north country wrote the story. Paris is the capital of France, and \
        the sea is far from the farm. Each day the sun is hot and the water is cold. Who wrote this \
        story? They did, in the school of the city, while the tree grew.";
    let whole = bert::Tokenizer::from_dir(&fixture("tiny-qa"))
        .unwrap()
        .encode(context)
        .unwrap();
    let n = whole.ids.len() - 2;
    assert!(
        n > 64,
        "the context must be longer than the tokenizer's own truncation"
    );
    let windows = tokenizer
        .encode_pair_windows("who wrote it", context)
        .unwrap();
    let parts: Vec<Vec<u32>> = windows
        .iter()
        .map(|w| {
            assert!(w.ids.len() <= 32);
            (0..w.ids.len())
                .filter(|&i| w.type_ids[i] == 1 && w.special_tokens_mask[i] == 0)
                .map(|i| w.ids[i])
                .collect()
        })
        .collect();
    for pair in parts.windows(2) {
        assert_eq!(
            pair[0][pair[0].len() - 8..],
            pair[1][..8],
            "neighbours share 8 tokens"
        );
    }
    let covered: usize = parts.iter().map(Vec::len).sum::<usize>() - 8 * (parts.len() - 1);
    assert_eq!(covered, n);
    assert_eq!(
        parts.concat().last(),
        whole.ids[..whole.ids.len() - 1].last()
    );
}

#[test]
fn a_long_question_with_a_short_context_fits_one_window() {
    let tokenizer = bert::Tokenizer::from_dir(&fixture("tiny-qa"))
        .unwrap()
        .with_windows(32, 8)
        .unwrap();
    // 24 question tokens leave 5 for context: fewer than the stride, but "paris" fits.
    let question = "who wrote the story of the people of the north country and the sea and the farm and the city";
    let windows = tokenizer.encode_pair_windows(question, "paris").unwrap();
    assert_eq!(windows.len(), 1);
    assert!(windows[0].ids.len() <= 32);
    let empty = tokenizer.encode_pair_windows("where", "").unwrap();
    assert_eq!(empty.len(), 1);
    assert!(tokenizer.encode_windows("").unwrap().len() == 1);
}
