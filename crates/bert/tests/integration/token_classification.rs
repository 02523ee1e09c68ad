//! The token-classification pipeline against `transformers`' on the tiny NER checkpoint: every
//! aggregation strategy gives the same entities, words, offsets and scores (1e-5).

use crate::common::fixture;
use bert::pipelines::{Aggregation, PipelineOptions, TokenClassifier};
use serde_json::Value;

#[test]
fn every_aggregation_strategy_matches_transformers() {
    let dir = fixture("tiny-ner");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pipeline.json")).unwrap()).unwrap();
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let tagger = TokenClassifier::load(&dir, &PipelineOptions::default()).unwrap();
    let encodings: Vec<_> = texts.iter().map(|t| tagger.encode(t).unwrap()).collect();
    for (name, expected) in reference["outputs"].as_object().unwrap() {
        let aggregation: Aggregation = name.parse().unwrap();
        let got = tagger.tag(&texts, &encodings, aggregation, &[]).unwrap();
        for (text, (entities, want)) in texts
            .iter()
            .zip(got.iter().zip(expected.as_array().unwrap()))
        {
            let want = want.as_array().unwrap();
            assert_eq!(entities.len(), want.len(), "{name}: {text}: {entities:?}");
            for (e, w) in entities.iter().zip(want) {
                let mut got = serde_json::to_value(e).unwrap();
                let score = got["score"].as_f64().unwrap();
                assert!(
                    (score - w["score"].as_f64().unwrap()).abs() < 1e-5,
                    "{name}: {text}: {got} vs {w}"
                );
                got["score"] = w["score"].clone();
                assert_eq!(&got, w, "{name}: {text}");
            }
        }
    }
}

#[test]
fn o_is_ignored_by_default_in_the_cli_sense() {
    let dir = fixture("tiny-ner");
    let tagger = TokenClassifier::load(&dir, &PipelineOptions::default()).unwrap();
    let text = "Peter and Mary saw the sea.";
    let encodings = vec![tagger.encode(text).unwrap()];
    let all = tagger
        .tag(&[text], &encodings, Aggregation::None, &[])
        .unwrap();
    let kept = tagger
        .tag(&[text], &encodings, Aggregation::None, &["O".to_string()])
        .unwrap();
    let non_o = all[0]
        .iter()
        .filter(|e| e.entity.as_deref() != Some("O"))
        .count();
    assert_eq!(kept[0].len(), non_o);
}
