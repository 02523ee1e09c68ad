//! `bert pretrain`'s loop end to end on a tiny model: the loss falls, a run stopped and resumed ends with
//! the same weights as an uninterrupted one, the output loads as a checkpoint, and bad corpora, bad
//! vocabularies and an occupied output directory are clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{fixture, max_abs_diff};
use bert::masking::MaskingOptions;
use bert::model::BertForPreTraining;
use bert::pretraining::data::{HoldOut, PretrainData};
use bert::pretraining::trainer::{pretrain as pretrain_from, ModelInit};
use bert::pretraining::{Corpus, InstanceConfig};
use bert::rng::Rng;
use bert::train::StepMetrics;
use bert::train::{AdamWConfig, EvalStrategy, Event, Outcome, TrainingOptions};
use bert::weights::config::BertConfig;
use bert::weights::pretrained::Pretrained;
use bert::Tokenizer;
use candle_core::{Device, Tensor};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A corpus of `documents` documents built from the tiny vocabulary's words, with some structure for the
/// model to learn (each sentence repeats a pattern).
fn write_corpus(dir: &Path, documents: usize) -> PathBuf {
    let words = [
        "the", "sea", "city", "tree", "water", "school", "food", "story", "night", "life",
        "people", "country",
    ];
    let mut rng = Rng::new(5);
    let mut text = String::new();
    for _ in 0..documents {
        for _ in 0..(4 + rng.below(6)) {
            let w = words[rng.below(words.len())];
            let v = words[rng.below(words.len())];
            text.push_str(&format!("the {w} of the {v} is the {w} .\n"));
        }
        text.push('\n');
    }
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: 249,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        ..Default::default()
    }
}

fn data(corpus: &Path) -> PretrainData {
    let tokenizer = Tokenizer::from_dir(&fixture("tokenizer/uncased")).unwrap();
    let instances = InstanceConfig {
        max_seq_length: 32,
        window_documents: 20,
        shuffle_buffer: 50,
        ..Default::default()
    };
    let masking = MaskingOptions {
        masked_lm_prob: 0.15,
        max_predictions_per_seq: 5,
        whole_word: false,
    };
    let hold_out = HoldOut {
        count: 4,
        stride: 5,
    };
    PretrainData::new(
        Corpus::new(&[corpus.to_path_buf()]).unwrap(),
        tokenizer,
        instances,
        masking,
        hold_out,
        7,
    )
    .unwrap()
}

/// Where a test run's weights start, and the loop's settings.
struct PretrainOptions {
    init: ModelInit,
    training: TrainingOptions,
}

impl std::ops::Deref for PretrainOptions {
    type Target = TrainingOptions;

    fn deref(&self) -> &TrainingOptions {
        &self.training
    }
}

impl std::ops::DerefMut for PretrainOptions {
    fn deref_mut(&mut self) -> &mut TrainingOptions {
        &mut self.training
    }
}

fn pretrain(
    data: &PretrainData,
    options: &PretrainOptions,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> bert::Result<Outcome> {
    pretrain_from(data, &options.init, &options.training, stop, on_event)
}

fn options(out: &Path, max_steps: usize) -> PretrainOptions {
    let mut training = TrainingOptions::new(out.to_path_buf(), fixture("tokenizer/uncased"));
    training.epochs = None;
    training.max_steps = Some(max_steps);
    training.batch_size = 8;
    training.gradient_accumulation_steps = 2;
    training.learning_rate = 2e-3;
    training.warmup_steps = Some(2);
    training.optimizer = AdamWConfig::default();
    training.eval_strategy = EvalStrategy::No;
    training.metric_for_best = None;
    training.save_steps = 0;
    training.logging_steps = 1;
    training.seed = 11;
    PretrainOptions {
        init: ModelInit::Fresh(Box::new(tiny_config())),
        training,
    }
}

/// Runs to the end (or until `stop_at`), returning each step's metrics.
fn run(data: &PretrainData, options: &PretrainOptions, stop_at: Option<usize>) -> Vec<StepMetrics> {
    let stop = AtomicBool::new(false);
    let mut steps = Vec::new();
    pretrain(data, options, &stop, &mut |event| {
        if let Event::Step(m) = event {
            steps.push(m.clone());
            if Some(m.step) == stop_at {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    steps
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn the_loss_falls_and_the_output_is_a_checkpoint() {
    let dir = scratch("falls");
    let data = data(&write_corpus(&dir, 60));
    let out = dir.join("out");
    let steps = run(&data, &options(&out, 40), None);
    assert_eq!(steps.len(), 40);
    let first: f64 = steps[..5].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    let last: f64 = steps[35..].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    assert!(last < first - 1.0, "loss {first:.3} -> {last:.3}");
    assert!(
        steps.iter().any(|m| m.epoch > 0.0),
        "the corpus is small: several epochs"
    );
    let model = Pretrained::load(&out, &Device::Cpu, BertForPreTraining::load).unwrap();
    assert!(
        model.report.newly_initialized.is_empty() && model.report.unused.is_empty(),
        "{:?}",
        model.report
    );
    assert_eq!(
        model.config.architectures.as_deref(),
        Some(&["BertForPreTraining".to_string()][..])
    );
    assert!(
        out.join("vocab.txt").exists() && out.join("checkpoint-40/optimizer.safetensors").exists()
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("eval_mlm_accuracy")),
        "a final evaluation"
    );
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = scratch("resume");
    let data = data(&write_corpus(&dir, 30));
    let straight = dir.join("straight");
    let straight_steps = run(&data, &options(&straight, 14), None);

    let resumed = dir.join("resumed");
    let first_part = run(&data, &options(&resumed, 14), Some(6));
    assert_eq!(first_part.len(), 6, "stopped after step 6");
    assert!(
        resumed.join("checkpoint-6").exists(),
        "the stop saved a checkpoint"
    );
    let mut again = options(&resumed, 14);
    again.resume = true;
    let second_part = run(&data, &again, None);
    assert_eq!(second_part.first().map(|m| m.step), Some(7));

    let losses: Vec<f64> = first_part
        .iter()
        .chain(&second_part)
        .map(|m| m.loss)
        .collect();
    let expected: Vec<f64> = straight_steps.iter().map(|m| m.loss).collect();
    assert_eq!(losses, expected, "the same losses, step for step");
    let (a, b) = (weights(&straight), weights(&resumed));
    for (name, tensor) in &a {
        let diff = max_abs_diff(tensor, &b[name]);
        assert!(diff == 0.0, "{name} differs by {diff}");
    }
}

#[test]
fn shards_on_threads_train_what_one_shard_does() {
    let dir = scratch("shards");
    let data = data(&write_corpus(&dir, 30));
    let without_dropout = BertConfig {
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        ..tiny_config()
    };
    let runs: Vec<(PathBuf, Vec<StepMetrics>)> = [1, 3]
        .iter()
        .map(|&shards| {
            let out = dir.join(format!("shards-{shards}"));
            let mut options = options(&out, 6);
            options.init = ModelInit::Fresh(Box::new(without_dropout.clone()));
            // Batches of 8 cut 3, 3 and 2.
            options.shards = shards;
            let steps = run(&data, &options, None);
            (out, steps)
        })
        .collect();
    for (one, three) in runs[0].1.iter().zip(&runs[1].1) {
        let (a, b) = (one.loss, three.loss);
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {}: {a} vs {b}",
            one.step
        );
    }
    let (a, b) = (weights(&runs[0].0), weights(&runs[1].0));
    for (name, tensor) in &a {
        let scale = tensor
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = max_abs_diff(tensor, &b[name]);
        // Attention key biases get only rounding noise as gradient (softmax ignores them), which Adam
        // turns into steps of up to the learning rate: 6 steps at 2e-3.
        let bound = match name.ends_with("key.bias") {
            true => 2.0 * 6.0 * 2e-3,
            false => 1e-5 * scale.max(1e-3),
        };
        assert!(diff <= bound, "{name} differs by {diff} (largest {scale})");
    }
}

#[test]
fn an_occupied_output_directory_is_not_overwritten() {
    let dir = scratch("occupied");
    let data = data(&write_corpus(&dir, 20));
    let out = dir.join("out");
    run(&data, &options(&out, 2), None);
    let stop = AtomicBool::new(false);
    let err = pretrain(&data, &options(&out, 2), &stop, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds another run") && err.contains("--overwrite"),
        "{err}"
    );
    let mut overwrite = options(&out, 2);
    overwrite.overwrite = true;
    pretrain(&data, &overwrite, &stop, &mut |_| {}).unwrap();
    let mut resume = options(&scratch("nothing-to-resume"), 2);
    resume.resume = true;
    let err = pretrain(&data, &resume, &stop, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn bad_corpora_and_vocabularies_are_clear_errors() {
    let dir = scratch("bad");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let one = dir.join("one.txt");
    std::fs::write(&one, "the sea .\nthe city .\n").unwrap();
    let stop = AtomicBool::new(false);
    for (corpus, expected) in [(&empty, "no documents"), (&one, "needs at least two")] {
        let mut no_hold_out = data(corpus);
        no_hold_out.hold_out = HoldOut {
            count: 0,
            stride: 1,
        };
        let err = pretrain(
            &no_hold_out,
            &options(&dir.join("out"), 2),
            &stop,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    // A vocabulary without [MASK], [CLS] or [SEP]: the tokenizer or the data refuses it, naming it.
    let vocab = std::fs::read_to_string(fixture("tokenizer/uncased/vocab.txt")).unwrap();
    for token in ["[MASK]", "[CLS]", "[SEP]"] {
        let vocab_dir = dir.join(format!("vocab-{}", token.trim_matches(['[', ']'])));
        std::fs::create_dir_all(&vocab_dir).unwrap();
        std::fs::write(
            vocab_dir.join("vocab.txt"),
            vocab.replace(&format!("{token}\n"), ""),
        )
        .unwrap();
        let masking = MaskingOptions {
            masked_lm_prob: 0.15,
            max_predictions_per_seq: 5,
            whole_word: false,
        };
        let corpus = Corpus::new(&[write_corpus(&dir, 5)]).unwrap();
        let hold_out = HoldOut {
            count: 0,
            stride: 1,
        };
        let err = Tokenizer::from_dir(&vocab_dir)
            .and_then(|tokenizer| {
                PretrainData::new(
                    corpus,
                    tokenizer,
                    InstanceConfig::default(),
                    masking,
                    hold_out,
                    0,
                )
            })
            .err()
            .unwrap_or_else(|| panic!("a vocabulary without {token} was accepted"));
        assert!(err.to_string().contains(token), "{token}: {err}");
    }
}

#[test]
fn masks_are_drawn_anew_each_epoch_and_reproducibly() {
    let dir = scratch("masks");
    let data = data(&write_corpus(&dir, 20));
    let instance = data.train_instances(0).unwrap().next().unwrap().unwrap();
    assert_eq!(data.mask(&instance, 0, 3), data.mask(&instance, 0, 3));
    let differs = (0..20).any(|i| data.mask(&instance, 0, i) != data.mask(&instance, 1, i));
    assert!(differs, "another epoch masks differently");
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let dir = scratch("settings");
    let data = data(&write_corpus(&dir, 20));
    let out = dir.join("out");
    let mut first = options(&out, 2);
    first.save_steps = 1;
    run(&data, &first, None);
    let mut other = options(&out, 4);
    other.resume = true;
    other.batch_size = 4;
    let stop = AtomicBool::new(false);
    let err = pretrain(&data, &other, &stop, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_size 8 -> 4"), "{err}");
}

#[test]
fn a_failing_overwrite_leaves_the_earlier_run() {
    let dir = scratch("failing-overwrite");
    let good = data(&write_corpus(&dir, 20));
    let out = dir.join("out");
    run(&good, &options(&out, 2), None);
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let mut bad = data(&write_corpus(&dir, 20));
    bad.corpus = Corpus::new(&[empty]).unwrap();
    bad.hold_out = HoldOut {
        count: 0,
        stride: 1,
    };
    let mut overwrite = options(&out, 2);
    overwrite.overwrite = true;
    let stop = AtomicBool::new(false);
    assert!(pretrain(&bad, &overwrite, &stop, &mut |_| {}).is_err());
    assert!(out.join("checkpoint-2").exists() && out.join("model.safetensors").exists());
}
