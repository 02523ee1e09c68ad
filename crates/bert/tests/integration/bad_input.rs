//! Bad checkpoints give clear errors that name the file, tensor or key, never a panic: missing,
//! truncated and corrupt safetensors, malformed config.json, weights whose shape disagrees with the
//! config, and missing encoder weights.

use std::path::{Path, PathBuf};

use crate::common::fixture;
use bert::model::{BertForMaskedLM, BertModel};
use bert::weights::pretrained::Pretrained;
use candle_core::Device;

/// A scratch copy of a fixture directory, unique per test, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str, test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("bert-bad-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    Scratch(dir)
}

fn load_error(dir: &Path) -> String {
    match Pretrained::load(dir, &Device::Cpu, |p, c| {
        BertModel::load(&p.pp("bert"), c, true)
    }) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_weights_file() {
    let dir = scratch("tiny-base", "missing");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("no weights found") && err.contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = scratch("tiny-base", "truncated");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
}

#[test]
fn corrupt_safetensors() {
    let dir = scratch("tiny-base", "corrupt");
    std::fs::write(
        dir.join("model.safetensors"),
        b"this is not a safetensors file at all",
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn corrupt_pytorch_bin() {
    let dir = scratch("tiny-nsp", "corrupt-bin");
    std::fs::write(dir.join("pytorch_model.bin"), b"garbage").unwrap();
    let err = load_error(&dir);
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

#[test]
fn missing_shard() {
    let dir = scratch("tiny-pretraining", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model-00002-of-00003.safetensors") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn malformed_config() {
    let dir = scratch("tiny-base", "config");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 32,,}").unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), "{\"num_hidden_layers\": -1}").unwrap();
    let err = load_error(&dir);
    assert!(err.contains("num_hidden_layers"), "{err}");
}

#[test]
fn config_and_weights_disagree_on_a_shape() {
    let dir = scratch("tiny-base", "shape");
    let path = dir.join("config.json");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace("\"intermediate_size\": 37", "\"intermediate_size\": 40"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("intermediate.dense.weight")
            && err.contains("[40, 32]")
            && err.contains("[37, 32]"),
        "{err}"
    );
}

#[test]
fn missing_encoder_weight_is_an_error() {
    let dir = scratch("tiny-base", "layers");
    let path = dir.join("config.json");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("missing weight `bert.encoder.layer.2."),
        "{err}"
    );
}

#[test]
fn missing_head_weights_are_not_an_error() {
    // The base checkpoint has no masked-LM head: loading one initialises it and lists it.
    let m = Pretrained::load(&fixture("tiny-base"), &Device::Cpu, BertForMaskedLM::load).unwrap();
    assert!(m
        .report
        .newly_initialized
        .contains(&"cls.predictions.bias".to_string()));
    assert!(m
        .report
        .newly_initialized
        .contains(&"cls.predictions.transform.dense.weight".to_string()));
}
