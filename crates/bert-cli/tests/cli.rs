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
fn inputs_across_many_windows_come_back_in_order_with_their_errors() {
    // --batch-size 1: windows of 8 inputs, each read and tokenized while the one before runs.
    let texts: Vec<String> = (0..30)
        .map(|i| match i {
            11 | 25 => String::new(),
            _ => format!("{} the sea", "word ".repeat(i % 7)),
        })
        .collect();
    let input = texts.join("\n") + "\n";
    let model = fixture("tiny-base");
    let out = bert(
        &["embed", "--model", &model, "--batch-size", "1"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = lines(&out);
    assert_eq!(v.len(), 30, "one output line per input line");
    for (i, (line, text)) in v.iter().zip(&texts).enumerate() {
        if text.is_empty() {
            assert_eq!(
                (line["line"].as_u64(), &line["error"]),
                (Some(i as u64 + 1), &Value::from("empty input"))
            );
        } else {
            assert_eq!(line["text"], text.as_str(), "line {}", i + 1);
        }
    }
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
        let mut labels: Vec<&str> = scores.keys().map(String::as_str).collect();
        labels.sort();
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

/// A small corpus: `documents` documents of sentences over the tiny vocabulary's words.
fn tiny_corpus(dir: &std::path::Path, documents: usize) -> PathBuf {
    let words = [
        "the", "sea", "city", "tree", "water", "school", "food", "story", "night", "life",
    ];
    let mut text = String::new();
    for d in 0..documents {
        for s in 0..6 {
            let (a, b) = (
                words[(d + s) % words.len()],
                words[(d * 3 + s * 7) % words.len()],
            );
            text.push_str(&format!("the {a} of the {b} is the {a} .\n"));
        }
        text.push('\n');
    }
    text.push_str("\u{fffd}ok\n");
    let path = dir.join("corpus.txt");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\xff\xfe not utf-8\n");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn vocab_then_pretrain_then_fill_mask() {
    let dir = std::env::temp_dir().join(format!("bert-cli-pretrain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = tiny_corpus(&dir, 30);
    let vocab = dir.join("vocab");
    let out = bert(
        &[
            "vocab",
            "--vocab-size",
            "60",
            "--lowercase",
            "--out",
            vocab.to_str().unwrap(),
            corpus.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tokens = std::fs::read_to_string(vocab.join("vocab.txt")).unwrap();
    assert!(
        tokens.starts_with("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"),
        "{tokens}"
    );
    assert!(vocab.join("tokenizer.json").exists() && vocab.join("tokenizer_config.json").exists());
    // A second vocabulary into the same directory needs --overwrite; the first is left as it was.
    let vocab_args = [
        "vocab",
        "--vocab-size",
        "50",
        "--out",
        vocab.to_str().unwrap(),
        corpus.to_str().unwrap(),
    ];
    let again = bert(&vocab_args, b"");
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(vocab.join("vocab.txt")).unwrap(),
        tokens
    );
    let mut replace = vocab_args.to_vec();
    replace.push("--overwrite");
    assert!(bert(&replace, b"").status.success());
    assert_ne!(
        std::fs::read_to_string(vocab.join("vocab.txt")).unwrap(),
        tokens
    );
    let original = [
        "vocab",
        "--vocab-size",
        "60",
        "--lowercase",
        "--overwrite",
        "--out",
        vocab.to_str().unwrap(),
        corpus.to_str().unwrap(),
    ];
    assert!(bert(&original, b"").status.success());
    // (The tokenizers trainer breaks ties between equally frequent pairs in hash order, so a second
    // run may pick other pieces: compare sizes, not contents.)
    let rewritten = std::fs::read_to_string(vocab.join("vocab.txt")).unwrap();
    assert_eq!(rewritten.lines().count(), tokens.lines().count());

    let run = dir.join("run");
    let args = [
        "pretrain",
        corpus.to_str().unwrap(),
        "--tokenizer",
        vocab.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--size",
        "tiny",
        "--max-seq-length",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--eval-documents",
        "3",
        "--eval-stride",
        "5",
        "--save-every",
        "3",
        "--log-every",
        "1",
    ];
    let out = bert(&args, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("step 6/6")
            && err.contains("eval at step 6")
            && err.contains("skipped 1 corpus lines"),
        "{err}"
    );
    assert!(run.join("checkpoint-6").exists() && run.join("loss.png").exists());
    let out = bert(
        &[
            "fill-mask",
            "--model",
            run.to_str().unwrap(),
            "the [MASK] of the city",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["predictions"].as_array().unwrap().len(), 5);

    // With --gradient-checkpointing: the same losses, step for step.
    let checkpointed = dir.join("checkpointed");
    let mut with_flag: Vec<&str> = args.to_vec();
    with_flag[5] = checkpointed.to_str().unwrap();
    with_flag.push("--gradient-checkpointing");
    let out = bert(&with_flag, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let losses = |run: &std::path::Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (plain, recomputed) = (losses(&run), losses(&checkpointed));
    assert!(plain.len() >= 6, "{plain:?}");
    assert_eq!(plain.len(), recomputed.len());
    for (a, b) in plain.iter().zip(&recomputed) {
        assert!((a - b).abs() < 1e-4, "{plain:?} vs {recomputed:?}");
    }

    // The same command again: refused, nothing overwritten.
    let out = bert(&args, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("holds another run"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigint_saves_a_checkpoint_and_resume_continues() {
    let dir = std::env::temp_dir().join(format!("bert-cli-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = tiny_corpus(&dir, 30);
    let run = dir.join("run");
    let tokenizer = fixture("tokenizer/uncased");
    let config = fixture("tiny-base/config.json");
    let args = |steps: &'static str| {
        vec![
            "pretrain".to_string(),
            corpus.display().to_string(),
            "--tokenizer".into(),
            tokenizer.clone(),
            "--config".into(),
            config.clone(),
            "--out".into(),
            run.display().to_string(),
            "--max-seq-length".into(),
            "32".into(),
            "--batch-size".into(),
            "4".into(),
            "--max-steps".into(),
            steps.into(),
            "--log-every".into(),
            "1".into(),
            "--eval-documents".into(),
            "0".into(),
        ]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(args("1000000"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr_lines, &mut line).unwrap() > 0
        && !line.contains("step 3/")
    {
        line.clear();
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_lines, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("saved") && rest.contains("--resume"),
        "{rest}"
    );
    let saved: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let step: usize = saved[0]["checkpoint-".len()..].parse().unwrap();

    let mut resume = args("1000000");
    let steps = (step + 2).to_string();
    let at = resume.iter().position(|a| a == "1000000").unwrap();
    resume[at] = steps.clone();
    resume.push("--resume".into());
    let out = Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(&resume)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("resuming at step {step}"))
            && err.contains(&format!("step {steps}/{steps}")),
        "{err}"
    );
}

#[test]
fn classify_needs_a_model() {
    let out = bert(&["classify", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--model is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_bundled_model_serves_without_a_model_flag() {
    let out = bert(
        &[
            "fill-mask",
            "--top-k",
            "2",
            "in the beginning god created the [MASK].",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["predictions"].as_array().unwrap().len(), 2);
    let out = bert(&["tokenize", "and god said"], b"");
    assert_eq!(
        lines(&out)[0]["tokens"],
        serde_json::json!(["[CLS]", "and", "god", "said", "[SEP]"])
    );
    // An English and French sentence encoder: a verse is nearer its translation than another verse.
    let out = bert(
        &[
            "embed",
            "And God said, Let there be light: and there was light.",
            "Dieu dit: Que la lumière soit! Et la lumière fut.",
            "Jesus wept.",
        ],
        b"",
    );
    let vectors: Vec<Vec<f64>> = (lines(&out).iter())
        .map(|l| {
            (l["embedding"].as_array().unwrap().iter())
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (translation, other) = (dot(&vectors[0], &vectors[1]), dot(&vectors[0], &vectors[2]));
    assert!(translation > other + 0.2, "{translation} vs {other}");
}

#[test]
fn finetune_classify_then_classify_with_the_result() {
    let dir = std::env::temp_dir().join(format!("bert-cli-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from(",review,sentiment\n");
    for (i, subject) in ["movie", "story", "day", "city"].iter().enumerate() {
        csv.push_str(&format!("{},the {subject} was good,pos\n", 2 * i));
        csv.push_str(&format!(
            "{},\"the {subject} was bad, terrible\",neg\n",
            2 * i + 1
        ));
    }
    std::fs::write(dir.join("train.csv"), &csv).unwrap();
    // The test set: the training sentences with every label swapped, so the model scores 0.
    let swapped = csv
        .replace(",pos", ",tmp")
        .replace(",neg", ",pos")
        .replace(",tmp", ",neg");
    std::fs::write(dir.join("test.csv"), swapped).unwrap();
    let out = dir.join("model");
    let (model, train) = (fixture("tiny-base"), dir.join("train.csv"));
    let test = dir.join("test.csv");
    let base = [
        "finetune",
        "--model",
        &model,
        "--train",
        train.to_str().unwrap(),
        "--eval",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--epochs",
        "20",
        "--batch-size",
        "4",
        "--learning-rate",
        "2e-3",
        "--metric-for-best",
        "accuracy",
        "--test",
        test.to_str().unwrap(),
    ];
    let run = bert(&base, b"");
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("best: "), "{}", stderr(&run));
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["accuracy"], 1.0, "{results}");
    let tested: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("test_results.json")).unwrap())
            .unwrap();
    assert_eq!(tested["accuracy"], 0.0, "{tested}");
    assert!(stderr(&run).contains("test: "), "{}", stderr(&run));
    let classified = bert(
        &[
            "classify",
            "--model",
            out.to_str().unwrap(),
            "the city was good",
        ],
        b"",
    );
    assert!(classified.status.success(), "{}", stderr(&classified));
    assert_eq!(lines(&classified)[0]["label"], "pos");

    // The output directory now holds a run: a second one needs --overwrite.
    let again = bert(&base, b"");
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));

    // A missing column names the columns the file has.
    let mut wrong = base.to_vec();
    wrong[10] = "text";
    wrong.push("--overwrite");
    let missing = bert(&wrong, b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no column `text`") && stderr(&missing).contains("`review`"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn ner_groups_entities_and_drops_ignored_labels() {
    let model = fixture("tiny-ner");
    let text = "Peter and Mary saw the sea from the north country.";
    let tokens = bert(
        &["ner", "--model", &model, "--ignore-labels", "", text],
        b"",
    );
    assert!(tokens.status.success(), "{}", stderr(&tokens));
    let all = lines(&tokens)[0]["entities"].as_array().unwrap().clone();
    assert!(all
        .iter()
        .all(|e| e["entity"].is_string() && e["index"].is_u64()));
    let grouped = bert(
        &[
            "ner",
            "--model",
            &model,
            "--aggregation-strategy",
            "first",
            text,
        ],
        b"",
    );
    assert!(grouped.status.success(), "{}", stderr(&grouped));
    let line = &lines(&grouped)[0];
    assert_eq!(line["text"], text);
    for e in line["entities"].as_array().unwrap() {
        assert_ne!(e["entity_group"], "O");
        let (start, end) = (e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap());
        assert!(start < end && end as usize <= text.len(), "{e}");
    }
    let bad = bert(
        &[
            "ner",
            "--model",
            &model,
            "--aggregation-strategy",
            "mean",
            text,
        ],
        b"",
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("none, simple, first, average or max"));
}

#[test]
fn qa_answers_from_the_context_and_reports_bad_lines() {
    let model = fixture("tiny-qa");
    let context = "The people of the north country wrote the story.";
    let out = bert(
        &[
            "qa",
            "--model",
            &model,
            "--context",
            context,
            "--top-k",
            "2",
            "who wrote it?",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line = &lines(&out)[0];
    assert_eq!(line["question"], "who wrote it?");
    let (start, end) = (
        line["start"].as_u64().unwrap() as usize,
        line["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(line["answer"], context[start..end]);
    assert_eq!(line["answers"].as_array().unwrap().len(), 2);
    // JSON Lines carry their own contexts; a line without one is an error line, the rest proceed.
    let stdin =
        b"{\"question\": \"where\", \"context\": \"in paris\"}\n{\"question\": \"where\"}\n";
    let out = bert(&["qa", "--model", &model, "--jsonl"], stdin);
    assert_eq!(out.status.code(), Some(1));
    let results = lines(&out);
    assert!(results[0]["answer"].is_string());
    assert_eq!(results[1]["line"], 2);
    assert!(results[1]["error"].as_str().unwrap().contains("no context"));
    let missing = bert(&["qa", "--model", &model, "where"], b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("--context"));
}

#[test]
fn long_texts_can_be_chunked_instead_of_truncated() {
    let model = fixture("tiny-classify");
    let long = "the people of the north country wrote the story while the sun was hot and the sea was far from the farm";
    let truncated = bert(
        &["classify", "--model", &model, "--max-length", "12", long],
        b"",
    );
    assert!(
        stderr(&truncated).contains("truncated"),
        "{}",
        stderr(&truncated)
    );
    let chunked = bert(
        &[
            "classify",
            "--model",
            &model,
            "--max-length",
            "12",
            "--long-text",
            "chunk",
            long,
        ],
        b"",
    );
    assert!(chunked.status.success(), "{}", stderr(&chunked));
    assert!(
        !stderr(&chunked).contains("truncated"),
        "{}",
        stderr(&chunked)
    );
    assert_ne!(lines(&chunked)[0]["scores"], lines(&truncated)[0]["scores"]);
    let embedded = bert(
        &[
            "embed",
            "--model",
            &fixture("tiny-base"),
            "--max-length",
            "12",
            "--long-text",
            "chunk",
            "--stride",
            "2",
            long,
        ],
        b"",
    );
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    assert_eq!(
        lines(&embedded)[0]["embedding"].as_array().unwrap().len(),
        32
    );
    let pair = bert(
        &[
            "classify",
            "--model",
            &model,
            "--long-text",
            "chunk",
            "--jsonl",
        ],
        b"{\"text\": \"a\", \"text_pair\": \"b\"}\n",
    );
    assert_eq!(pair.status.code(), Some(1));
    assert!(lines(&pair)[0]["error"]
        .as_str()
        .unwrap()
        .contains("single texts"));
}

/// `bert serve` end to end: it says where it listens, answers curl-style requests, refuses a bad one
/// with a JSON error, and on SIGTERM finishes and exits 0.
#[test]
fn serve_answers_http_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(["serve", "--model", &fixture("tiny-mlm"), "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    while !line.contains("listening on") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stderr_lines, &mut line).unwrap();
        assert!(read > 0, "the server exited: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.contains("embed, fill-mask"), "{seen}");
    let url = line.trim().trim_start_matches("listening on ").to_string();

    let embed = ureq::post(&format!("{url}/embed"))
        .send_string(r#"{"inputs": ["the sea", "a good movie"]}"#)
        .unwrap();
    let vectors: Value = serde_json::from_str(&embed.into_string().unwrap()).unwrap();
    assert_eq!(vectors.as_array().unwrap().len(), 2);
    let fill = ureq::post(&format!("{url}/fill-mask"))
        .send_string(r#"{"inputs": "the [MASK] is calm"}"#)
        .unwrap();
    let fill: Value = serde_json::from_str(&fill.into_string().unwrap()).unwrap();
    assert_eq!(fill[0]["predictions"].as_array().unwrap().len(), 5);
    match ureq::post(&format!("{url}/predict")).send_string(r#"{"inputs": "x"}"#) {
        Err(ureq::Error::Status(400, response)) => {
            let body: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
            assert_eq!(body["error_type"], "unsupported");
        }
        other => panic!("expected a 400, got {:?}", other.map(|r| r.status())),
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_lines, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("shutting down"), "{rest}");
}

#[test]
fn serve_help_explains_its_limits() {
    let out = bert(&["serve", "--help"], b"");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--host",
        "--port",
        "--task",
        "--max-input-length",
        "--max-concurrent-requests",
        "--max-batch-tokens",
        "--max-client-batch-size",
        "--payload-limit",
        "--request-timeout",
        "--api-key",
        "BERT_API_KEY",
        "--auto-truncate",
    ] {
        assert!(help.contains(flag), "`bert serve --help` lacks {flag}");
    }
}

/// `bert index` then `bert search` (and `--update`) on a folder, with the tiny checkpoint.
#[test]
fn index_then_search_a_folder() {
    let dir = std::env::temp_dir().join(format!("bert-cli-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("sea.md"),
        "the sea was calm and the boat drifted home",
    )
    .unwrap();
    std::fs::write(
        docs.join("forest.txt"),
        "wolves howled in the dark forest at night",
    )
    .unwrap();
    let index = dir.join("index").display().to_string();
    let model = fixture("tiny-base");
    let docs_arg = docs.display().to_string();
    let out = bert(
        &["index", "--model", &model, "--out", &index, &docs_arg],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 files added"), "{}", stderr(&out));

    let out = bert(
        &["search", "--index", &index, "--top-k", "2"],
        b"wolves howled in the dark forest at night\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let hits = lines(&out);
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["rank"], 1);
    assert!(
        hits[0]["file"].as_str().unwrap().ends_with("forest.txt"),
        "{:?}",
        hits[0]
    );
    for key in ["query", "score", "file", "start", "end", "text"] {
        assert!(hits[0].get(key).is_some(), "{key} missing: {:?}", hits[0]);
    }

    let again = bert(
        &["index", "--model", &model, "--out", &index, &docs_arg],
        b"",
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--update"), "{}", stderr(&again));
    std::fs::write(
        docs.join("city.md"),
        "taxis and neon signs in the loud city",
    )
    .unwrap();
    let update = bert(
        &[
            "index", "--model", &model, "--out", &index, "--update", &docs_arg,
        ],
        b"",
    );
    assert!(
        stderr(&update).contains("1 files added, 0 changed, 2 unchanged"),
        "{}",
        stderr(&update)
    );

    let wrong = bert(
        &[
            "search",
            "--index",
            &index,
            "--model",
            &fixture("tiny-mlm"),
            "x",
        ],
        b"",
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("different model"),
        "{}",
        stderr(&wrong)
    );
}

/// `bert distill` is `bert finetune --task distill` with its own flags: without a teacher it stops
/// and says what is missing; with one, a short run writes a sentence-transformers directory that
/// `bert embed` reads, also for a student of fewer layers and a cut vocabulary that learns masked LM
/// beside.
#[test]
fn distill_needs_a_teacher_and_writes_a_sentence_encoder() {
    let dir = std::env::temp_dir().join(format!("bert-cli-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let train = dir.join("train.txt");
    std::fs::write(&train, "the sea\na good movie\nthe sky was great\n").unwrap();
    let (train, out) = (
        train.display().to_string(),
        dir.join("out").display().to_string(),
    );
    let student = fixture("tiny-mlm");
    let base = [
        "distill", "--model", &student, "--train", &train, "--out", &out,
    ];
    let missing = bert(&base, b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("--teacher"),
        "{}",
        stderr(&missing)
    );
    let teacher = fixture("tiny-base");
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--teacher", &teacher, "--epochs", "1"])
        .collect();
    let done = bert(&args, b"");
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(dir.join("out/modules.json").exists());
    let embedded = bert(&["embed", "--model", &out, "the sea"], b"");
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    assert_eq!(
        lines(&embedded)[0]["embedding"].as_array().unwrap().len(),
        32
    );
    // A student of every other layer of the teacher, its vocabulary cut to the sentences' pieces.
    let small = dir.join("small").display().to_string();
    let cut = bert(
        &[
            "distill",
            "--model",
            &teacher,
            "--teacher",
            &teacher,
            "--train",
            &train,
            "--out",
            &small,
            "--epochs",
            "1",
            "--keep-layers-every",
            "2",
            "--vocab-size",
            "60",
            "--eval",
            &train,
            "--mlm-text",
            &train,
            "--mlm-eval",
            &train,
        ],
        b"",
    );
    assert!(cut.status.success(), "{}", stderr(&cut));
    // With masked-LM text it is a fill-mask model too, its accuracy scored at each evaluation.
    assert!(stderr(&cut).contains("mlm_accuracy"), "{}", stderr(&cut));
    let filled = bert(&["fill-mask", "--model", &small, "the [MASK]"], b"");
    assert!(filled.status.success(), "{}", stderr(&filled));
    assert!(
        stderr(&cut).contains("vocabulary cut from 249 to"),
        "{}",
        stderr(&cut)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("small/config.json")).unwrap()).unwrap();
    assert!(config["vocab_size"].as_u64().unwrap() <= 60, "{config}");
    assert_eq!(config["num_hidden_layers"], 1);
    let embedded = bert(&["embed", "--model", &small, "the sea"], b"");
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    // Its own --help: distillation's flags, not the other tasks'.
    let help = String::from_utf8(bert(&["distill", "--help"], b"").stdout).unwrap();
    assert!(
        help.contains("--vocab-size")
            && help.contains("--projection")
            && help.contains("--mlm-text"),
        "{help}"
    );
    assert!(
        !help.contains("--text-column") && !help.contains("--doc-stride"),
        "{help}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
