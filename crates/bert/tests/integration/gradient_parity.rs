//! Training parity with PyTorch, as llm.c's test does it for GPT-2: for the tiny `BertForPreTraining`
//! (dropout off), one step's loss and every parameter's gradient match `transformers` within 1e-4
//! relative, and the first ten losses of AdamW with warm-up, decay and clipping match within 1e-3.
//! The fine-tuning heads (sequence classification in its three problem types, token classification,
//! question answering, and the joint intent and slot model through its task with a slot loss weight)
//! match one step's loss and every gradient too.

use std::collections::HashMap;

use crate::common::{fixture, max_abs, max_abs_diff};
use bert::finetune::intent_slots::{load_set, Utterance};
use bert::finetune::{FinetuneTask, IntentSlotsTask};
use bert::loss::{pretraining_loss, sequence_classification_loss, span_loss, token_cross_entropy};
use bert::model::{
    BertForIntentSlots, BertForPreTraining, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, Mode, Precision,
};
use bert::rng::Rng;
use bert::train::{AdamW, AdamWConfig, LinearSchedule};
use bert::weights::checkpoint::Checkpoint;
use bert::weights::config::ProblemType;
use bert::weights::params::ParamStore;
use bert::{Batch, BertConfig, Tokenizer};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    token_type_ids: Vec<Vec<u32>>,
    labels: Vec<Vec<i64>>,
    next_sentence_label: Vec<i64>,
    losses: Vec<f64>,
    lrs: Vec<f64>,
}

struct Setup {
    store: ParamStore,
    model: BertForPreTraining,
    batch: Batch,
    mlm_labels: Tensor,
    nsp_labels: Tensor,
    reference: Reference,
}

/// A batch of unpadded `(ids, type_ids)` rows, padded with id 0 as the references are.
fn batch_of(rows: &[(Vec<u32>, Vec<u32>)]) -> Batch {
    let refs: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    Batch::from_ids(&refs, 0, &Device::Cpu).unwrap()
}

fn setup() -> Setup {
    setup_in(Precision::F32)
}

/// The tiny model and the reference batch; `precision` bf16 trains in mixed precision.
fn setup_in(precision: Precision) -> Setup {
    let dir = fixture("tiny-pretraining");
    let mut config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, true, 0)
        .with_precision(precision);
    let model = BertForPreTraining::load(&store.root(), &config).unwrap();
    let text = std::fs::read_to_string(fixture("training/reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    // The reference batch is already padded: every row has the same length, and padding is id 0.
    let rows: Vec<(Vec<u32>, Vec<u32>)> = reference
        .input_ids
        .iter()
        .zip(&reference.token_type_ids)
        .map(|(ids, types)| {
            let len = ids.iter().rposition(|&id| id != 0).map_or(0, |p| p + 1);
            (ids[..len].to_vec(), types[..len].to_vec())
        })
        .collect();
    let batch = batch_of(&rows);
    assert_eq!(batch.input_ids.dims()[1], reference.input_ids[0].len());
    let flat: Vec<i64> = reference.labels.iter().flatten().copied().collect();
    let mlm_labels = Tensor::from_vec(flat, batch.input_ids.dims(), &Device::Cpu).unwrap();
    let nsp_labels = Tensor::new(reference.next_sentence_label.as_slice(), &Device::Cpu).unwrap();
    Setup {
        store,
        model,
        batch,
        mlm_labels,
        nsp_labels,
        reference,
    }
}

/// Every parameter's gradient against PyTorch's: within 1e-4 of the tensor's largest gradient, plus a
/// 1e-6 floor of fp32 noise for gradients that are zero in exact arithmetic (the key bias: softmax
/// ignores a shift shared by every key).
fn assert_gradients_match_pytorch(store: &ParamStore, grads: &candle_core::backprop::GradStore) {
    assert_gradients_match(store, grads, "training/grads.safetensors");
}

fn assert_gradients_match(
    store: &ParamStore,
    grads: &candle_core::backprop::GradStore,
    reference: &str,
) {
    let mut expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture(reference), &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    expected.remove("loss");
    let vars = store.vars();
    assert_eq!(vars.len(), expected.len(), "same parameters as PyTorch");
    for (name, var) in &vars {
        let reference = expected
            .get(name)
            .unwrap_or_else(|| panic!("PyTorch has no gradient for {name}"));
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let (scale, diff) = (max_abs(reference), max_abs_diff(grad, reference));
        assert!(
            diff <= 1e-4 * scale + 1e-6,
            "{name}: gradient differs by {diff} (scale {scale})"
        );
    }
}

fn loss(s: &Setup, rng: &std::sync::Mutex<Rng>) -> Tensor {
    let out = s.model.forward(&s.batch, &Mode::Train(rng)).unwrap();
    pretraining_loss(&out, &s.mlm_labels, &s.nsp_labels).unwrap()
}

#[test]
fn one_step_loss_and_every_gradient_match_pytorch() {
    let s = setup();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let l = loss(&s, &rng);
    let value: f32 = l.to_scalar().unwrap();
    assert!(
        (f64::from(value) - s.reference.losses[0]).abs() < 1e-4,
        "loss {value} vs {}",
        s.reference.losses[0]
    );
    assert_gradients_match_pytorch(&s.store, &l.backward().unwrap());
}

/// Mixed precision (`--bf16`): products rounded to bf16 move the loss and gradients off PyTorch's f32
/// ones by bf16's resolution, not more: every gradient at cosine >= 0.999 to PyTorch's and within 2% of
/// its scale, and some visibly different (the bf16 path ran).
#[test]
fn mixed_precision_gradients_stay_close_to_pytorch_f32() {
    let s = setup_in(Precision::Bf16);
    let rng = std::sync::Mutex::new(Rng::new(0));
    let l = loss(&s, &rng);
    let value: f32 = l.to_scalar().unwrap();
    let expected_loss = s.reference.losses[0];
    assert!(
        (f64::from(value) - expected_loss).abs() < 1e-2 * expected_loss,
        "loss {value} vs {expected_loss}"
    );
    let grads = l.backward().unwrap();
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("training/grads.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    let mut largest_relative = 0f32;
    for (name, var) in &s.store.vars() {
        let reference = &expected[name];
        let grad = grads.get(var.as_tensor()).unwrap();
        let (scale, diff) = (max_abs(reference), max_abs_diff(grad, reference));
        if scale < 1e-6 {
            continue; // zero in exact arithmetic (the key bias): noise either way
        }
        let a: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
        let dot: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(&a) * norm(&b));
        assert!(cosine >= 0.999, "{name}: cosine {cosine}");
        assert!(
            diff <= 0.02 * scale,
            "{name}: differs by {diff} (scale {scale})"
        );
        largest_relative = largest_relative.max(diff / scale);
    }
    assert!(
        largest_relative > 1e-4,
        "identical to f32: the bf16 products did not run"
    );
}

#[test]
fn ten_adamw_steps_match_pytorch_losses() {
    let s = setup();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let mut optimizer = AdamW::new(s.store.vars(), AdamWConfig::default()).unwrap();
    let schedule = LinearSchedule {
        peak_lr: 1e-3,
        warmup_steps: 3,
        total_steps: 10,
    };
    for (step, (&expected, &expected_lr)) in
        s.reference.losses.iter().zip(&s.reference.lrs).enumerate()
    {
        let l = loss(&s, &rng);
        let value: f32 = l.to_scalar().unwrap();
        assert!(
            (f64::from(value) - expected).abs() < 1e-3,
            "step {step}: loss {value} vs {expected}"
        );
        let lr = schedule.lr(step);
        assert!(
            (lr - expected_lr).abs() < 1e-12,
            "step {step}: lr {lr} vs {expected_lr}"
        );
        optimizer.step(&l.backward().unwrap().into(), lr).unwrap();
    }
}

#[test]
fn predicting_only_masked_positions_gives_the_same_loss_and_gradients() {
    let s = setup();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let labels: Vec<i64> = s.reference.labels.iter().flatten().copied().collect();
    let (positions, targets): (Vec<u32>, Vec<i64>) = labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != bert::loss::IGNORE_INDEX)
        .map(|(i, &l)| (i as u32, l))
        .unzip();
    let n = positions.len();
    let positions = Tensor::from_vec(positions, n, &Device::Cpu).unwrap();
    let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
    let out = s
        .model
        .forward_at(&s.batch, &positions, &Mode::Train(&rng))
        .unwrap();
    let l = (bert::loss::cross_entropy(&out.prediction_logits, &targets).unwrap()
        + bert::loss::cross_entropy(&out.seq_relationship_logits, &s.nsp_labels).unwrap())
    .unwrap();
    let value: f32 = l.to_scalar().unwrap();
    assert!(
        (f64::from(value) - s.reference.losses[0]).abs() < 1e-4,
        "loss {value}"
    );
    assert_gradients_match_pytorch(&s.store, &l.backward().unwrap());
}

/// The tiny fine-tuning checkpoint `name` with dropout off, trainable, and its reference batch.
fn head_setup(name: &str) -> (BertConfig, ParamStore, Batch, serde_json::Value) {
    let dir = fixture(name);
    let mut config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    config.classifier_dropout = Some(0.0);
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, true, 0);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..reference["input_ids"].as_array().unwrap().len())
        .map(|i| {
            let ids: Vec<u32> = serde_json::from_value(reference["input_ids"][i].clone()).unwrap();
            let types: Vec<u32> =
                serde_json::from_value(reference["token_type_ids"][i].clone()).unwrap();
            let mask: Vec<u32> =
                serde_json::from_value(reference["attention_mask"][i].clone()).unwrap();
            let len = mask.iter().filter(|&&m| m == 1).count();
            (ids[..len].to_vec(), types[..len].to_vec())
        })
        .collect();
    let batch = batch_of(&rows);
    (config, store, batch, reference)
}

/// A label tensor from the reference's `labels[key]`, as i64 (class ids) or f32 (targets).
fn labels(reference: &serde_json::Value, key: &str, float: bool) -> Tensor {
    let value = &reference["labels"][key];
    let nested = value.as_array().unwrap().iter().any(|v| v.is_array());
    let rows: Vec<Vec<f64>> = if nested {
        serde_json::from_value(value.clone()).unwrap()
    } else {
        vec![serde_json::from_value(value.clone()).unwrap()]
    };
    let shape: Vec<usize> = if nested {
        vec![rows.len(), rows[0].len()]
    } else {
        vec![rows[0].len()]
    };
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    let t = Tensor::from_vec(flat, shape, &Device::Cpu).unwrap();
    t.to_dtype(if float { DType::F32 } else { DType::I64 })
        .unwrap()
}

fn assert_head_step_matches(name: &str, loss: &Tensor, store: &ParamStore) {
    let reference = candle_core::safetensors::load(
        fixture(&format!("training/{name}-grads.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let expected: Vec<f32> = reference["loss"].to_vec1().unwrap();
    let value: f32 = loss.to_scalar().unwrap();
    assert!(
        (value - expected[0]).abs() <= 1e-4 * expected[0].abs().max(1.0),
        "{name}: loss {value} vs {}",
        expected[0]
    );
    assert_gradients_match(
        store,
        &loss.backward().unwrap(),
        &format!("training/{name}-grads.safetensors"),
    );
}

#[test]
fn sequence_classification_heads_match_pytorch_gradients() {
    for name in ["tiny-classify", "tiny-multilabel", "tiny-regression"] {
        let (config, store, batch, reference) = head_setup(name);
        let model = BertForSequenceClassification::load(&store.root(), &config).unwrap();
        let rng = std::sync::Mutex::new(Rng::new(0));
        let logits = model.forward(&batch, &Mode::Train(&rng)).unwrap();
        let problem = config.problem_type();
        let float = problem != ProblemType::SingleLabelClassification;
        let targets = labels(&reference, "labels", float);
        let loss = sequence_classification_loss(&logits, &targets, problem).unwrap();
        assert_head_step_matches(name, &loss, &store);
    }
}

#[test]
fn token_classification_head_matches_pytorch_gradients() {
    let (config, store, batch, reference) = head_setup("tiny-ner");
    let model = BertForTokenClassification::load(&store.root(), &config).unwrap();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let logits = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let loss = token_cross_entropy(&logits, &labels(&reference, "labels", false)).unwrap();
    assert_head_step_matches("tiny-ner", &loss, &store);
}

#[test]
fn question_answering_head_matches_pytorch_gradients() {
    let (config, store, batch, reference) = head_setup("tiny-qa");
    let model = BertForQuestionAnswering::load(&store.root(), &config).unwrap();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let out = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let loss = span_loss(
        &out.start_logits,
        &out.end_logits,
        &labels(&reference, "start_positions", false),
        &labels(&reference, "end_positions", false),
    )
    .unwrap();
    assert_head_step_matches("tiny-qa", &loss, &store);
}

/// The reference's utterances, as the joint task reads them from a file.
fn utterances(reference: &serde_json::Value) -> Vec<Utterance> {
    let list = reference["utterances"].as_array().unwrap();
    (list.iter().enumerate())
        .map(|(i, u)| Utterance {
            line: i + 1,
            words: serde_json::from_value(u["words"].clone()).unwrap(),
            tags: serde_json::from_value(u["tags"].clone()).unwrap(),
            intent: u["intent"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// The joint intent and slot model through its fine-tuning task: the utterances tokenized as words
/// with each tag on its word's first sub-token (the reference's tokens and labels), and the intent
/// loss plus `slot_loss_coef` (0.5) times the slot loss.
#[test]
fn intent_slots_head_matches_pytorch_gradients() {
    let name = "tiny-intent-slots";
    let (config, store, _, reference) = head_setup(name);
    let (intents, tags) = config.intent_and_slot_labels().unwrap();
    let model =
        BertForIntentSlots::load(&store.root(), &config, intents.len(), tags.len()).unwrap();
    let dir = fixture(name);
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let train = load_set(&dir, utterances(&reference), &intents, &tags, &tokenizer).unwrap();
    let expected = &reference["labels"];
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let slots: Vec<Vec<i64>> = serde_json::from_value(expected["slot_labels"].clone()).unwrap();
    for (i, encoding) in train.encodings.iter().enumerate() {
        let len = encoding.ids.len();
        assert_eq!(encoding.ids, ids[i][..len], "utterance {i}: token ids");
        assert!(
            ids[i][len..].iter().all(|&id| id == 0),
            "utterance {i}: too few tokens"
        );
        assert_eq!(
            train.slots[i],
            slots[i][..len],
            "utterance {i}: slot labels"
        );
    }
    let intent_labels: Vec<i64> =
        serde_json::from_value(expected["intent_labels"].clone()).unwrap();
    assert_eq!(train.intents, intent_labels);
    let task = IntentSlotsTask {
        model,
        intents,
        tags,
        train,
        eval: None,
        pad_id: tokenizer.pad_id(),
        slot_loss_coef: reference["slot_loss_coef"].as_f64().unwrap(),
    };
    let rng = std::sync::Mutex::new(Rng::new(0));
    let all: Vec<usize> = (0..task.train_len()).collect();
    let loss = task.train_loss(&all, &Mode::Train(&rng)).unwrap().loss;
    assert_head_step_matches(name, &loss, &store);
}
