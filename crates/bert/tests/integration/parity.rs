//! Parity with `transformers`: tiny random checkpoints of every head, made with their reference outputs
//! by `scripts/make_fixtures.py`. Token ids must be identical; hidden states, pooled output, logits and
//! losses within 1e-4.

use crate::common::{assert_close, fixture, max_abs_diff, reference, Reference};
use bert::loss;
use bert::model::*;
use bert::weights::pretrained::Pretrained;
use bert::{Batch, Tokenizer};
use candle_core::{Device, Tensor};

const TOL: f32 = 1e-4;

/// Tokenizes the reference texts with our tokenizer, checks the ids, and returns the padded batch.
fn batch_for(name: &str, reference: &Reference) -> Batch {
    let tokenizer = Tokenizer::from_dir(&fixture(name)).unwrap();
    let texts = reference.texts.as_array().unwrap();
    let encodings: Vec<_> = texts
        .iter()
        .map(|t| match t {
            serde_json::Value::String(s) => tokenizer.encode(s).unwrap(),
            pair => tokenizer
                .encode_pair(pair[0].as_str().unwrap(), pair[1].as_str().unwrap())
                .unwrap(),
        })
        .collect();
    for (i, e) in encodings.iter().enumerate() {
        let len = reference.attention_mask[i]
            .iter()
            .filter(|&&m| m == 1)
            .count();
        assert_eq!(
            e.ids,
            reference.input_ids[i][..len],
            "{name}: ids of text {i}"
        );
        assert_eq!(
            e.type_ids,
            reference.token_type_ids[i][..len],
            "{name}: type ids of text {i}"
        );
    }
    let batch = Batch::from_encodings(&encodings, tokenizer.pad_id(), &Device::Cpu).unwrap();
    let mask: Vec<Vec<f32>> = batch.attention_mask.to_vec2().unwrap();
    let expected: Vec<Vec<f32>> = reference
        .attention_mask
        .iter()
        .map(|r| r.iter().map(|&m| m as f32).collect())
        .collect();
    assert_eq!(mask, expected, "{name}: attention mask");
    batch
}

fn labels(reference: &Reference, key: &str) -> Tensor {
    let value = &reference.labels[key];
    let flat: Vec<f64> = match value {
        serde_json::Value::Array(rows) if rows.first().is_some_and(|r| r.is_array()) => rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect(),
        serde_json::Value::Array(row) => row.iter().map(|v| v.as_f64().unwrap()).collect(),
        other => panic!("labels {other}"),
    };
    let rows = value.as_array().unwrap().len();
    let t = Tensor::new(flat, &Device::Cpu).unwrap();
    if flat_is_matrix(value) {
        t.reshape((rows, ())).unwrap()
    } else {
        t
    }
}

fn flat_is_matrix(value: &serde_json::Value) -> bool {
    value
        .as_array()
        .unwrap()
        .first()
        .is_some_and(|r| r.is_array())
}

fn load<M>(
    name: &str,
    build: impl FnOnce(&bert::weights::params::Params, &bert::BertConfig) -> bert::Result<M>,
) -> Pretrained<M> {
    Pretrained::load(&fixture(name), &Device::Cpu, build).unwrap()
}

#[test]
fn base_model_hidden_states_and_pooler() {
    for name in ["tiny-base", "tiny-legacy"] {
        let r = reference(name);
        let batch = batch_for(name, &r);
        let m = load(name, |p, c| BertModel::load(&p.pp("bert"), c, true));
        assert!(m.report.newly_initialized.is_empty(), "{:?}", m.report);
        assert!(m.report.unused.is_empty(), "{:?}", m.report);
        let out = m.model.forward(&batch, &Mode::Eval).unwrap();
        assert_close(
            name,
            &out.hidden_states,
            &r.outputs["last_hidden_state"],
            TOL,
        );
        assert_close(
            name,
            out.pooled.as_ref().unwrap(),
            &r.outputs["pooler_output"],
            TOL,
        );
    }
}

#[test]
fn masked_lm_logits_and_loss() {
    let r = reference("tiny-mlm");
    let batch = batch_for("tiny-mlm", &r);
    let m = load("tiny-mlm", BertForMaskedLM::load);
    assert!(m.report.newly_initialized.is_empty(), "{:?}", m.report);
    let logits = m.model.forward(&batch, &Mode::Eval).unwrap();
    assert_close("mlm logits", &logits, &r.outputs["logits"], TOL);
    let l = loss::token_cross_entropy(
        &logits,
        &labels(&r, "labels")
            .reshape(logits.dims()[..2].to_vec())
            .unwrap(),
    )
    .unwrap();
    assert_close("mlm loss", &l.reshape(1).unwrap(), &r.outputs["loss"], TOL);
}

#[test]
fn next_sentence_prediction_from_pytorch_bin() {
    let r = reference("tiny-nsp");
    let batch = batch_for("tiny-nsp", &r);
    let m = load("tiny-nsp", BertForNextSentencePrediction::load);
    assert!(m.report.newly_initialized.is_empty(), "{:?}", m.report);
    let logits = m.model.forward(&batch, &Mode::Eval).unwrap();
    assert_close("nsp logits", &logits, &r.outputs["logits"], TOL);
    let l = loss::cross_entropy(&logits, &labels(&r, "labels")).unwrap();
    assert_close("nsp loss", &l.reshape(1).unwrap(), &r.outputs["loss"], TOL);
}

#[test]
fn pretraining_heads_from_sharded_safetensors() {
    let r = reference("tiny-pretraining");
    let batch = batch_for("tiny-pretraining", &r);
    let m = load("tiny-pretraining", BertForPreTraining::load);
    assert!(m.report.newly_initialized.is_empty(), "{:?}", m.report);
    let out = m.model.forward(&batch, &Mode::Eval).unwrap();
    assert_close(
        "prediction logits",
        &out.prediction_logits,
        &r.outputs["prediction_logits"],
        TOL,
    );
    assert_close(
        "nsp logits",
        &out.seq_relationship_logits,
        &r.outputs["seq_relationship_logits"],
        TOL,
    );
    let mlm_labels = labels(&r, "labels")
        .reshape(out.prediction_logits.dims()[..2].to_vec())
        .unwrap();
    let total = (loss::token_cross_entropy(&out.prediction_logits, &mlm_labels).unwrap()
        + loss::cross_entropy(
            &out.seq_relationship_logits,
            &labels(&r, "next_sentence_label"),
        )
        .unwrap())
    .unwrap();
    assert_close(
        "pretraining loss",
        &total.reshape(1).unwrap(),
        &r.outputs["loss"],
        TOL,
    );
}

#[test]
fn sequence_classification_single_multi_label_and_regression() {
    for name in ["tiny-classify", "tiny-multilabel", "tiny-regression"] {
        let r = reference(name);
        let batch = batch_for(name, &r);
        let m = load(name, BertForSequenceClassification::load);
        assert!(m.report.newly_initialized.is_empty(), "{:?}", m.report);
        let logits = m.model.forward(&batch, &Mode::Eval).unwrap();
        assert_close(name, &logits, &r.outputs["logits"], TOL);
        let l = loss::sequence_classification_loss(
            &logits,
            &labels(&r, "labels"),
            m.config.problem_type(),
        )
        .unwrap();
        assert_close(
            &format!("{name} loss"),
            &l.reshape(1).unwrap(),
            &r.outputs["loss"],
            TOL,
        );
    }
}

#[test]
fn token_classification_logits_and_loss() {
    let r = reference("tiny-ner");
    let batch = batch_for("tiny-ner", &r);
    let m = load("tiny-ner", BertForTokenClassification::load);
    let logits = m.model.forward(&batch, &Mode::Eval).unwrap();
    assert_close("ner logits", &logits, &r.outputs["logits"], TOL);
    assert_eq!(m.config.labels(), ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]);
    let l = loss::token_cross_entropy(&logits, &labels(&r, "labels")).unwrap();
    assert_close("ner loss", &l.reshape(1).unwrap(), &r.outputs["loss"], TOL);
}

#[test]
fn question_answering_span_logits_and_loss() {
    let r = reference("tiny-qa");
    let batch = batch_for("tiny-qa", &r);
    let m = load("tiny-qa", BertForQuestionAnswering::load);
    let out = m.model.forward(&batch, &Mode::Eval).unwrap();
    assert_close(
        "start logits",
        &out.start_logits,
        &r.outputs["start_logits"],
        TOL,
    );
    assert_close("end logits", &out.end_logits, &r.outputs["end_logits"], TOL);
    let l = loss::span_loss(
        &out.start_logits,
        &out.end_logits,
        &labels(&r, "start_positions"),
        &labels(&r, "end_positions"),
    )
    .unwrap();
    assert_close("qa loss", &l.reshape(1).unwrap(), &r.outputs["loss"], TOL);
}

#[test]
fn missing_head_weights_are_initialised_and_reported() {
    // The base checkpoint has no classifier: it is newly initialised and named, as transformers warns.
    let m = load("tiny-base", BertForSequenceClassification::load);
    assert_eq!(
        m.report.newly_initialized,
        ["classifier.bias", "classifier.weight"]
    );
    // A masked-LM checkpoint has no pooler: loading a classifier initialises it too.
    let m = load("tiny-mlm", BertForSequenceClassification::load);
    assert!(m
        .report
        .newly_initialized
        .contains(&"bert.pooler.dense.weight".to_string()));
    assert!(
        m.report
            .unused
            .iter()
            .any(|n| n.starts_with("cls.predictions")),
        "{:?}",
        m.report
    );
}

#[test]
fn a_padded_batch_equals_each_text_alone() {
    let tokenizer = Tokenizer::from_dir(&fixture("tiny-base")).unwrap();
    let m = load("tiny-base", |p, c| BertModel::load(&p.pp("bert"), c, true));
    let texts = [
        "the sea",
        "the capital of france is paris, a city in the north",
        "中文",
    ];
    let encodings: Vec<_> = texts.iter().map(|t| tokenizer.encode(t).unwrap()).collect();
    let batch = Batch::from_encodings(&encodings, tokenizer.pad_id(), &Device::Cpu).unwrap();
    let together = m.model.forward(&batch, &Mode::Eval).unwrap();
    for (i, e) in encodings.iter().enumerate() {
        let alone_batch = Batch::from_encodings(std::slice::from_ref(e), 0, &Device::Cpu).unwrap();
        let alone = m.model.forward(&alone_batch, &Mode::Eval).unwrap();
        let rows = together
            .hidden_states
            .get(i)
            .unwrap()
            .narrow(0, 0, e.ids.len())
            .unwrap();
        let diff = max_abs_diff(&rows, &alone.hidden_states.get(0).unwrap());
        assert!(diff < 1e-5, "text {i}: hidden states differ by {diff}");
        let pooled = (together.pooled.as_ref().unwrap().get(i).unwrap()
            - alone.pooled.unwrap().get(0).unwrap())
        .unwrap();
        let diff: f32 = pooled
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "text {i}: pooled output differs by {diff}");
    }
}

#[test]
fn an_untied_decoder_is_its_own_weight() {
    let dir = std::env::temp_dir().join(format!("bert-untied-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture("tiny-mlm").join(f), dir.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(fixture("tiny-mlm/config.json")).unwrap();
    let config = config.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    let m = Pretrained::load(&dir, &Device::Cpu, BertForMaskedLM::load).unwrap();
    assert_eq!(
        m.report.newly_initialized,
        ["cls.predictions.decoder.weight"]
    );
    let tied = load("tiny-mlm", BertForMaskedLM::load);
    assert!(
        tied.report.newly_initialized.is_empty() && tied.report.unused.is_empty(),
        "{:?}",
        tied.report
    );
}
