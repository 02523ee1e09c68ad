//! Sequence-to-sequence fine-tuning end to end: a BERT2BERT warm-started from a small BERT learns to
//! copy sentences (BLEU on held-out pairs), its cross-attention reported as new; the model written
//! has `transformers`' layout and generates with the pipeline; a stopped and resumed run ends where an
//! uninterrupted one does; BERTShare (`tie_encoder_decoder`) trains one set of shared weights; bad
//! pairs files, checkpoints without a decoder or with missing cross-attention, and bad settings fail
//! with errors that name them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use crate::common::fixture;
use bert::finetune::{prepare_seq2seq, PairColumns, PairFile, Seq2SeqData, Seq2SeqTask};
use bert::generation::GenerationOverrides;
use bert::model::BertForMaskedLM;
use bert::pipelines::{Generator, PipelineOptions};
use bert::train::{train, Event, Outcome, TrainingOptions};
use bert::weights::encoder_decoder_config::EncoderDecoderConfig;
use bert::weights::params::ParamStore;
use bert::weights::save::{copy_tokenizer, save_model};
use bert::BertConfig;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-seq2seq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A freshly initialised small BERT with a masked-LM head (as `transformers` initialises one), with the
/// tiny fixtures' tokenizer.
fn fresh_bert(dir: &Path) -> PathBuf {
    let model = dir.join("bert");
    let mut config = BertConfig::from_file(&fixture("tiny-base").join("config.json")).unwrap();
    config.hidden_size = 64;
    config.intermediate_size = 128;
    let store = ParamStore::fresh(&Device::Cpu, 3);
    BertForMaskedLM::load(&store.root(), &config).unwrap();
    save_model(&model, &config, "BertForMaskedLM", &store.vars()).unwrap();
    copy_tokenizer(&fixture("tiny-base"), &model).unwrap();
    model
}

const WORDS: &[&str] = &[
    "the", "sea", "city", "tree", "farm", "night", "water", "school", "story", "day", "head",
    "page", "food", "sun", "eye", "plant", "north", "country", "people", "answer",
];

/// Sentences of two to five words, each its own target (a copy task), as two aligned files.
fn copy_pairs(dir: &Path, name: &str, count: usize, seed: u64) -> PairFile {
    let mut rng = bert::rng::Rng::new(seed);
    let lines: Vec<String> = (0..count)
        .map(|_| {
            let n = 2 + rng.below(4);
            (0..n)
                .map(|_| WORDS[rng.below(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let (source, target) = (
        dir.join(format!("{name}.src")),
        dir.join(format!("{name}.tgt")),
    );
    std::fs::write(&source, lines.join("\n") + "\n").unwrap();
    std::fs::write(&target, lines.join("\n") + "\n").unwrap();
    PairFile::Aligned { source, target }
}

fn data(dir: &Path) -> Seq2SeqData {
    Seq2SeqData {
        train: copy_pairs(dir, "train", 96, 1),
        eval: Some(copy_pairs(dir, "eval", 16, 2)),
        columns: PairColumns {
            source: "source".into(),
            target: "target".into(),
        },
        max_source_length: Some(16),
        max_target_length: Some(16),
        label_smoothing: 0.0,
        generation_num_beams: 1,
        generation_max_new_tokens: None,
        decoder_model: None,
        tie_encoder_decoder: false,
    }
}

/// Trains a prepared task to the end.
fn run(
    prepared: &bert::finetune::Prepared<Seq2SeqTask, EncoderDecoderConfig>,
    options: &TrainingOptions,
) -> Outcome {
    let stop = AtomicBool::new(false);
    let (task, store) = (&prepared.task, &prepared.store);
    train(task, store, &prepared.config, options, &stop, &mut |_| {}).unwrap()
}

fn options(dir: &Path, out: &str, model: &Path, epochs: usize) -> TrainingOptions {
    let mut options = TrainingOptions::new(dir.join(out), model.to_path_buf());
    options.epochs = Some(epochs);
    options.batch_size = 16;
    options.learning_rate = 1e-3;
    options.warmup_ratio = 0.05;
    options.save_steps = 0;
    options
}

#[test]
fn a_warm_started_bert2bert_learns_to_copy_and_writes_a_transformers_checkpoint() {
    let dir = temp_dir("learn");
    let bert = fresh_bert(&dir);
    let prepared = prepare_seq2seq(&bert, &data(&dir), 5).unwrap();
    let new = &prepared.newly_initialized;
    let (cross, other): (Vec<&String>, Vec<&String>) =
        new.iter().partition(|n| n.contains(".crossattention."));
    assert_eq!(
        cross.len(),
        2 * 10,
        "ten cross-attention tensors per decoder layer: {new:?}"
    );
    assert_eq!(
        other,
        ["encoder.pooler.dense.bias", "encoder.pooler.dense.weight"],
        "{new:?}"
    );
    let mut options = options(&dir, "out", &bert, 40);
    options.metric_for_best = Some("bleu".into());
    let outcome = run(&prepared, &options);
    let best = outcome.best.unwrap();
    assert!(best["bleu"].as_f64().unwrap() > 70.0, "{best:?}");

    let out = dir.join("out");
    for file in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    let generator = Generator::load(&out, &PipelineOptions::default()).unwrap();
    assert!(generator.report.unused.is_empty(), "{:?}", generator.report);
    let eval = std::fs::read_to_string(dir.join("eval.src")).unwrap();
    let sources: Vec<&str> = eval.lines().take(4).collect();
    let replies = generator.generate_texts(&sources).unwrap();
    let copied = sources.iter().zip(&replies).filter(|(s, r)| s == r).count();
    assert!(copied >= 3, "{sources:?} -> {replies:?}");
    // Beam search through the command line's overrides.
    let overrides = GenerationOverrides {
        num_beams: Some(3),
        ..Default::default()
    };
    let config = overrides.apply(&generator.generation).unwrap();
    let encodings: Vec<_> = sources
        .iter()
        .map(|s| generator.encode(s).unwrap())
        .collect();
    let beams = generator.generate(&encodings, &config).unwrap();
    assert!(beams.iter().all(|b| b.len() == 1 && b[0].score.is_some()));
}

#[test]
fn a_stopped_and_resumed_seq2seq_run_ends_where_an_uninterrupted_one_does() {
    let dir = temp_dir("resume");
    let bert = fresh_bert(&dir);
    let data = data(&dir);
    let whole = {
        let prepared = prepare_seq2seq(&bert, &data, 5).unwrap();
        run(&prepared, &options(&dir, "whole", &bert, 2))
    };
    let prepared = prepare_seq2seq(&bert, &data, 5).unwrap();
    let stop = AtomicBool::new(false);
    let first = train(
        &prepared.task,
        &prepared.store,
        &prepared.config,
        &options(&dir, "parts", &bert, 2),
        &stop,
        &mut |event| {
            if let Event::Step(m) = event {
                if m.step == 7 {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        },
    )
    .unwrap();
    assert_eq!((first.finished, first.steps), (false, 7));
    let (_, checkpoint) = bert::train::checkpoints(&dir.join("parts"))
        .unwrap()
        .pop()
        .unwrap();
    let prepared = prepare_seq2seq(&checkpoint, &data, 5).unwrap();
    assert!(
        prepared.newly_initialized.is_empty(),
        "the checkpoint is an encoder-decoder"
    );
    let mut resumed = options(&dir, "parts", &bert, 2);
    resumed.resume = true;
    let second = run(&prepared, &resumed);
    assert_eq!((second.steps, second.best), (whole.steps, whole.best));
    let weights = |run: &str| std::fs::read(dir.join(run).join("model.safetensors")).unwrap();
    assert!(
        weights("parts") == weights("whole"),
        "resumed weights differ"
    );
}

#[test]
fn bertshare_trains_one_set_of_weights_and_saves_both_names() {
    let dir = temp_dir("shared");
    let bert = fresh_bert(&dir);
    let mut data = data(&dir);
    data.tie_encoder_decoder = true;
    let prepared = prepare_seq2seq(&bert, &data, 5).unwrap();
    let vars = prepared.store.vars();
    assert!(vars
        .keys()
        .all(|n| !n.starts_with("decoder.bert.") || n.contains(".crossattention.")));
    run(&prepared, &options(&dir, "out", &bert, 1));
    let saved =
        candle_core::safetensors::load(dir.join("out/model.safetensors"), &Device::Cpu).unwrap();
    let encoder = &saved["encoder.encoder.layer.1.output.dense.weight"];
    let decoder = &saved["decoder.bert.encoder.layer.1.output.dense.weight"];
    assert_eq!(crate::common::max_abs_diff(encoder, decoder), 0.0);
    let generator = Generator::load(&dir.join("out"), &PipelineOptions::default()).unwrap();
    assert!(generator.config.tie_encoder_decoder);
    assert!(generator.report.unused.is_empty(), "{:?}", generator.report);
    generator.generate_texts(&["the sea"]).unwrap();
}

#[test]
fn bad_pairs_checkpoints_and_settings_are_named() {
    let dir = temp_dir("bad");
    let bert = fresh_bert(&dir);
    let error = |data: &Seq2SeqData| prepare_seq2seq(&bert, data, 5).err().unwrap().to_string();

    std::fs::write(dir.join("short.tgt"), "one\ntwo\n").unwrap();
    let mut uneven = data(&dir);
    uneven.train = PairFile::Aligned {
        source: dir.join("train.src"),
        target: dir.join("short.tgt"),
    };
    let err = error(&uneven);
    assert!(
        err.contains("train.src") && err.contains("short.tgt") && err.contains("96"),
        "{err}"
    );

    std::fs::write(dir.join("gap.src"), "one\n\nthree\n").unwrap();
    std::fs::write(dir.join("gap.tgt"), "one\ntwo\nthree\n").unwrap();
    let mut gap = data(&dir);
    gap.train = PairFile::Aligned {
        source: dir.join("gap.src"),
        target: dir.join("gap.tgt"),
    };
    let err = error(&gap);
    assert!(
        err.contains("gap.src:2") && err.contains("source is empty"),
        "{err}"
    );

    std::fs::write(dir.join("pairs.csv"), "src,target\nthe sea,the sea\n").unwrap();
    let mut columns = data(&dir);
    columns.train = PairFile::Table(dir.join("pairs.csv"));
    let err = error(&columns);
    assert!(
        err.contains("source") && err.contains("--source-column"),
        "{err}"
    );

    // Generation needs a decoder, and every cross-attention weight.
    let err = Generator::load(&fixture("tiny-base"), &PipelineOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an encoder-decoder"), "{err}");
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for file in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture("tiny-seq2seq").join(file), broken.join(file)).unwrap();
    }
    let mut tensors = candle_core::safetensors::load(
        fixture("tiny-seq2seq").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let missing = "decoder.bert.encoder.layer.1.crossattention.self.key.weight";
    tensors.remove(missing);
    candle_core::safetensors::save(&tensors, broken.join("model.safetensors")).unwrap();
    let err = Generator::load(&broken, &PipelineOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains(missing), "{err}");

    let generator = Generator::load(&fixture("tiny-seq2seq"), &PipelineOptions::default()).unwrap();
    let zero = GenerationOverrides {
        num_beams: Some(0),
        ..Default::default()
    };
    let err = zero.apply(&generator.generation).unwrap_err();
    assert!(err.to_string().contains("num_beams"), "{err}");
    assert!(generator.encode("  ").is_err(), "an empty source");
    let long = "the sea ".repeat(100);
    assert!(
        generator.encode(&long).unwrap().truncated,
        "a long source is truncated, and says so"
    );
}
