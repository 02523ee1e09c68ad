//! BERT2BERT against `transformers`' `EncoderDecoderModel` (fixtures from
//! `scripts/make_generation_fixtures.py`): teacher-forcing logits and loss, with separate and with
//! shared (`tie_encoder_decoder`) encoder and decoder weights; the tokens of greedy and beam-search
//! generation; one training step's gradients and the label-smoothed loss.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::common::{assert_close, fixture, max_abs, max_abs_diff, Dumped};
use bert::generation::{generate, GenerationConfig};
use bert::loss;
use bert::model::encoder_decoder::shift_tokens_right;
use bert::model::{EncoderDecoderModel, Mode};
use bert::pipelines::{Generator, PipelineOptions};
use bert::rng::Rng;
use bert::weights::checkpoint::Checkpoint;
use bert::weights::encoder_decoder_config::EncoderDecoderConfig;
use bert::weights::params::ParamStore;
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
    #[serde(rename = "loss_label_smoothing_0.1")]
    pub loss_label_smoothing: f32,
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

#[test]
fn one_step_gradients_and_label_smoothing_equal_pytorch() {
    let name = "tiny-seq2seq";
    let dir = fixture(name);
    let r = seq2seq_reference(name).teacher_forcing;
    let mut config = EncoderDecoderConfig::from_file(&dir.join("config.json")).unwrap();
    for side in [&mut config.encoder, &mut config.decoder] {
        side.hidden_dropout_prob = 0.0;
        side.attention_probs_dropout_prob = 0.0;
    }
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, true, 0);
    let model = EncoderDecoderModel::load(&store.root(), &config).unwrap();
    let (start, pad) = (
        config.decoder_start_token_id.unwrap(),
        config.pad_token_id.unwrap(),
    );
    let decoder_ids = shift_tokens_right(&r.labels, start, pad);
    let decoder_mask: Vec<Vec<u32>> = (decoder_ids.iter())
        .map(|row| row.iter().map(|&id| u32::from(id != pad)).collect())
        .collect();
    let rng = std::sync::Mutex::new(Rng::new(0));
    let source = source_batch(&r.input_ids, &r.attention_mask);
    let logits = model
        .forward(
            &source,
            &matrix(&decoder_ids),
            Some(&matrix(&decoder_mask)),
            &Mode::Train(&rng),
        )
        .unwrap();
    let (b, t, v) = logits.dims3().unwrap();
    let logits = logits.reshape((b * t, v)).unwrap();
    let labels = Tensor::new(r.labels.concat(), &Device::Cpu).unwrap();
    let smoothed = loss::label_smoothed_cross_entropy(&logits, &labels, 0.1).unwrap();
    let smoothed: f32 = smoothed.to_scalar().unwrap();
    assert!(
        (smoothed - r.loss_label_smoothing).abs() < TOL,
        "{smoothed} vs {}",
        r.loss_label_smoothing
    );
    let l = loss::cross_entropy(&logits, &labels).unwrap();
    let grads = l.backward().unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("grads.safetensors"), &Device::Cpu).unwrap();
    let vars = store.vars();
    assert_eq!(
        vars.len() + 1,
        expected.len(),
        "the parameters of PyTorch, and its loss"
    );
    for (name, var) in &vars {
        let reference = &expected[name];
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

#[test]
fn the_generation_pipeline_tokenizes_and_decodes_as_transformers() {
    let name = "tiny-seq2seq";
    let r = seq2seq_reference(name);
    let generator = Generator::load(&fixture(name), &PipelineOptions::default()).unwrap();
    let encodings: Vec<_> = r
        .sources
        .iter()
        .map(|s| generator.encode(s).unwrap())
        .collect();
    for (encoding, expected) in encodings.iter().zip(&r.teacher_forcing.input_ids) {
        let padded = expected
            .iter()
            .rposition(|&id| id != 0)
            .map_or(0, |p| p + 1);
        assert_eq!(encoding.ids, expected[..padded]);
    }
    let case = &r.generate[0];
    let config = settings(case, &generator.generation);
    let outputs = generator.generate(&encodings, &config).unwrap();
    let eos = config.eos_token_id[0];
    for (ours, theirs) in outputs.iter().zip(&case.sequences) {
        let end = theirs
            .iter()
            .position(|&t| t == eos)
            .unwrap_or(theirs.len());
        let text = generator.tokenizer.decode(&theirs[1..end], true).unwrap();
        assert_eq!(ours[0].generated_text, text);
    }
}
