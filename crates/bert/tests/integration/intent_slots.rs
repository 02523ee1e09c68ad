//! Joint intent detection and slot filling end to end on a tiny checkpoint: the model learns a
//! separable task from the ATIS text format, the checkpoint carries both label maps and the NLU
//! pipeline reads it back with character offsets, a loss split over shards adds up to the loss of the
//! whole batch (two terms, each weighted by its own count), and bad files name the file and line.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::common::fixture;
use bert::finetune::{prepare_intent_slots, FinetuneTask, IntentSlotsData};
use bert::model::Mode;
use bert::pipelines::{IntentSlotParser, PipelineOptions};
use bert::train::{train, TrainingOptions};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-intent-slots-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Utterances whose intent follows from their first word and whose places are slots.
fn atis_text() -> String {
    let mut text = String::new();
    for (a, b) in [("paris", "france"), ("france", "paris"), ("paris", "paris")] {
        for subject in ["city", "farm", "school"] {
            text.push_str(&format!(
                "the:O {subject}:O of:O {a}:B-LOC is:O good:O <=> praise\n\
                 people:O of:O the:O north:B-AREA country:I-AREA saw:O {b}:B-LOC <=> visit\n\
                 people:O of:O {a}:B-LOC saw:O the:O {subject}:O <=> visit#praise\n"
            ));
        }
    }
    text
}

fn data(dir: &Path, train: &str, eval: &str, ext: &str) -> IntentSlotsData {
    let (t, e) = (
        dir.join(format!("train.{ext}")),
        dir.join(format!("eval.{ext}")),
    );
    std::fs::write(&t, train).unwrap();
    std::fs::write(&e, eval).unwrap();
    IntentSlotsData {
        train: t,
        eval: Some(e),
        max_length: Some(32),
        slot_loss_coef: 1.0,
    }
}

#[test]
fn a_joint_model_learns_intents_and_slots_and_the_parser_reads_them_back() {
    let dir = temp_dir("learn");
    let text = atis_text();
    let prepared =
        prepare_intent_slots(&fixture("tiny-base"), &data(&dir, &text, &text, "txt"), 3).unwrap();
    assert_eq!(prepared.task.intents, ["praise", "visit", "visit#praise"]);
    assert_eq!(prepared.task.tags, ["B-AREA", "B-LOC", "I-AREA", "O"]);
    let mut options = TrainingOptions::new(dir.join("out"), fixture("tiny-base"));
    options.epochs = Some(30);
    options.batch_size = 4;
    options.learning_rate = 2e-3;
    options.metric_for_best = Some("sentence_accuracy".into());
    let stop = AtomicBool::new(false);
    let outcome = train(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        &options,
        &stop,
        &mut |_| {},
    )
    .unwrap();
    let best = outcome.best.unwrap();
    assert_eq!(best["sentence_accuracy"], 1.0, "{best:?}");
    assert_eq!(best["intent_accuracy"], 1.0);
    assert_eq!(best["slot_f1"], 1.0);
    assert_eq!(best["per_slot"]["AREA"]["support"], 9);
    assert_eq!(best["per_intent"]["visit#praise"]["support"], 9);

    let out = dir.join("out");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForIntentAndSlots");
    assert_eq!(config["intent_id2label"]["2"], "visit#praise");
    assert_eq!(config["slot_id2label"]["2"], "I-AREA");
    let parser = IntentSlotParser::load(&out, &PipelineOptions::default()).unwrap();
    let text = "people of the north country saw paris";
    let encoding = parser.encode(text).unwrap();
    let understood = parser.understand(&[text], &[encoding]).unwrap().remove(0);
    assert_eq!(understood.intent, "visit");
    assert!(understood.intent_score > 0.5, "{understood:?}");
    let total: f32 = understood.intents.values().sum();
    assert!((total - 1.0).abs() < 1e-5, "{understood:?}");
    let slots: Vec<(&str, &str)> = (understood.slots.iter())
        .map(|s| (s.slot.as_str(), &text[s.start..s.end]))
        .collect();
    assert_eq!(slots, [("AREA", "north country"), ("LOC", "paris")]);
}

#[test]
fn shards_weighted_by_their_own_counts_add_up_to_the_whole_batch_loss() {
    let dir = temp_dir("shards");
    let text = atis_text();
    let mut data = data(&dir, &text, &text, "txt");
    data.slot_loss_coef = 0.5;
    let prepared = prepare_intent_slots(&fixture("tiny-base"), &data, 3).unwrap();
    let task = &prepared.task;
    let (all, a, b): (Vec<usize>, Vec<usize>, Vec<usize>) =
        ((0..6).collect(), vec![0, 1], vec![2, 3, 4, 5]);
    let whole = task.train_loss(&all, &Mode::Eval).unwrap().loss;
    let totals = task.loss_terms(&all);
    let weights = |part: &[usize]| -> Vec<f64> {
        let counts = task.loss_terms(part);
        counts
            .iter()
            .zip(&totals)
            .map(|(&n, &t)| n as f64 / t as f64)
            .collect()
    };
    let part = |p: &[usize]| {
        let loss = task
            .weighted_loss(p, &weights(p), &Mode::Eval)
            .unwrap()
            .loss;
        loss.to_scalar::<f32>().unwrap()
    };
    let (whole, split) = (whole.to_scalar::<f32>().unwrap(), part(&a) + part(&b));
    assert!(
        (whole - split).abs() < 1e-5,
        "whole batch {whole}, shards {split}"
    );
    assert_eq!(totals[0], 6, "the intent loss averages over utterances");
    assert!(
        totals[1] > totals[0],
        "the slot loss over words: {totals:?}"
    );
}

#[test]
fn bad_files_name_the_file_and_line_and_unseen_labels_are_counted() {
    let dir = temp_dir("bad");
    let good = "paris:B-LOC is:O good:O <=> praise\n";
    let error = |train: &str, eval: &str, ext: &str| match prepare_intent_slots(
        &fixture("tiny-base"),
        &data(&dir, train, eval, ext),
        0,
    ) {
        Ok(_) => panic!("no error"),
        Err(e) => e.to_string(),
    };
    let e = error(good, "paris:B-LOC is:O\nthe:O good <=> praise\n", "txt");
    assert!(e.contains("eval.txt:1") && e.contains("<=>"), "{e}");
    let e = error(
        good,
        "paris:B-LOC <=> praise\nthe:O good <=> praise\n",
        "txt",
    );
    assert!(e.contains("eval.txt:2") && e.contains("`good`"), "{e}");
    let e = error(good, " <=> praise\n", "txt");
    assert!(
        e.contains("eval.txt:1") && e.contains("empty utterance"),
        "{e}"
    );
    let e = error(
        r#"{"tokens": ["a", "b"], "tags": ["O"], "intent": "x"}"#,
        good,
        "jsonl",
    );
    assert!(
        e.contains("train.jsonl:1") && e.contains("2 words but 1 tags"),
        "{e}"
    );
    let e = error(r#"{"tokens": ["a"], "tags": ["O"]}"#, good, "jsonl");
    assert!(e.contains("train.jsonl:1") && e.contains("`intent`"), "{e}");

    let folder = dir.join("triple");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, text) in [
        ("seq.in", "a b\nc\n"),
        ("seq.out", "O O\nO\n"),
        ("label", "x\n"),
    ] {
        std::fs::write(folder.join(name), text).unwrap();
    }
    let triple = IntentSlotsData {
        train: folder.clone(),
        eval: None,
        max_length: Some(32),
        slot_loss_coef: 1.0,
    };
    let e = match prepare_intent_slots(&fixture("tiny-base"), &triple, 0) {
        Ok(_) => panic!("no error"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("seq.in has 2 lines, seq.out 2, label 1"), "{e}");
    std::fs::write(folder.join("label"), "x\ny\n").unwrap();
    let prepared = prepare_intent_slots(&fixture("tiny-base"), &triple, 0).unwrap();
    assert_eq!(prepared.task.intents, ["x", "y"]);

    let eval = "paris:B-CITY is:O good:O <=> blame\nparis:B-LOC is:O good:O <=> praise\n";
    let prepared =
        prepare_intent_slots(&fixture("tiny-base"), &data(&dir, good, eval, "txt"), 0).unwrap();
    let note = prepared.notes.join("\n");
    assert!(
        note.contains("1 evaluation utterances have an intent and 1 words a slot tag"),
        "{note}"
    );
}
