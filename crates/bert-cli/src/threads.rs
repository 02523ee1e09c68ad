//! How a command spreads over the machine's cores. Work that comes in batches (training steps, `embed`,
//! `classify` and the other line-by-line commands) runs in shards, one per thread, each with
//! single-threaded ops: whole batches per core scale almost perfectly where splitting every op across
//! threads does not (measured on two cores: BERT-mini training steps 1.8x faster, MiniLM embedding 1.26x
//! in two processes against one with two threads). Set up once, before any thread starts.

use std::sync::OnceLock;

use bert::train::world::{launched_ranks, local_ranks};

static SHARDS: OnceLock<usize> = OnceLock::new();

/// Decides the threads and the shards for this process: the threads are `RAYON_NUM_THREADS`, or the
/// cores this process may use divided by the MPI ranks on its machine; the shards are `requested`
/// (0: one per thread). With more than one shard candle is told to use one thread per op (its matrix
/// multiplications read `RAYON_NUM_THREADS`, its element-wise ops `CANDLE_NUM_THREADS`: one pool behind
/// a lock that shards would queue on); the global thread pool, which our own kernels use outside the
/// shards, keeps every thread. Returns the shards.
pub fn prepare(requested: usize) -> usize {
    let given = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let threads = given.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ranks = match launched_ranks() {
            Some(n) if n > 1 => local_ranks().unwrap_or(1).max(1),
            _ => 1,
        };
        (cores / ranks).max(1)
    });
    let shards = match requested {
        0 => threads,
        n => n,
    };
    // Fails only if the pool already exists, which then keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let per_op = if shards > 1 { 1 } else { threads };
    for name in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        // SAFETY: called from `main` before any other thread of this process exists.
        unsafe { std::env::set_var(name, per_op.to_string()) };
    }
    let _ = SHARDS.set(shards);
    shards
}

/// The shards [`prepare`] decided (1 if it was not called).
pub fn shards() -> usize {
    SHARDS.get().copied().unwrap_or(1)
}
