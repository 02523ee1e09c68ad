//! `mpirun -np N bert pretrain|finetune`: joins the ranks `mpirun` started (with the `mpi` feature);
//! a rank that fails stops them all, and what goes to the terminal comes from rank 0.

use std::path::{Path, PathBuf};

use anyhow::Result;
use bert::train::world::launched_ranks;
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
