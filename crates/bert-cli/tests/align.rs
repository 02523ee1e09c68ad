//! `bert align` end to end: pairs found in shuffled files name the right lines (on the real
//! all-MiniLM-L6-v2), the in-order mode keeps the order, and bad files stop with their name and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bert/tests/fixtures");
    root.join(name).display().to_string()
}

fn bert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pairs(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", stderr(out));
    (String::from_utf8(out.stdout.clone()).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-align-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn minilm() -> Option<String> {
    let Some(models) = std::env::var_os("BERT_TEST_MODELS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs BERT_TEST_MODELS"
        );
        eprintln!("skipped: set BERT_TEST_MODELS to the directory holding all-MiniLM-L6-v2");
        return None;
    };
    Some(
        PathBuf::from(models)
            .join("all-MiniLM-L6-v2")
            .display()
            .to_string(),
    )
}

/// The 32 sentences of the MiniLM fixture (several close paraphrases of each other among them).
fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("minilm/embeddings.jsonl")).unwrap();
    (text.lines())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn write(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The target holds 24 of the sentences, reworded a little (no final full stop), in another order, and
/// two sentences that translate nothing; every pair found must be a sentence and its rewording, on the
/// lines the files hold them, and all 24 must be found.
#[test]
fn mining_pairs_each_sentence_with_its_rewording_on_the_right_lines() {
    let Some(model) = minilm() else { return };
    let dir = scratch("mine");
    let source = sentences();
    let mut target: Vec<String> = (source.iter().rev().step_by(4))
        .chain(source.iter().step_by(4))
        .chain(source.iter().skip(1).step_by(4))
        .take(24)
        .map(|s| s.trim_end_matches('.').to_string())
        .collect();
    target.insert(5, "Quarterly tax filings are due in April".into());
    target.insert(17, "Seventeen penguins waddled across the glacier".into());
    let mut with_blank = source.clone();
    with_blank.insert(3, String::new()); // a blank line: skipped, but counted in line numbers
    write(&dir.join("source.txt"), &with_blank);
    write(&dir.join("target.txt"), &target);
    let out = bert(&[
        "align",
        "--model",
        &model,
        &dir.join("source.txt").display().to_string(),
        &dir.join("target.txt").display().to_string(),
    ]);
    let found = pairs(&out);
    assert_eq!(found.len(), 24, "{found:?}");
    for pair in &found {
        let (s, t) = (
            pair["source"].as_str().unwrap(),
            pair["target"].as_str().unwrap(),
        );
        assert_eq!(s.trim_end_matches('.'), t, "{pair}");
        let (sl, tl) = (
            pair["source_line"].as_u64().unwrap(),
            pair["target_line"].as_u64().unwrap(),
        );
        assert_eq!(with_blank[sl as usize - 1], s);
        assert_eq!(target[tl as usize - 1], t);
        assert!(pair["score"].as_f64().unwrap() > 1.06);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two documents in the same order, the target missing three sentences: in-order alignment pairs the
/// rest, line by line, in order.
#[test]
fn parallel_mode_aligns_in_order_around_gaps() {
    let Some(model) = minilm() else { return };
    let dir = scratch("parallel");
    let source = sentences();
    let target: Vec<String> = (source.iter().enumerate())
        .filter(|(i, _)| ![4, 5, 20].contains(i))
        .map(|(_, s)| s.to_uppercase())
        .collect();
    write(&dir.join("source.txt"), &source);
    write(&dir.join("target.txt"), &target);
    let out = bert(&[
        "align",
        "--mode",
        "parallel",
        "--threshold",
        "1.0",
        "--model",
        &model,
        &dir.join("source.txt").display().to_string(),
        &dir.join("target.txt").display().to_string(),
    ]);
    let found = pairs(&out);
    assert_eq!(found.len(), 29, "{found:?}");
    for pair in &found {
        assert_eq!(
            pair["source"].as_str().unwrap().to_uppercase(),
            pair["target"].as_str().unwrap()
        );
    }
    let lines: Vec<u64> = found
        .iter()
        .map(|p| p["target_line"].as_u64().unwrap())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_stop_with_their_name_and_line() {
    let dir = scratch("bad");
    let good = dir.join("good.txt");
    std::fs::write(&good, "the sea\nthe sky\n").unwrap();
    let bad = dir.join("latin1.txt");
    std::fs::write(&bad, b"la mer\nle ciel \xe9toil\xe9\n").unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    let model = fixture("tiny-base");
    let run = |a: &Path, b: &Path| {
        let (a, b) = (a.display().to_string(), b.display().to_string());
        bert(&["align", "--model", &model, &a, &b])
    };
    let out = run(&good, &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("latin1.txt:2: not UTF-8"),
        "{}",
        stderr(&out)
    );
    let out = run(&empty, &good);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("empty.txt: no sentences"),
        "{}",
        stderr(&out)
    );
    let out = run(&good, &dir.join("missing.txt"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));
    let help = bert(&["align", "--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--mode",
        "--threshold",
        "--neighbours",
        "--model",
        "--batch-size",
    ] {
        assert!(help.contains(flag), "`bert align --help` lacks {flag}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
