//! Training parity with PyTorch, as llm.c's test does it for GPT-2: for the tiny `BertForPreTraining`
//! (dropout off), one step's loss and every parameter's gradient match `transformers` within 1e-4
//! relative, and the first ten losses of AdamW with warm-up, decay and clipping match within 1e-3.

mod common;

use std::collections::HashMap;

use bert::checkpoint::Checkpoint;
use bert::loss::pretraining_loss;
use bert::model::{BertForPreTraining, Mode};
use bert::params::ParamStore;
use bert::rng::Rng;
use bert::train::{AdamW, AdamWConfig, LinearSchedule};
use bert::{Batch, BertConfig};
use candle_core::{Device, Tensor};
use common::{fixture, max_abs, max_abs_diff};
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

fn setup() -> Setup {
    let dir = fixture("tiny-pretraining");
    let mut config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, true, 0);
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
    let refs: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    let batch = Batch::from_ids(&refs, 0, &Device::Cpu).unwrap();
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
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("training/grads.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
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
        optimizer.step(&l.backward().unwrap(), lr).unwrap();
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
