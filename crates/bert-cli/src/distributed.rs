//! Parallel training: the threads of a run and the shards they train, and under `mpirun -np N bert
//! pretrain|finetune` the ranks `mpirun` started (with the `mpi` feature); a rank that fails stops them
//! all, and what goes to the terminal comes from rank 0.

use std::path::{Path, PathBuf};

use anyhow::Result;
use bert::train::world::{launched_ranks, local_ranks};
use bert::train::World;

/// The ranks of this run: one process unless a launcher started several.
pub fn join() -> Result<World> {
    match launched_ranks() {
        None | Some(0) | Some(1) => Ok(World::single()),
        Some(ranks) => connect(ranks),
    }
}

#[cfg(feature = "mpi")]
fn connect(_ranks: usize) -> Result<World> {
    Ok(bert::train::mpi::MpiWorld::init()?)
}

#[cfg(not(feature = "mpi"))]
fn connect(ranks: usize) -> Result<World> {
    anyhow::bail!(
        "started by mpirun as one of {ranks} ranks, but this `bert` was built without MPI; build it \
         with `cargo build --release --features mpi` (each rank would otherwise train alone into the \
         same output directory)"
    )
}

/// Sets up the threads of a training run, before any thread starts, and returns how many shards each
/// batch is cut into. The threads are `RAYON_NUM_THREADS`, or the cores this process may use divided by
/// the ranks on its machine. With more than one shard (`requested` 0 means one per thread), every shard
/// runs on a thread of its own with single-threaded ops, so candle is told to use one thread; the
/// global thread pool, which our own kernels use outside the shards, keeps them all
/// (measured: two shards of one thread each train BERT-mini 1.8x faster than one shard on two threads,
/// where the same two shards with candle's ops on two threads gain 1.3x).
pub fn prepare_threads(requested: usize) -> usize {
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
    // Work outside the shards (the optimizer step, evaluation's matrix multiplications) keeps every
    // thread. Fails only if the pool already exists, which then keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let per_op = if shards > 1 { 1 } else { threads };
    // candle's matrix multiplications read RAYON_NUM_THREADS, its element-wise ops CANDLE_NUM_THREADS
    // (else RAYON_NUM_THREADS): one pool of workers behind a lock that shards would queue on.
    for name in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        // SAFETY: called before any other thread of this process exists (the command has not started).
        unsafe { std::env::set_var(name, per_op.to_string()) };
    }
    shards
}

/// Runs `work` on this rank; an error on a rank of a distributed run is printed with the rank and
/// stops every rank (the others would wait for it forever).
pub fn on_rank<T>(world: &World, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let result = work();
    if let Err(err) = &result {
        if world.is_distributed() {
            eprintln!(
                "error on rank {} of {}: {err:#}",
                world.rank(),
                world.size()
            );
            world.abort(2);
        }
    }
    result
}

/// What a rank says when a stop signal reaches it.
pub enum StopNotice {
    /// One process: the run saves after this step.
    Single,
    /// Rank 0 of a distributed run (mpirun signals every rank when a rank dies, or when it is
    /// interrupted): what happens now, and which checkpoint is good.
    Leader { ranks: usize, out: PathBuf },
    /// The other ranks leave the talking to rank 0.
    Quiet,
}

impl StopNotice {
    pub fn new(world: &World, out: &Path) -> Self {
        match (world.is_distributed(), world.is_leader()) {
            (false, _) => StopNotice::Single,
            (true, true) => StopNotice::Leader {
                ranks: world.size(),
                out: out.to_path_buf(),
            },
            (true, false) => StopNotice::Quiet,
        }
    }

    /// The line to print, given what a single process does on a stop signal.
    pub fn text(&self, on_stop: &str) -> Option<String> {
        match self {
            StopNotice::Single => Some(format!(
                "interrupted: {on_stop} (interrupt again to exit at once)"
            )),
            StopNotice::Quiet => None,
            StopNotice::Leader { ranks, out } => {
                let last_good = match bert::train::checkpoints(out).ok().and_then(|mut c| c.pop()) {
                    Some((_, dir)) => dir.display().to_string(),
                    None => "none yet".into(),
                };
                Some(format!(
                    "rank 0 of {ranks}: mpirun is stopping the job (a rank failed or the job was \
                     interrupted); the ranks save a checkpoint after this step if all of them are \
                     still running, before mpirun's grace period ends (--mca odls_base_sigkill_timeout, \
                     1 s by default). The last good checkpoint is {last_good}"
                ))
            }
        }
    }
}
