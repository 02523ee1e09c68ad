//! The processes of a data-parallel run and the collective operations the training loops need from
//! them. They are one trait, [`Collective`], so that the engine underneath is one swappable piece: MPI
//! for CPUs (the `mpi` feature, [`crate::train::mpi`]), NCCL for GPUs later. A single process is the
//! default world; its operations do nothing and cost nothing.

use std::fmt;
use std::sync::Arc;

use crate::error::Result;

/// What a data-parallel engine provides. Every rank must make the same calls in the same order.
pub trait Collective {
    /// This process's place among the ranks, 0-based.
    fn rank(&self) -> usize;
    /// How many ranks there are.
    fn size(&self) -> usize;
    /// Sums `values` element-wise across ranks, in place: every rank ends with the same sums.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_sum`] for counts and losses that f32 would round.
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `values` (lengths may differ), concatenated in rank order, on every rank.
    fn all_gather_f32(&self, values: &[f32]) -> Result<Vec<f32>>;
    /// [`Collective::all_gather_f32`] for indices and generator states.
    fn all_gather_u64(&self, values: &[u64]) -> Result<Vec<u64>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every rank of the run with `code` (a rank that fails alone must not leave the others
    /// waiting in a collective).
    fn abort(&self, code: i32) -> !;
}

/// The one process of a run that is not distributed.
struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum_f64(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn all_gather_f32(&self, values: &[f32]) -> Result<Vec<f32>> {
        Ok(values.to_vec())
    }

    fn all_gather_u64(&self, values: &[u64]) -> Result<Vec<u64>> {
        Ok(values.to_vec())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A handle on the ranks of a run, cheap to clone. [`World::single`] (the default) is one process.
#[derive(Clone)]
pub struct World(Arc<dyn Collective>);

impl World {
    /// One process: nothing is exchanged.
    pub fn single() -> Self {
        World(Arc::new(SingleProcess))
    }

    /// The ranks `engine` connects.
    pub fn new(engine: impl Collective + 'static) -> Self {
        World(Arc::new(engine))
    }

    pub fn rank(&self) -> usize {
        self.0.rank()
    }

    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// Whether there is more than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size() > 1
    }

    /// Rank 0, which alone writes checkpoints, metrics and progress.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// The engine's operations.
    pub fn collective(&self) -> &dyn Collective {
        &*self.0
    }

    /// Sums `values` across ranks (nothing to do for one process).
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.0.all_reduce_sum_f64(values)
    }

    /// See [`Collective::barrier`].
    pub fn barrier(&self) -> Result<()> {
        self.0.barrier()
    }

    /// See [`Collective::abort`].
    pub fn abort(&self, code: i32) -> ! {
        self.0.abort(code)
    }
}

impl Default for World {
    fn default() -> Self {
        World::single()
    }
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "World(rank {} of {})", self.rank(), self.size())
    }
}

/// How many ranks the launcher (`mpirun`, `mpiexec`, `srun`) says the run has, read from the
/// environment it gives every rank; `None` when the process was not started by one.
pub fn launched_ranks() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_NTASKS",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// How many ranks the launcher started on this machine (they share its cores), if it says.
pub fn local_ranks() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "PMI_LOCAL_SIZE",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// A rank of a world that exchanges nothing, for tests of what other ranks than 0 do.
#[cfg(test)]
pub(crate) struct FixedRank {
    pub rank: usize,
    pub size: usize,
}

#[cfg(test)]
impl Collective for FixedRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        unreachable!()
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        unreachable!()
    }
    fn all_gather_f32(&self, _: &[f32]) -> Result<Vec<f32>> {
        unreachable!()
    }
    fn all_gather_u64(&self, _: &[u64]) -> Result<Vec<u64>> {
        unreachable!()
    }
    fn barrier(&self) -> Result<()> {
        unreachable!()
    }
    fn abort(&self, _: i32) -> ! {
        unreachable!()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_exchanges_nothing() {
        let world = World::single();
        assert_eq!((world.rank(), world.size()), (0, 1));
        assert!(world.is_leader() && !world.is_distributed());
        let mut sums = [1.5, 2.0];
        world.sum_f64(&mut sums).unwrap();
        assert_eq!(sums, [1.5, 2.0]);
        let gathered = world.collective().all_gather_u64(&[7, 8]).unwrap();
        assert_eq!(gathered, vec![7, 8]);
    }

    #[test]
    fn a_rank_other_than_0_is_not_the_leader() {
        let world = World::new(FixedRank { rank: 1, size: 3 });
        assert!(!world.is_leader() && world.is_distributed());
        assert_eq!(format!("{world:?}"), "World(rank 1 of 3)");
    }
}
