//! The MPI engine of data-parallel training (the `mpi` feature): the ranks `mpirun` started, joined
//! through the `mpi` crate over whichever MPI library is installed (OpenMPI or MPICH). Only the thread
//! that initialised MPI calls it.

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use crate::error::{Error, Result};
use crate::train::world::{Collective, World};

/// The ranks of `MPI_COMM_WORLD`. Dropping it finalises MPI.
pub struct MpiWorld {
    world: SimpleCommunicator,
    // Last: finalises MPI after the communicator is gone.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<World> {
        let (universe, _threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::Training("MPI was already initialised in this process".into()))?;
        Ok(World::new(MpiWorld {
            world: universe.world(),
            _universe: universe,
        }))
    }

    /// Every rank's `values`, concatenated in rank order.
    fn gather<T: Equivalence + Copy + Default>(&self, values: &[T]) -> Vec<T> {
        let size = self.world.size() as usize;
        let mut counts = vec![0i32; size];
        self.world
            .all_gather_into(&(values.len() as i32), &mut counts[..]);
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |offset, &count| {
                let at = *offset;
                *offset += count;
                Some(at)
            })
            .collect();
        let total = counts.iter().map(|&c| c as usize).sum();
        let mut gathered = vec![T::default(); total];
        let mut partition = PartitionMut::new(&mut gathered[..], &counts[..], &displs[..]);
        self.world.all_gather_varcount_into(values, &mut partition);
        gathered
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn all_gather_f32(&self, values: &[f32]) -> Result<Vec<f32>> {
        Ok(self.gather(values))
    }

    fn all_gather_u64(&self, values: &[u64]) -> Result<Vec<u64>> {
        Ok(self.gather(values))
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
