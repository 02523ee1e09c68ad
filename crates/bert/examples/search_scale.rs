//! Exact search at scale: writes an index of N random unit vectors (default 1,000,000 x 384, 1.5 GB)
//! with the real index writer, opens it memory-mapped as `bert search` does, and times top-10 queries.
//! Prints the median and the 90th percentile over the queries, and the scan rate in GB/s.
//!
//! ```sh
//! cargo run --release -p bert --example search_scale -- [ROWS] [DIM] [QUERIES] [DIR]
//! ```

use std::time::Instant;

use bert::search::exact::top_k;
use bert::search::store::{Index, Manifest, ModelInfo, Record, Writer};

fn main() -> bert::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (rows, dim, queries) = (arg(0, 1_000_000), arg(1, 384), arg(2, 50));
    let dir = args.get(3).map_or_else(
        || std::env::temp_dir().join("bert-search-scale"),
        Into::into,
    );

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut unit = move || -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };

    let ready = Index::open(&dir).is_ok_and(|i| i.rows() == rows && i.dim() == dim);
    if !ready {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("writing {rows} x {dim} vectors to {}", dir.display());
        let mut writer = Writer::create(&dir, 1, dim)?;
        for row in 0..rows {
            let record = Record {
                file: "synthetic".into(),
                start: row,
                end: row + 1,
                text: String::new(),
            };
            writer.push(&record, &unit())?;
        }
        let model = ModelInfo {
            name: "random".into(),
            fingerprint: "0".into(),
            dim,
            pooling: "mean".into(),
        };
        writer.finish(Manifest::new(model, 0, 0))?;
    }
    let index = Index::open(&dir)?;
    let vectors = index.vectors();
    top_k(vectors, dim, &unit(), 10); // page the file in
    let mut times: Vec<f64> = (0..queries)
        .map(|_| {
            let query = unit();
            let started = Instant::now();
            let hits = top_k(vectors, dim, &query, 10);
            assert_eq!(hits.len(), 10);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gigabytes = (rows * dim * 4) as f64 / 1e9;
    println!(
        "exact top-10 over {rows} x {dim} ({gigabytes:.2} GB), {} threads: median {median:.1} ms, p90 {:.1} ms, {:.1} GB/s",
        rayon::current_num_threads(),
        times[times.len() * 9 / 10],
        gigabytes / (median / 1e3)
    );
    Ok(())
}
