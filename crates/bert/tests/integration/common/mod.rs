//! Shared helpers of the integration tests: fixture paths, reference files, tensor comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;
use serde::Deserialize;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The real all-MiniLM-L6-v2, from `BERT_TEST_MODELS` (set by `.ci/run`). `None` means skip; under
/// `CI=true` a missing model fails the test instead.
pub fn minilm() -> Option<PathBuf> {
    let dir =
        std::env::var_os("BERT_TEST_MODELS").map(|d| PathBuf::from(d).join("all-MiniLM-L6-v2"));
    match dir {
        Some(d) if d.join("model.safetensors").exists() => Some(d),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but BERT_TEST_MODELS does not hold all-MiniLM-L6-v2"
            );
            eprintln!("skipped: set BERT_TEST_MODELS to the directory holding all-MiniLM-L6-v2");
            None
        }
    }
}

#[derive(Deserialize)]
pub struct Dumped {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Deserialize)]
pub struct Reference {
    pub texts: serde_json::Value,
    pub input_ids: Vec<Vec<u32>>,
    pub token_type_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub outputs: std::collections::HashMap<String, Dumped>,
    pub labels: std::collections::HashMap<String, serde_json::Value>,
}

/// The reference's inputs as a batch (ids, token types, f32 attention mask).
pub fn reference_batch(r: &Reference) -> bert::Batch {
    let matrix = |rows: &[Vec<u32>]| {
        let (b, t) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), (b, t), &candle_core::Device::Cpu).unwrap()
    };
    bert::Batch {
        input_ids: matrix(&r.input_ids),
        token_type_ids: matrix(&r.token_type_ids),
        attention_mask: matrix(&r.attention_mask)
            .to_dtype(candle_core::DType::F32)
            .unwrap(),
    }
}

pub fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Asserts `actual` equals the reference within `tol` (absolute), naming `what`.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Dumped, tol: f32) {
    assert_eq!(actual.dims(), expected.shape.as_slice(), "{what}: shape");
    let got: Vec<f32> = actual.flatten_all().unwrap().to_vec1().unwrap();
    let worst = got
        .iter()
        .zip(&expected.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs difference {worst} > {tol}");
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The largest absolute value of a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}
