//! Tokenizer parity with the Hugging Face fast tokenizer: a tokenizer built from `vocab.txt` (cased and
//! uncased) gives the same ids, token types and character offsets on varied text, pairs are truncated by
//! each strategy as `transformers` truncates them, and `tokenizer.json` agrees with `vocab.txt`.

use crate::common::fixture;
use bert::{Tokenizer, Truncation};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    tokenizer: String,
    text: String,
    pair: Option<String>,
    truncation: Option<String>,
    max_length: Option<usize>,
    ids: Option<Vec<u32>>,
    type_ids: Option<Vec<u32>>,
    offsets: Option<Vec<(usize, usize)>>,
    #[serde(default)]
    error: bool,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("tokenizer/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vocab_txt_tokenizers_match_the_fast_tokenizer() {
    let cases = cases();
    assert!(cases.len() > 200);
    for case in &cases {
        let mut tokenizer =
            Tokenizer::from_dir(&fixture("tokenizer").join(&case.tokenizer)).unwrap();
        if let (Some(n), Some(strategy)) = (case.max_length, &case.truncation) {
            tokenizer = tokenizer
                .with_truncation(n, strategy.parse().unwrap())
                .unwrap();
        }
        let got = match &case.pair {
            Some(pair) => tokenizer.encode_pair(&case.text, pair),
            None => tokenizer.encode(&case.text),
        };
        let what = format!(
            "{} {:?} / {:?} {:?}",
            case.tokenizer, case.text, case.pair, case.truncation
        );
        if case.error {
            assert!(got.is_err(), "{what}: expected an error");
            continue;
        }
        let got = got.unwrap();
        assert_eq!(Some(&got.ids), case.ids.as_ref(), "{what}: ids");
        assert_eq!(
            Some(&got.type_ids),
            case.type_ids.as_ref(),
            "{what}: type ids"
        );
        assert_eq!(Some(&got.offsets), case.offsets.as_ref(), "{what}: offsets");
    }
}

#[test]
fn tokenizer_json_agrees_with_vocab_txt() {
    let from_json = Tokenizer::from_dir(&fixture("tiny-base")).unwrap();
    let from_vocab = Tokenizer::from_dir(&fixture("tokenizer/uncased")).unwrap();
    for case in cases()
        .iter()
        .filter(|c| c.tokenizer == "uncased" && c.pair.is_none())
    {
        assert_eq!(
            from_json.encode(&case.text).unwrap(),
            from_vocab.encode(&case.text).unwrap(),
            "{:?}",
            case.text
        );
    }
}

#[test]
fn truncation_is_reported_and_special_tokens_are_kept() {
    let tokenizer = Tokenizer::from_dir(&fixture("tiny-base"))
        .unwrap()
        .with_truncation(5, Truncation::LongestFirst)
        .unwrap();
    let e = tokenizer.encode("the capital of france is paris").unwrap();
    assert!(e.truncated);
    assert_eq!(e.ids.len(), 5);
    assert_eq!(e.tokens.first().map(String::as_str), Some("[CLS]"));
    assert_eq!(e.tokens.last().map(String::as_str), Some("[SEP]"));
    let short = tokenizer.encode("the").unwrap();
    assert!(!short.truncated);
}

#[test]
fn special_tokens_in_text_stay_whole() {
    let tokenizer = Tokenizer::from_dir(&fixture("tokenizer/uncased")).unwrap();
    let e = tokenizer.encode("a [MASK] movie").unwrap();
    assert!(e.tokens.contains(&"[MASK]".to_string()), "{:?}", e.tokens);
}

#[test]
fn missing_tokenizer_files_name_the_directory() {
    let dir = std::env::temp_dir().join(format!("bert-no-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Tokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("no tokenizer.json or vocab.txt") && err.contains(&dir.display().to_string()),
        "{err}"
    );
    std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
    let err = Tokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn padding_and_truncation_inside_tokenizer_json_are_ignored() {
    // As all-MiniLM-L6-v2's file does: fixed padding and truncation baked into tokenizer.json.
    let dir = std::env::temp_dir().join(format!("bert-padded-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-base/tokenizer.json")).unwrap(),
    )
    .unwrap();
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 20}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    json["truncation"] = serde_json::json!({"max_length": 4, "strategy": "LongestFirst", "stride": 0, "direction": "Right"});
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let e = tokenizer.encode("the capital of france is paris").unwrap();
    assert_eq!(
        e.tokens.len(),
        8,
        "neither padded to 20 nor truncated to 4: {:?}",
        e.tokens
    );
    let truncated = tokenizer
        .with_truncation(6, Truncation::LongestFirst)
        .unwrap();
    assert_eq!(
        truncated
            .encode("the capital of france is paris")
            .unwrap()
            .ids
            .len(),
        6
    );
}
