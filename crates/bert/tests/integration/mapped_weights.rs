//! Weights used in place from the memory-mapped checkpoint: a checkpoint written by this toolkit lays
//! its tensors on 64-byte boundaries, an f32 inference model then reads its Linear weights straight
//! from the mapping (no copy), and the outputs still match `transformers` as closely as the copied
//! weights do. bf16 and int8 models convert straight from the mapping and give the same outputs as
//! from the copied tensors; their converted layers are cached on disk and mapped by the next load.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common;
use crate::common::{assert_close, fixture, reference};
use bert::cache::converted::PackedCache;
use bert::model::{BertModel, Mode, Precision};
use bert::weights::checkpoint::Checkpoint;
use bert::weights::config::BertConfig;
use bert::weights::params::ParamStore;
use bert::weights::pretrained::Pretrained;
use bert::Batch;
use candle_core::{Device, Tensor};

/// tiny-base re-saved by `bert::files::safetensors_write::save_safetensors` into `dir`.
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
    bert::files::safetensors_write::save_safetensors(&dir.join("model.safetensors"), &tensors)
        .unwrap();
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
    // The embedding tables are read in place too, ids still checked against them.
    let m = Pretrained::load(&dir, &Device::Cpu, |p, c| {
        BertModel::load(&p.pp("bert"), c, false)
    })
    .unwrap();
    let vocab = m.config.vocab_size as u32;
    let outside = Batch {
        input_ids: Tensor::new(&[[1u32, vocab]], &Device::Cpu).unwrap(),
        token_type_ids: Tensor::new(&[[0u32, 0]], &Device::Cpu).unwrap(),
        attention_mask: Tensor::new(&[[1f32, 1.0]], &Device::Cpu).unwrap(),
    };
    let err = m.model.forward(&outside, &Mode::Eval).unwrap_err();
    assert!(
        err.to_string().contains(&format!("input id {vocab}")),
        "{err}"
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

/// tiny-base's hidden states in `precision`, its converted layers kept in `cache`.
fn with_cache(precision: Precision, cache: &Path, batch: &Batch) -> (Tensor, Vec<String>) {
    let dir = fixture("tiny-base");
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let store = ParamStore::new(Checkpoint::open(&dir).unwrap(), &Device::Cpu, false, 0)
        .with_precision(precision)
        .with_packed_cache(PackedCache::in_dir(cache));
    let model = BertModel::load(&store.root().pp("bert"), &config, false).unwrap();
    let states = model.forward(batch, &Mode::Eval).unwrap().hidden_states;
    (states, store.report().unused)
}

#[test]
fn converted_layers_are_cached_and_the_next_load_maps_them() {
    let batch = common::reference_batch(&reference("tiny-base"));
    for precision in [Precision::Bf16, Precision::Int8] {
        let cache =
            std::env::temp_dir().join(format!("bert-cached-{precision}-{}", std::process::id()));
        let (converted, unused_then) = with_cache(precision, &cache, &batch);
        let mut files: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        // Two layers of four Linear layers each (query, key and value stacked as one).
        assert_eq!(files.len(), 8, "{files:?}");
        let stacked = "bert.encoder.layer.0.attention.self.query+bert.encoder.layer.0.attention.self.key+bert.encoder.layer.0.attention.self.value.safetensors";
        assert!(files.iter().any(|f| f == stacked), "{files:?}");

        let (cached, unused_now) = with_cache(precision, &cache, &batch);
        assert_eq!(
            common::max_abs_diff(&cached, &converted),
            0.0,
            "{precision}"
        );
        assert_eq!(unused_now, unused_then, "cached layers count as used");

        // The next load reads the files: two same-shaped layers swapped change the outputs.
        let layer =
            |i: usize| cache.join(format!("bert.encoder.layer.{i}.output.dense.safetensors"));
        let swap = cache.join("swap");
        std::fs::rename(layer(0), &swap).unwrap();
        std::fs::rename(layer(1), layer(0)).unwrap();
        std::fs::rename(&swap, layer(1)).unwrap();
        let (swapped, _) = with_cache(precision, &cache, &batch);
        assert!(
            common::max_abs_diff(&swapped, &converted) > 1e-3,
            "{precision}: the cache was not read"
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
