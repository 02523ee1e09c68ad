//! Times the encoder's forward pass on a checkpoint, for `bench/inference.py`: random token ids of
//! shape BATCH x SEQ (no padding), WARMUP untimed runs (and at least 0.5 s of them), then ITERS timed
//! ones. Prints one JSON line:
//! the median and every time in milliseconds, the load time and the peak RSS. DTYPE (f32, bf16 or
//! int8) is the Linear layers' number format.
//!
//! ```sh
//! cargo run --release -p bert --example forward_bench -- DIR BATCH SEQ ITERS [WARMUP [DTYPE]]
//! ```

#[path = "common/allocator.rs"]
mod allocator;

use std::time::Instant;

use bert::model::{BertModel, Mode};
use bert::weights::pretrained::Pretrained;
use bert::Batch;
use candle_core::{Device, Tensor};

/// Warm-up runs go on until this much time has passed too: after a short load the CPU has been idle,
/// and this VM then runs the first ~0.1 s up to twice as slowly (bench/inference.py warms up every
/// engine by the same rule).
const WARMUP_TIME: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> bert::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let dir = std::path::PathBuf::from(
        args.first()
            .expect("usage: forward_bench DIR BATCH SEQ ITERS [WARMUP [DTYPE]]"),
    );
    let (batch, seq, iters, warmup) = (number(1, 1), number(2, 16), number(3, 10), number(4, 2));
    let precision: bert::model::Precision = args
        .get(5)
        .map_or(Ok(Default::default()), |a| a.parse())
        .expect("DTYPE: f32, bf16 or int8");
    allocator::keep_freed_memory();

    let started = Instant::now();
    let model = Pretrained::load_as(&dir, &Device::Cpu, precision, |p, c| {
        BertModel::load(&p.pp("bert"), c, false)
    })?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;

    let vocab = model.config.vocab_size as u32;
    let low = 1000.min(vocab / 2); // past the special and unused tokens of a real vocabulary
    let mut state = 12345u32;
    let ids: Vec<u32> = (0..batch * seq)
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            low + (state >> 8) % (vocab - low)
        })
        .collect();
    let input = Batch {
        input_ids: Tensor::from_vec(ids, (batch, seq), &Device::Cpu)?,
        token_type_ids: Tensor::zeros((batch, seq), candle_core::DType::U32, &Device::Cpu)?,
        attention_mask: Tensor::ones((batch, seq), candle_core::DType::F32, &Device::Cpu)?,
    };
    let forward = || -> bert::Result<f64> {
        let started = Instant::now();
        let out = model.model.forward(&input, &Mode::Eval)?;
        out.hidden_states
            .flatten_all()?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let warming = Instant::now();
    let mut warmed = 0;
    while warmed < warmup || warming.elapsed() < WARMUP_TIME {
        forward()?;
        warmed += 1;
    }
    let times = (0..iters)
        .map(|_| forward())
        .collect::<bert::Result<Vec<f64>>>()?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(String::from)
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0);
    println!(
        "{}",
        serde_json::json!({
            "batch": batch, "seq": seq, "median_ms": sorted[sorted.len() / 2], "times_ms": times,
            "load_ms": load_ms, "peak_rss_mb": rss_mb,
        })
    );
    Ok(())
}
