//! Times one Linear layer (`x W^T + b`) in each precision on BERT-base's shapes, printing GFLOP/s:
//! how far the f32 gemm, the bf16 and the int8 paths are from the machine's peaks.
//!
//! ```sh
//! cargo run --release -p bert --example linear_bench [-- ROWS]
//! ```

#[path = "common/allocator.rs"]
mod allocator;

use std::time::Instant;

use bert::kernels::gemm::{matmul_into, View};
use bert::kernels::PackedLinear;
use bert::model::Precision;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn median_ms(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .map_or(4096, |a| a.parse().expect("ROWS, a number"));
    allocator::keep_freed_memory();
    println!("amx: {}", bert::kernels::amx::available());
    for (k, n) in [(768, 768), (768, 2304), (768, 3072), (3072, 768)] {
        let x = values(rows * k, 1);
        let w = values(n * k, 2);
        let b = values(n, 3);
        let flops = 2.0 * (rows * k * n) as f64;
        let f32_ms = median_ms(|| {
            let mut c = vec![0f32; rows * n];
            matmul_into(
                View::row_major(&x, rows, k),
                View::row_major(&w, n, k).t(),
                &mut c,
                false,
            );
        });
        print!("{rows}x{k} -> {n}: f32 {:.0} GFLOP/s", flops / f32_ms / 1e6);
        for precision in [Precision::Bf16, Precision::Int8] {
            let linear = PackedLinear::new(&w, &b, n, precision);
            let ms = median_ms(|| {
                linear.forward(&x, rows);
            });
            print!(
                ", {precision} {:.0} ({:.1}x)",
                flops / ms / 1e6,
                f32_ms / ms
            );
        }
        println!();
    }
}
