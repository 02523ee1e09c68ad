//! BERT2BERT against `transformers`' `EncoderDecoderModel` (fixtures from
//! `scripts/make_generation_fixtures.py`): teacher-forcing logits and loss, with separate and with
//! shared (`tie_encoder_decoder`) encoder and decoder weights, and the errors of incomplete checkpoints.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::common::{assert_close, fixture, Dumped};
use bert::generation::{generate, GenerationConfig};
use bert::loss;
use bert::model::encoder_decoder::shift_tokens_right;
use bert::model::{EncoderDecoderModel, Mode};
use bert::weights::encoder_decoder_config::EncoderDecoderConfig;
use bert::weights::pretrained::Pretrained;

const TOL: f32 = 1e-4;

#[derive(Deserialize)]
pub struct Seq2SeqReference {
    pub sources: Vec<String>,
    pub teacher_forcing: TeacherForcing,
    pub generate: Vec<GenerateCase>,
}

#[derive(Deserialize)]
pub struct TeacherForcing {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub labels: Vec<Vec<i64>>,
    pub logits: Dumped,
    pub loss: f32,
}

#[derive(Deserialize)]
pub struct GenerateCase {
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub sequences: Vec<Vec<u32>>,
}

pub const FIXTURES: [&str; 2] = ["tiny-seq2seq", "tiny-seq2seq-shared"];

pub fn seq2seq_reference(name: &str) -> Seq2SeqReference {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn load(name: &str) -> Pretrained<EncoderDecoderModel, EncoderDecoderConfig> {
    Pretrained::load(&fixture(name), &Device::Cpu, EncoderDecoderModel::load).unwrap()
}

fn matrix(rows: &[Vec<u32>]) -> Tensor {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

pub fn source_batch(input_ids: &[Vec<u32>], attention_mask: &[Vec<u32>]) -> bert::Batch {
    let ids = matrix(input_ids);
    bert::Batch {
        token_type_ids: ids.zeros_like().unwrap(),
        input_ids: ids,
        attention_mask: matrix(attention_mask)
            .to_dtype(candle_core::DType::F32)
            .unwrap(),
    }
}

#[test]
fn teacher_forcing_logits_and_loss_equal_transformers() {
    for name in FIXTURES {
        let r = seq2seq_reference(name).teacher_forcing;
        let m = load(name);
        assert!(
            m.report.newly_initialized.is_empty(),
            "{name}: {:?}",
            m.report
        );
        assert!(m.report.unused.is_empty(), "{name}: {:?}", m.report);
        let c = &m.config;
        let (start, pad) = (c.decoder_start_token_id.unwrap(), c.pad_token_id.unwrap());
        let decoder_ids = shift_tokens_right(&r.labels, start, pad);
        let decoder_mask: Vec<Vec<u32>> = decoder_ids
            .iter()
            .map(|row| row.iter().map(|&id| u32::from(id != pad)).collect())
            .collect();
        let source = source_batch(&r.input_ids, &r.attention_mask);
        let logits = m
            .model
            .forward(
                &source,
                &matrix(&decoder_ids),
                Some(&matrix(&decoder_mask)),
                &Mode::Eval,
            )
            .unwrap();
        assert_close(name, &logits, &r.logits, TOL);
        let (b, t, v) = logits.dims3().unwrap();
        let labels = Tensor::new(r.labels.concat(), &Device::Cpu).unwrap();
        let l = loss::cross_entropy(&logits.reshape((b * t, v)).unwrap(), &labels).unwrap();
        let l: f32 = l.to_scalar().unwrap();
        assert!((l - r.loss).abs() < TOL, "{name}: loss {l} vs {}", r.loss);
    }
}

/// The settings of a fixture case, as `transformers`' `generate()` keywords.
fn settings(case: &GenerateCase, base: &GenerationConfig) -> GenerationConfig {
    let mut config = base.clone();
    for (key, value) in &case.settings {
        let number = || value.as_f64().unwrap();
        match key.as_str() {
            "max_new_tokens" => config.max_new_tokens = Some(number() as usize),
            "min_new_tokens" => config.min_new_tokens = Some(number() as usize),
            "num_beams" => config.num_beams = number() as usize,
            "length_penalty" => config.length_penalty = number() as f32,
            "no_repeat_ngram_size" => config.no_repeat_ngram_size = number() as usize,
            "num_return_sequences" => config.num_return_sequences = number() as usize,
            "early_stopping" => {
                config.early_stopping = serde_json::from_value(value.clone()).unwrap()
            }
            other => panic!("setting {other}"),
        }
    }
    config
}

#[test]
fn greedy_and_beam_search_give_the_tokens_of_transformers_generate() {
    for name in FIXTURES {
        let r = seq2seq_reference(name);
        let m = load(name);
        let base = GenerationConfig::for_model(&fixture(name), &m.config).unwrap();
        let tf = &r.teacher_forcing;
        let source = source_batch(&tf.input_ids, &tf.attention_mask);
        for case in &r.generate {
            let config = settings(case, &base);
            let outputs = generate(&m.model, &source, &config).unwrap();
            let expected = case.sequences.chunks(config.num_return_sequences);
            for (i, (ours, theirs)) in outputs.iter().zip(expected).enumerate() {
                assert_eq!(ours.len(), theirs.len(), "{name} {:?}", case.settings);
                for (ours, theirs) in ours.iter().zip(theirs) {
                    let mut tokens = vec![config.decoder_start_token_id.unwrap()];
                    tokens.extend(&ours.tokens);
                    tokens.extend(ours.ended.then_some(config.eos_token_id[0]));
                    let rest = &theirs[tokens.len().min(theirs.len())..];
                    let fill = [config.pad_token_id.unwrap(), config.eos_token_id[0]];
                    assert!(
                        theirs.starts_with(&tokens) && rest.iter().all(|t| fill.contains(t)),
                        "{name} {:?} source {i}: ours {tokens:?}, transformers {theirs:?}",
                        case.settings
                    );
                }
            }
        }
    }
}
