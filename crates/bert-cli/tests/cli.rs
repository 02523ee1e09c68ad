//! The `bert` binary end to end: JSON Lines outputs of each command, per-line errors for bad input lines
//! (the rest still processed), clear fatal errors with exit code 2, the truncation note, and `--help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bert/tests/fixtures");
    root.join(name).display().to_string()
}

/// Runs `bert` with `args`, feeding `stdin`.
fn bert(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tokenize_outputs_tokens_ids_types_and_offsets() {
    let out = bert(
        &["tokenize", "--model", &fixture("tiny-base"), "中 Sea"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &lines(&out)[0];
    assert_eq!(v["text"], "中 Sea");
    assert_eq!(
        v["tokens"],
        serde_json::json!(["[CLS]", "中", "sea", "[SEP]"])
    );
    assert_eq!(v["type_ids"], serde_json::json!([0, 0, 0, 0]));
    assert_eq!(
        v["offsets"],
        serde_json::json!([[0, 0], [0, 1], [2, 5], [0, 0]]),
        "character offsets"
    );
    assert_eq!(v["ids"].as_array().unwrap().len(), 4);
}

#[test]
fn tokenize_reads_pairs_as_json_lines() {
    let input = b"{\"text\": \"who\", \"text_pair\": \"paris\"}\n";
    let out = bert(
        &["tokenize", "--model", &fixture("tiny-base"), "--jsonl"],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &lines(&out)[0];
    assert_eq!(v["type_ids"], serde_json::json!([0, 0, 0, 1, 1]));
    assert_eq!(v["text_pair"], "paris");
}

#[test]
fn bad_lines_fail_alone_and_in_place() {
    let input = b"a good movie\n\n\xff\xfe broken\n   \nthe sea\n";
    let out = bert(&["embed", "--model", &fixture("tiny-base")], input);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = lines(&out);
    assert_eq!(v.len(), 5, "one output line per input line");
    assert_eq!(v[0]["embedding"].as_array().unwrap().len(), 32);
    assert_eq!(v[1]["line"], 2);
    assert_eq!(v[1]["error"], "empty input");
    assert_eq!(v[2]["line"], 3);
    assert!(v[2]["error"].as_str().unwrap().contains("invalid UTF-8"));
    assert_eq!(v[3]["line"], 4);
    assert_eq!(v[4]["text"], "the sea");
    let err = stderr(&out);
    assert!(
        err.contains("line 2: empty input") && err.contains("line 3: invalid UTF-8"),
        "{err}"
    );
}

#[test]
fn long_texts_are_truncated_with_one_note() {
    let long = "the sea ".repeat(100);
    let input = format!("{long}\n{long}\nshort\n");
    let out = bert(
        &[
            "embed",
            "--model",
            &fixture("tiny-base"),
            "--batch-size",
            "2",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 3);
    let err = stderr(&out);
    assert_eq!(err.matches("truncated").count(), 1, "{err}");
    assert!(err.contains("64 tokens"), "the tiny model's maximum: {err}");
}

#[test]
fn embed_options_change_the_vector() {
    let model = fixture("tiny-base");
    let norm = |args: &[&str]| -> f64 {
        let mut all = vec!["embed", "--model", &model];
        all.extend_from_slice(args);
        all.push("a good movie");
        let out = bert(&all, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let v = &lines(&out)[0]["embedding"];
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt()
    };
    assert!((norm(&["--normalize"]) - 1.0).abs() < 1e-5);
    assert!((norm(&["--pooling", "cls", "--normalize"]) - 1.0).abs() < 1e-5);
    assert!(
        (norm(&[]) - 1.0).abs() > 1e-3,
        "no sentence-transformers files: not normalised by default"
    );
}

#[test]
fn fill_mask_predicts_each_mask() {
    let model = fixture("tiny-mlm");
    let out = bert(
        &[
            "fill-mask",
            "--model",
            &model,
            "--top-k",
            "3",
            "the capital of france is [MASK].",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &lines(&out)[0];
    let predictions = v["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    let scores: Vec<f64> = predictions
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let token = predictions[0]["token"].as_str().unwrap();
    assert_eq!(
        predictions[0]["sequence"].as_str().unwrap(),
        format!("the capital of france is {token}.")
    );

    let out = bert(
        &["fill-mask", "--model", &model],
        b"no mask here\n[MASK] and [MASK]\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let v = lines(&out);
    assert!(v[0]["error"].as_str().unwrap().contains("[MASK]"));
    assert_eq!(
        v[1]["predictions"].as_array().unwrap().len(),
        2,
        "one list per mask"
    );
}

#[test]
fn classify_uses_id2label_and_softmax() {
    let out = bert(
        &[
            "classify",
            "--model",
            &fixture("tiny-classify"),
            "a good movie",
            "a bad movie",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for v in lines(&out) {
        let scores = v["scores"].as_object().unwrap();
        let labels: Vec<&str> = scores.keys().map(String::as_str).collect();
        assert_eq!(labels, ["negative", "neutral", "positive"]);
        let sum: f64 = scores.values().map(|s| s.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert_eq!(v["score"], scores[v["label"].as_str().unwrap()]);
    }
    // Multi-label heads score each label independently (sigmoid).
    let out = bert(
        &[
            "classify",
            "--model",
            &fixture("tiny-multilabel"),
            "--top-k",
            "2",
            "a good movie",
        ],
        b"",
    );
    let v = &lines(&out)[0];
    assert_eq!(v["scores"].as_object().unwrap().len(), 2);
}

#[test]
fn a_checkpoint_without_a_head_warns() {
    let out = bert(
        &["classify", "--model", &fixture("tiny-base"), "a good movie"],
        b"",
    );
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("newly initialized: classifier.bias, classifier.weight"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fatal_errors_name_the_problem_and_exit_2() {
    let out = bert(&["embed", "--model", "/no/such/model", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/model"), "{}", stderr(&out));

    let out = bert(
        &[
            "embed",
            "--model",
            &fixture("tiny-base"),
            "--max-length",
            "1000",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--max-length 1000"),
        "{}",
        stderr(&out)
    );

    let out = bert(
        &[
            "tokenize",
            "--model",
            &fixture("tiny-base"),
            "--truncation",
            "sideways",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sideways"), "{}", stderr(&out));
}

#[test]
fn a_corrupt_checkpoint_stops_with_its_name() {
    let dir = std::env::temp_dir().join(format!("bert-cli-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(PathBuf::from(fixture("tiny-base")).join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage",
    )
    .unwrap();
    let out = bert(&["embed", "--model", &dir.display().to_string(), "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("model.safetensors"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn bad_json_lines_fail_alone() {
    let input = b"{\"text\": \"the sea\"}\nnot json\n{\"text\": \"a movie\", \"label\": 1}\n";
    let out = bert(
        &["classify", "--model", &fixture("tiny-classify"), "--jsonl"],
        input,
    );
    assert_eq!(out.status.code(), Some(1));
    let v = lines(&out);
    assert_eq!(v.len(), 3);
    assert!(v[1]["error"].as_str().unwrap().contains("invalid JSON"));
    assert_eq!(v[2]["text"], "a movie", "extra fields are allowed");
    // A pair where the command takes single texts.
    let out = bert(
        &["embed", "--model", &fixture("tiny-base"), "--jsonl"],
        b"{\"text\": \"a\", \"text_pair\": \"b\"}\n",
    );
    assert!(lines(&out)[0]["error"]
        .as_str()
        .unwrap()
        .contains("text_pair"));
}

#[test]
fn help_explains_every_flag() {
    for command in ["tokenize", "embed", "fill-mask", "classify"] {
        let out = bert(&[command, "--help"], b"");
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in [
            "--model",
            "--max-length",
            "--batch-size",
            "--revision",
            "--truncation",
        ] {
            assert!(help.contains(flag), "`bert {command} --help` lacks {flag}");
        }
    }
}

/// `bert embed` on the real all-MiniLM-L6-v2 (from `BERT_TEST_MODELS`) matches sentence-transformers
/// within 1e-4, with the checkpoint's own mean pooling and normalisation.
#[test]
fn embed_matches_sentence_transformers_on_minilm() {
    let Some(models) = std::env::var_os("BERT_TEST_MODELS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs BERT_TEST_MODELS"
        );
        eprintln!("skipped: set BERT_TEST_MODELS to the directory holding all-MiniLM-L6-v2");
        return;
    };
    let model = PathBuf::from(models).join("all-MiniLM-L6-v2");
    let reference = std::fs::read_to_string(fixture("minilm/embeddings.jsonl")).unwrap();
    let cases: Vec<Value> = reference
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let input: String = cases
        .iter()
        .map(|c| format!("{}\n", c["text"].as_str().unwrap()))
        .collect();
    let out = bert(
        &["embed", "--model", &model.display().to_string()],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = lines(&out);
    assert_eq!(got.len(), cases.len());
    for (case, line) in cases.iter().zip(&got) {
        assert_eq!(case["text"], line["text"]);
        let expected = case["embedding"].as_array().unwrap();
        let actual = line["embedding"].as_array().unwrap();
        let worst = expected
            .iter()
            .zip(actual)
            .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
            .fold(0f64, f64::max);
        assert!(worst <= 1e-4, "{}: {worst}", case["text"]);
    }
}
