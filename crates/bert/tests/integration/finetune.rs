//! Fine-tuning end to end on a tiny checkpoint: a classifier and a tagger learn separable tasks, the best
//! model is written as a Hugging Face directory that the classification pipeline loads and agrees with,
//! runs are reproducible from the seed, and bad data files fail with errors that name the file, line and
//! column.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::common::fixture;
use bert::finetune::{
    prepare_classification, prepare_qa, prepare_tagging, ClassificationData, Columns, FinetuneTask,
    Prepared, QaData, SpanOptions, TaggingData,
};
use bert::pipelines::{PipelineOptions, TextClassifier};
use bert::train::{
    train as finetune, EvalStrategy, Event as FinetuneEvent, Outcome as FinetuneOutcome,
    TrainingOptions as FinetuneOptions,
};
use bert::weights::config::ProblemType;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-finetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sentences whose label follows from one word: good/great positive, bad/terrible negative, and
/// "a movie" plain neutral.
fn sentiment_rows() -> Vec<(String, &'static str)> {
    let mut rows = Vec::new();
    for subject in ["movie", "story", "day", "city", "school", "farm"] {
        for (word, label) in [
            ("good", "positive"),
            ("great", "positive"),
            ("bad", "negative"),
            ("terrible", "negative"),
        ] {
            rows.push((format!("the {subject} was {word}"), label));
        }
        rows.push((format!("a {subject}"), "neutral"));
    }
    rows
}

fn write_csv(path: &Path, rows: &[(String, &str)]) {
    let mut text = String::from("text,label\n");
    for (t, l) in rows {
        text.push_str(&format!("\"{t}\",{l}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn data(dir: &Path) -> ClassificationData {
    let rows = sentiment_rows();
    write_csv(&dir.join("train.csv"), &rows);
    write_csv(&dir.join("eval.csv"), &rows[..12]);
    ClassificationData {
        train: dir.join("train.csv"),
        eval: Some(dir.join("eval.csv")),
        columns: Columns {
            text: "text".into(),
            text_pair: None,
            label: "label".into(),
        },
        problem: ProblemType::SingleLabelClassification,
        max_length: Some(16),
    }
}

/// Fine-tunes a prepared task to the end.
fn run<T: FinetuneTask>(
    prepared: &Prepared<T>,
    options: &FinetuneOptions,
    on_event: &mut dyn FnMut(FinetuneEvent),
) -> FinetuneOutcome {
    let stop = AtomicBool::new(false);
    finetune(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        options,
        &stop,
        on_event,
    )
    .unwrap()
}

/// The error a fine-tune of a prepared task ends with.
fn run_err<T: FinetuneTask>(prepared: &Prepared<T>, options: &FinetuneOptions) -> String {
    let stop = AtomicBool::new(false);
    finetune(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        options,
        &stop,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string()
}

fn train(dir: &Path, out: &str) -> FinetuneOutcome {
    let data = data(dir);
    let prepared = prepare_classification(&fixture("tiny-base"), &data, 7).unwrap();
    let mut options = FinetuneOptions::new(dir.join(out), fixture("tiny-base"));
    options.epochs = Some(20);
    options.batch_size = 8;
    options.learning_rate = 2e-3;
    options.warmup_ratio = 0.1;
    options.metric_for_best = Some("accuracy".into());
    run(&prepared, &options, &mut |_| {})
}

#[test]
fn classifier_learns_and_the_saved_best_model_agrees_with_its_evaluation() {
    let dir = temp_dir("learns");
    let outcome = train(&dir, "out");
    assert!(outcome.finished);
    let best = outcome.best.unwrap();
    assert_eq!(best["accuracy"], 1.0, "{best:?}");
    let out = dir.join("out");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["problem_type"], "single_label_classification");
    // Labels in sorted order.
    assert_eq!(
        config["id2label"],
        serde_json::json!({"0": "negative", "1": "neutral", "2": "positive"})
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval_results.json")).unwrap())
            .unwrap();
    assert_eq!(results["accuracy"], best["accuracy"]);
    for key in [
        "loss",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "step",
        "epoch",
    ] {
        assert!(!results[key].is_null(), "eval_results.json lacks {key}");
    }
    // Epochs count as transformers' do: the evaluation after the last of 20 epochs is at epoch 20.0.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last_eval: serde_json::Value = log
        .lines()
        .filter(|line| line.contains("loss_eval"))
        .map(|line| serde_json::from_str(line).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(last_eval["epoch"], 20.0, "{last_eval}");
    // The saved model is the one evaluated: the pipeline predicts every evaluation label.
    let classifier = TextClassifier::load(&out, &PipelineOptions::default(), None).unwrap();
    let rows = sentiment_rows();
    let encodings: Vec<_> = rows[..12]
        .iter()
        .map(|(t, _)| classifier.encode(t).unwrap())
        .collect();
    for (got, (text, label)) in classifier.classify(&encodings).unwrap().iter().zip(&rows) {
        assert_eq!(got.top().label, *label, "{text}");
    }
}

#[test]
fn same_seed_same_run() {
    let dir = temp_dir("seed");
    let a = train(&dir, "a").best.unwrap();
    let b = train(&dir, "b").best.unwrap();
    assert_eq!(a["loss"], b["loss"]);
    assert_eq!(a["step"], b["step"]);
    let bytes = |run: &str| std::fs::read(dir.join(run).join("model.safetensors")).unwrap();
    assert!(
        bytes("a") == bytes("b"),
        "the same seed gave different weights"
    );
}

/// The error `prepare_classification` gives for a training file `train` and evaluation file `eval`.
fn error_for(name: &str, train: &str, eval: &str, problem: ProblemType) -> String {
    let dir = temp_dir(name);
    let mut data = data(&dir);
    std::fs::write(&data.train, train).unwrap();
    std::fs::write(data.eval.as_ref().unwrap(), eval).unwrap();
    data.problem = problem;
    match prepare_classification(&fixture("tiny-base"), &data, 0) {
        Ok(_) => panic!("{name}: no error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_data_files_name_the_file_line_and_column() {
    let single = ProblemType::SingleLabelClassification;
    let good = "text,label\na good movie,pos\na bad movie,neg\n";
    let e = error_for("column", "sentence,label\nx,pos\ny,neg\n", good, single);
    assert!(
        e.contains("train.csv")
            && e.contains("no column `text`")
            && e.contains("`sentence`, `label`"),
        "{e}"
    );
    let e = error_for("unseen", good, "text,label\nx,pos\ny,maybe\n", single);
    assert!(
        e.contains("eval.csv:3") && e.contains("`maybe`") && e.contains("neg, pos"),
        "{e}"
    );
    let e = error_for(
        "empty-label",
        "text,label\nx,pos\ny,\nz,neg\n",
        good,
        single,
    );
    assert!(
        e.contains("train.csv:3") && e.contains("empty label"),
        "{e}"
    );
    let e = error_for("empty-file", "", good, single);
    assert!(e.contains("train.csv") && e.contains("no rows"), "{e}");
    let e = error_for("one-label", "text,label\nx,pos\ny,pos\n", good, single);
    assert!(e.contains("at least two labels"), "{e}");
    let e = error_for(
        "regression",
        "text,label\nx,0.5\ny,high\n",
        good,
        ProblemType::Regression,
    );
    assert!(
        e.contains("train.csv:3") && e.contains("`high` is not a number"),
        "{e}"
    );
}

#[test]
fn multi_label_and_pairs_from_json_lines() {
    let dir = temp_dir("multi");
    let rows = [
        r#"{"q": "is it good", "a": "yes", "tags": ["pos", "short"]}"#,
        r#"{"q": "is it bad", "a": "no it was terrible", "tags": ["neg"]}"#,
        r#"{"q": "where", "a": "paris", "tags": []}"#,
    ];
    std::fs::write(dir.join("train.jsonl"), rows.join("\n")).unwrap();
    let data = ClassificationData {
        train: dir.join("train.jsonl"),
        eval: Some(dir.join("train.jsonl")),
        columns: Columns {
            text: "q".into(),
            text_pair: Some("a".into()),
            label: "tags".into(),
        },
        problem: ProblemType::MultiLabelClassification,
        max_length: Some(16),
    };
    let prepared = prepare_classification(&fixture("tiny-base"), &data, 0).unwrap();
    assert_eq!(prepared.task.labels, ["neg", "pos", "short"]);
    assert_eq!(prepared.config.num_labels(), 3);
    // The pair is encoded as one [CLS] A [SEP] B [SEP] sequence.
    assert!(prepared.task.train.encodings[0].type_ids.contains(&1));
    let mut options = FinetuneOptions::new(dir.join("out"), fixture("tiny-base"));
    options.epochs = Some(1);
    let outcome = run(&prepared, &options, &mut |_| {});
    let best = outcome.best.unwrap();
    for key in ["accuracy", "micro_f1", "macro_f1", "loss"] {
        assert!(best[key].is_number(), "{key} missing: {best:?}");
    }
}

/// CoNLL sentences whose tags follow from the words: places are locations, "north country" a
/// two-word one.
fn conll_text() -> String {
    let mut text = String::from("-DOCSTART- -X- O\n\n");
    for (subject, place) in [
        ("capital", "paris"),
        ("city", "france"),
        ("farm", "paris"),
        ("school", "france"),
    ] {
        for line in [
            format!("the O\n{subject} O\nof O\n{place} B-LOC\nis O\ngood O\n"),
            format!(
                "people O\nof O\nthe O\nnorth B-LOC\ncountry I-LOC\nsaw O\nthe O\n{subject} O\n"
            ),
        ] {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

#[test]
fn tagger_learns_entities_and_reports_seqeval_scores() {
    let dir = temp_dir("ner");
    std::fs::write(dir.join("train.conll"), conll_text()).unwrap();
    let data = TaggingData {
        train: dir.join("train.conll"),
        eval: Some(dir.join("train.conll")),
        max_length: Some(32),
    };
    let prepared = prepare_tagging(&fixture("tiny-base"), &data, 3).unwrap();
    assert_eq!(prepared.task.tags, ["B-LOC", "I-LOC", "O"]);
    let mut options = FinetuneOptions::new(dir.join("out"), fixture("tiny-base"));
    options.epochs = Some(30);
    options.batch_size = 2;
    options.learning_rate = 2e-3;
    options.metric_for_best = Some("f1".into());
    let outcome = run(&prepared, &options, &mut |_| {});
    let best = outcome.best.unwrap();
    assert_eq!(best["f1"], 1.0, "{best:?}");
    assert_eq!(best["accuracy"], 1.0);
    assert_eq!(best["per_type"]["LOC"]["support"], 8);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    assert_eq!(config["id2label"]["1"], "I-LOC");
}

#[test]
fn bad_tagged_files_name_the_file_and_line() {
    let dir = temp_dir("ner-bad");
    let error = |train: &str, eval: &str, ext: &str| {
        let (t, e) = (
            dir.join(format!("train.{ext}")),
            dir.join(format!("eval.{ext}")),
        );
        std::fs::write(&t, train).unwrap();
        std::fs::write(&e, eval).unwrap();
        let data = TaggingData {
            train: t,
            eval: Some(e),
            max_length: Some(32),
        };
        match prepare_tagging(&fixture("tiny-base"), &data, 0) {
            Ok(_) => panic!("no error"),
            Err(e) => e.to_string(),
        }
    };
    let good = "paris B-LOC\nis O\n";
    let e = error(good, "paris B-LOC\n\nthe O\nnorth B-GEO\n", "conll");
    assert!(
        e.contains("eval.conll:3") && e.contains("`B-GEO`") && e.contains("B-LOC, O"),
        "{e}"
    );
    let e = error(good, "paris\n", "conll");
    assert!(
        e.contains("eval.conll:1") && e.contains("two columns"),
        "{e}"
    );
    let e = error("\n\n", good, "conll");
    assert!(
        e.contains("train.conll") && e.contains("no sentences"),
        "{e}"
    );
    let e = error(
        r#"{"tokens": ["paris", "is"], "tags": ["B-LOC"]}"#,
        good,
        "jsonl",
    );
    assert!(
        e.contains("train.jsonl:1") && e.contains("2 tokens but 1 tags"),
        "{e}"
    );
    let e = error(r#"{"tokens": ["paris"], "ner_tags": [3]}"#, good, "jsonl");
    assert!(
        e.contains("train.jsonl:1") && e.contains("must hold strings"),
        "{e}"
    );
}

/// A SQuAD v2 file about short contexts: who did what, plus an unanswerable question, and an answer
/// whose position is wrong.
fn squad_json() -> String {
    let mut paragraphs = Vec::new();
    for (i, (person, place)) in [("peter", "paris"), ("mary", "france"), ("people", "north")]
        .iter()
        .enumerate()
    {
        let context = format!("the {person} saw the sea from {place} .");
        let start = context.find(place).unwrap();
        paragraphs.push(serde_json::json!({
            "context": context,
            "qas": [
                {"id": format!("{i}a"), "question": "where", "answers": [{"text": place, "answer_start": start}]},
                {"id": format!("{i}b"), "question": "who wrote", "answers": [], "is_impossible": true},
                {"id": format!("{i}c"), "question": "where is it", "answers": [{"text": place, "answer_start": 0}]},
            ]
        }));
    }
    serde_json::json!({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]})
        .to_string()
}

#[test]
fn question_answering_learns_spans_and_reports_squad_scores() {
    let dir = temp_dir("qa");
    std::fs::write(dir.join("train.json"), squad_json()).unwrap();
    let data = QaData {
        train: dir.join("train.json"),
        eval: Some(dir.join("train.json")),
        max_length: Some(24),
        doc_stride: 4,
        spans: SpanOptions::default(),
    };
    let (prepared, skipped) = prepare_qa(&fixture("tiny-base"), &data, 5).unwrap();
    // Three answers are not at their answer_start: counted in both files (the same one here), and their
    // questions left out of training.
    assert_eq!(skipped.misplaced_answers, 6, "{skipped:?}");
    assert_eq!(skipped.training_questions, 3);
    let mut options = FinetuneOptions::new(dir.join("out"), fixture("tiny-base"));
    options.epochs = Some(40);
    options.batch_size = 2;
    options.learning_rate = 3e-3;
    options.metric_for_best = Some("exact_match".into());
    let outcome = run(&prepared, &options, &mut |_| {});
    let best = outcome.best.unwrap();
    // The answerable questions with a misplaced answer can still be answered; training saw the others.
    assert!(best["HasAns_exact"].as_f64().unwrap() >= 50.0, "{best:?}");
    assert_eq!(best["NoAns_total"], 3);
    assert_eq!(best["total"], 9);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForQuestionAnswering");
}

#[test]
fn truncated_examples_are_counted_in_notes() {
    let dir = temp_dir("notes");
    let mut data = data(&dir);
    assert!(prepare_classification(&fixture("tiny-base"), &data, 0)
        .unwrap()
        .notes
        .is_empty());
    data.max_length = Some(5);
    let notes = prepare_classification(&fixture("tiny-base"), &data, 0)
        .unwrap()
        .notes;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("24 of 30 training examples"),
        "{notes:?}"
    );
    std::fs::write(dir.join("train.conll"), conll_text()).unwrap();
    let tagging = TaggingData {
        train: dir.join("train.conll"),
        eval: None,
        max_length: Some(6),
    };
    let notes = prepare_tagging(&fixture("tiny-base"), &tagging, 0)
        .unwrap()
        .notes;
    assert!(
        notes[0].contains("8 of 8 training sentences") && notes[0].contains("neither trained on"),
        "{notes:?}"
    );
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let dir = temp_dir("early");
    let data = data(&dir);
    let prepared = prepare_classification(&fixture("tiny-base"), &data, 7).unwrap();
    let mut options = FinetuneOptions::new(dir.join("out"), fixture("tiny-base"));
    // A learning rate of zero never improves the evaluation loss after the first evaluation.
    options.learning_rate = 0.0;
    options.batch_size = 4;
    options.eval_strategy = EvalStrategy::Steps(1);
    options.early_stopping_patience = Some(2);
    let mut early = None;
    let mut evaluations = 0;
    let outcome = run(&prepared, &options, &mut |event| match event {
        FinetuneEvent::EarlyStopped { step } => early = Some(step),
        FinetuneEvent::Eval { .. } => evaluations += 1,
        _ => {}
    });
    assert_eq!(early, Some(3));
    assert_eq!(evaluations, 3);
    assert_eq!(outcome.steps, 3);
    assert_eq!(outcome.best.unwrap()["step"], 1);
}

#[test]
fn a_stopped_and_resumed_finetune_ends_where_an_uninterrupted_one_does() {
    let dir = temp_dir("resume");
    let data = data(&dir);
    let options_for = |out: &str| {
        let mut o = FinetuneOptions::new(dir.join(out), fixture("tiny-base"));
        o.epochs = Some(3);
        o.batch_size = 4;
        o.learning_rate = 2e-3;
        o.save_steps = 0;
        o
    };
    let prepared = prepare_classification(&fixture("tiny-base"), &data, 7).unwrap();
    let whole = run(&prepared, &options_for("whole"), &mut |_| {});

    // Stopped mid-epoch (30 examples in batches of 4: 8 steps an epoch), which writes a checkpoint.
    let prepared = prepare_classification(&fixture("tiny-base"), &data, 7).unwrap();
    let stop = AtomicBool::new(false);
    let first = finetune(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        &options_for("parts"),
        &stop,
        &mut |event| {
            if let FinetuneEvent::Step(m) = event {
                if m.step == 11 {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        },
    )
    .unwrap();
    assert!(!first.finished);
    assert_eq!(first.steps, 11);
    let (step, checkpoint) = bert::train::checkpoints(&dir.join("parts"))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(step, 11);

    // Resumed from that checkpoint's weights: the same end as the uninterrupted run.
    let prepared = prepare_classification(&checkpoint, &data, 7).unwrap();
    let mut options = options_for("parts");
    options.resume = true;
    let second = run(&prepared, &options, &mut |_| {});
    assert!(second.finished);
    assert_eq!(second.steps, whole.steps);
    assert_eq!(second.best, whole.best);
    let weights = |run: &str| std::fs::read(dir.join(run).join("model.safetensors")).unwrap();
    assert!(
        weights("parts") == weights("whole"),
        "resumed weights differ"
    );
    // The metrics log holds the whole run once: the first part's lines survive the resume.
    let logged = |run: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["step"], v["loss"].is_number())
            })
            .collect()
    };
    assert_eq!(logged("parts"), logged("whole"));

    // Resuming with other settings is refused, naming them.
    let mut options = options_for("parts");
    options.resume = true;
    options.learning_rate = 1e-3;
    let prepared = prepare_classification(&checkpoint, &data, 7).unwrap();
    let err = run_err(&prepared, &options);
    assert!(err.contains("learning_rate"), "{err}");
}

#[test]
fn nothing_left_to_train_on_is_an_error_not_a_hang() {
    let dir = temp_dir("qa-empty");
    let squad = serde_json::json!({"data": [{"paragraphs": [{"context": "the sea is far", "qas": [
        {"id": "1", "question": "where", "answers": [{"text": "far", "answer_start": 0}]}
    ]}]}]});
    std::fs::write(dir.join("train.json"), squad.to_string()).unwrap();
    let data = QaData {
        train: dir.join("train.json"),
        eval: None,
        max_length: Some(24),
        doc_stride: 4,
        spans: SpanOptions::default(),
    };
    let (prepared, skipped) = prepare_qa(&fixture("tiny-base"), &data, 0).unwrap();
    assert_eq!(skipped.training_questions, 1);
    let options = FinetuneOptions::new(dir.join("out"), fixture("tiny-base"));
    let err = run_err(&prepared, &options);
    assert!(err.contains("no training examples"), "{err}");
}
