//! The model is train-ready: in training mode every weight receives a non-zero gradient (candle's fused
//! LayerNorm and softmax would silently give none), the differentiable path gives the inference numbers
//! when dropout is off, and dropout is on and reproducible from a seed.

use std::sync::Mutex;

use crate::common::{fixture, max_abs_diff};
use bert::loss;
use bert::model::*;
use bert::rng::Rng;
use bert::weights::checkpoint::Checkpoint;
use bert::weights::params::ParamStore;
use bert::{Batch, BertConfig, Tokenizer};
use candle_core::{Device, Tensor};

fn setup(name: &str, no_dropout: bool) -> (ParamStore, BertConfig, Batch) {
    let dir = fixture(name);
    let mut config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    if no_dropout {
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        config.classifier_dropout = Some(0.0);
    }
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, true, 1);
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let encodings = [
        tokenizer
            .encode_pair("the capital of france", "is paris")
            .unwrap(),
        tokenizer.encode("a [MASK] movie").unwrap(),
    ];
    let batch = Batch::from_encodings(&encodings, tokenizer.pad_id(), &Device::Cpu).unwrap();
    (store, config, batch)
}

fn assert_every_var_has_a_gradient(store: &ParamStore, loss: &Tensor) {
    let grads = loss.backward().unwrap();
    let vars = store.vars();
    assert!(vars.len() > 30, "only {} vars", vars.len());
    for (name, var) in &vars {
        let grad = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f32 = grad.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm.is_finite(), "{name}: gradient norm {norm}");
        // A shift shared by every score of a softmax changes nothing, so these gradients are zero in
        // exact arithmetic: the key bias (every key of a query), the span-logit bias (every position).
        let shift_invariant =
            name.ends_with("attention.self.key.bias") || name == "qa_outputs.bias";
        assert!(
            norm > 0.0 || shift_invariant,
            "{name}: gradient norm {norm}"
        );
    }
}

fn labels(values: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

/// MLM labels predicting every real, non-special token.
fn mlm_labels(batch: &Batch) -> Tensor {
    let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = batch.attention_mask.to_vec2().unwrap();
    let flat: Vec<i64> = ids
        .iter()
        .zip(&mask)
        .flat_map(|(row, m)| {
            row.iter()
                .zip(m)
                .map(|(&id, &m)| if m > 0.0 && id > 4 { id as i64 } else { -100 })
        })
        .collect();
    labels(&flat, batch.input_ids.dims())
}

#[test]
fn pretraining_gradients_reach_every_weight() {
    let (store, config, batch) = setup("tiny-pretraining", false);
    let model = BertForPreTraining::load(&store.root(), &config).unwrap();
    let rng = Mutex::new(Rng::new(3));
    let out = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let mlm = loss::token_cross_entropy(&out.prediction_logits, &mlm_labels(&batch)).unwrap();
    let nsp = loss::cross_entropy(&out.seq_relationship_logits, &labels(&[0, 1], &[2])).unwrap();
    assert_every_var_has_a_gradient(&store, &(mlm + nsp).unwrap());
    // The decoder is tied: there is one word-embedding variable and no separate decoder weight.
    assert!(!store.vars().contains_key("cls.predictions.decoder.weight"));
}

#[test]
fn task_head_gradients_reach_every_weight() {
    let (store, config, batch) = setup("tiny-classify", false);
    let model = BertForSequenceClassification::load(&store.root(), &config).unwrap();
    let rng = Mutex::new(Rng::new(3));
    let logits = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let l =
        loss::sequence_classification_loss(&logits, &labels(&[2, 0], &[2]), config.problem_type())
            .unwrap();
    assert_every_var_has_a_gradient(&store, &l);

    let (store, config, batch) = setup("tiny-ner", false);
    let model = BertForTokenClassification::load(&store.root(), &config).unwrap();
    let logits = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let (b, t) = batch.input_ids.dims2().unwrap();
    let tags: Vec<i64> = (0..b * t).map(|i| (i % 5) as i64).collect();
    assert_every_var_has_a_gradient(
        &store,
        &loss::token_cross_entropy(&logits, &labels(&tags, &[b, t])).unwrap(),
    );

    let (store, config, batch) = setup("tiny-qa", false);
    let model = BertForQuestionAnswering::load(&store.root(), &config).unwrap();
    let out = model.forward(&batch, &Mode::Train(&rng)).unwrap();
    let l = loss::span_loss(
        &out.start_logits,
        &out.end_logits,
        &labels(&[5, 2], &[2]),
        &labels(&[6, 3], &[2]),
    )
    .unwrap();
    assert_every_var_has_a_gradient(&store, &l);
}

#[test]
fn training_path_without_dropout_equals_inference() {
    let (store, config, batch) = setup("tiny-pretraining", true);
    let model = BertForPreTraining::load(&store.root(), &config).unwrap();
    let rng = Mutex::new(Rng::new(3));
    let train = model
        .forward(&batch, &Mode::Train(&rng))
        .unwrap()
        .prediction_logits;
    let eval = model
        .forward(&batch, &Mode::Eval)
        .unwrap()
        .prediction_logits;
    let diff = max_abs_diff(&train, &eval);
    assert!(diff < 1e-4, "train and eval paths differ by {diff}");
}

#[test]
fn dropout_is_active_and_seeded() {
    let (store, config, batch) = setup("tiny-classify", false);
    let model = BertForSequenceClassification::load(&store.root(), &config).unwrap();
    let run = |seed| {
        let rng = Mutex::new(Rng::new(seed));
        let v: Vec<f32> = model
            .forward(&batch, &Mode::Train(&rng))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        v
    };
    let eval: Vec<f32> = model
        .forward(&batch, &Mode::Eval)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(run(5), run(5), "same seed, same dropout");
    assert_ne!(run(5), run(6), "another seed, other dropout");
    assert_ne!(run(5), eval, "dropout changes the training forward pass");
}

#[test]
fn a_fresh_store_initialises_every_weight_as_transformers_does() {
    let config = BertConfig {
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 16,
        vocab_size: 20,
        max_position_embeddings: 10,
        ..Default::default()
    };
    let store = ParamStore::fresh(&Device::Cpu, 0);
    BertModel::load(&store.root().pp("bert"), &config, true).unwrap();
    let vars = store.vars();
    let values = |name: &str| -> Vec<f32> {
        vars[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert!(values("bert.embeddings.LayerNorm.weight")
        .iter()
        .all(|&v| v == 1.0));
    assert!(values("bert.encoder.layer.0.output.dense.bias")
        .iter()
        .all(|&v| v == 0.0));
    let w = values("bert.encoder.layer.0.attention.self.query.weight");
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!(std > 0.005 && std < 0.05, "std {std}");
    assert_eq!(store.report().newly_initialized.len(), vars.len());
}

/// Gradient checkpointing (`Mode::Checkpointed`) recomputes each layer in the backward pass with the
/// same dropout masks: every weight's gradient equals the one of the plain training pass.
#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let (store, config, batch) = setup("tiny-pretraining", false);
    let model = BertForPreTraining::load(&store.root(), &config).unwrap();
    let loss_of = |mode: &Mode| {
        let out = model.forward(&batch, mode).unwrap();
        let mlm = loss::token_cross_entropy(&out.prediction_logits, &mlm_labels(&batch)).unwrap();
        let nsp =
            loss::cross_entropy(&out.seq_relationship_logits, &labels(&[0, 1], &[2])).unwrap();
        (mlm + nsp).unwrap()
    };
    let plain = loss_of(&Mode::Train(&Mutex::new(Rng::new(7))))
        .backward()
        .unwrap();
    let recomputed = bert::nn::checkpoint::Recomputation::default();
    let rng = Mutex::new(Rng::new(7));
    let loss = loss_of(&Mode::Checkpointed(&rng, &recomputed));
    let mut checkpointed = loss.backward().unwrap();
    let layer_weights = recomputed.take();
    checkpointed.extend(layer_weights).unwrap();
    let vars = store.vars();
    let mut layer_vars = 0;
    for (name, var) in &vars {
        let a = plain
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no plain gradient"));
        let b = checkpointed
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no gradient with checkpointing"));
        let diff = max_abs_diff(a, b);
        assert!(diff < 1e-6, "{name}: gradients differ by {diff}");
        layer_vars += usize::from(name.contains(".layer."));
    }
    assert!(
        layer_vars > 10,
        "the layers' weights were compared ({layer_vars})"
    );
}
