//! Weights used in place from the memory-mapped checkpoint: a checkpoint written by this toolkit lays
//! its tensors on 64-byte boundaries, an f32 inference model then reads its Linear weights straight
//! from the mapping (no copy), and the outputs still match `transformers` as closely as the copied
//! weights do. bf16 and int8 models convert straight from the mapping and give the same outputs as
//! from the copied tensors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bert::checkpoint::Checkpoint;
use bert::model::{BertModel, Mode, Precision};
use bert::pretrained::Pretrained;
use bert::Batch;
use candle_core::{Device, Tensor};
use common::{assert_close, fixture, reference};

/// tiny-base re-saved by `bert::save::save_safetensors` into `dir`.
fn resaved(dir: &Path) {
    let source = fixture("tiny-base");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(source.join("config.json"), dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(&source).unwrap();
    let tensors: BTreeMap<String, Tensor> = checkpoint
        .names()
        .map(|n| {
            let t = checkpoint.load(n, &Device::Cpu).unwrap().unwrap();
            (n.to_string(), t)
        })
        .collect();
    bert::save::save_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
}

fn hidden_states(dir: &Path, precision: Precision, batch: &Batch) -> Tensor {
    let m = Pretrained::load_as(dir, &Device::Cpu, precision, |p, c| {
        BertModel::load(&p.pp("bert"), c, false)
    })
    .unwrap();
    m.model.forward(batch, &Mode::Eval).unwrap().hidden_states
}

#[test]
fn saved_weights_are_mapped_in_place_and_match_transformers() {
    let dir = std::env::temp_dir().join(format!("bert-mapped-{}", std::process::id()));
    resaved(&dir);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(
        (8 + header) % 64,
        0,
        "data does not start on a 64-byte boundary"
    );
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let query = "bert.encoder.layer.0.attention.self.query.weight";
    let mapped = checkpoint.mapped_f32(query).expect("an f32 tensor maps");
    assert!(mapped.is_cache_aligned(), "{query} is not 64-byte aligned");
    assert_eq!(mapped.shape(), &[32, 32]);
    let original = Checkpoint::open(&fixture("tiny-base")).unwrap();
    let values: Vec<f32> = original
        .load(query, &Device::Cpu)
        .unwrap()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(mapped.values(), values.as_slice());

    let r = reference("tiny-base");
    let batch = common::reference_batch(&r);
    let states = hidden_states(&dir, Precision::F32, &batch);
    assert_close(
        "last_hidden_state from mapped weights",
        &states,
        &r.outputs["last_hidden_state"],
        1e-4,
    );
    for precision in [Precision::Bf16, Precision::Int8] {
        let from_mapping = hidden_states(&dir, precision, &batch);
        let from_copies = hidden_states(&fixture("tiny-base"), precision, &batch);
        let difference = common::max_abs_diff(&from_mapping, &from_copies);
        assert!(
            difference < 1e-6,
            "{precision}: mapped and copied weights differ by {difference}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
