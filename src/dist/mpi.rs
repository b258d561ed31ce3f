//! The MPI engine (rsmpi over the system's MPI library, OpenMPI on Debian): CPU tensors are
//! summed through host buffers.

use ::mpi::collective::SystemOperation;
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives, Root};
use ::mpi::Threading;
use candle_core::Tensor;

use super::{all_reduce_on_host, Collective};
use crate::error::{Error, Result};

pub struct Mpi {
    world: SimpleCommunicator,
    /// NCCL between the ranks' GPUs, set up on the first reduction of CUDA tensors.
    #[cfg(feature = "nccl")]
    nccl: std::sync::OnceLock<super::nccl::Nccl>,
    // Dropped last: MPI_Finalize.
    _universe: Universe,
}

// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED, so any thread may call it as long
// as calls never overlap; the training loop makes every collective call from the one
// thread that runs the step, and nothing else holds the communicator.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

fn failed(what: &str, code: i32) -> Error {
    Error::Usage(format!("MPI {what} failed (error code {code})"))
}

impl Mpi {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<Self> {
        let (universe, _threading) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Usage("MPI was already initialised in this process".into()))?;
        let world = universe.world();
        Ok(Self {
            world,
            #[cfg(feature = "nccl")]
            nccl: std::sync::OnceLock::new(),
            _universe: universe,
        })
    }

    /// The NCCL communicator between the ranks' devices, set up on `device` the first time.
    #[cfg(feature = "nccl")]
    fn nccl(&self, device: &candle_core::CudaDevice) -> Result<&super::nccl::Nccl> {
        if let Some(n) = self.nccl.get() {
            return Ok(n);
        }
        let n =
            super::nccl::Nccl::new(device, self.rank(), self.size(), |id| self.broadcast(0, id))?;
        Ok(self.nccl.get_or_init(|| n))
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn engine(&self) -> &'static str {
        match cfg!(feature = "nccl") {
            true => "mpi, nccl between GPUs",
            false => "mpi",
        }
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_tensors(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        #[cfg(feature = "nccl")]
        if let Some(t) = tensors.first() {
            if let candle_core::Device::Cuda(dev) = t.device() {
                // One reduction of every tensor laid end to end, as DDP's buckets do.
                let flat: Vec<Tensor> = tensors
                    .iter()
                    .map(|t| t.to_dtype(candle_core::DType::F32)?.flatten_all())
                    .collect::<candle_core::Result<_>>()?;
                let sum = self.nccl(dev)?.all_reduce(&Tensor::cat(&flat, 0)?)?;
                let mut at = 0;
                return tensors
                    .iter()
                    .map(|t| {
                        let n = t.elem_count();
                        let part = sum.narrow(0, at, n)?.reshape(t.shape())?;
                        at += n;
                        Ok(part.to_dtype(t.dtype())?)
                    })
                    .collect();
            }
        }
        all_reduce_on_host(tensors, |values| {
            let send = values.to_vec();
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        })
    }

    fn broadcast(&self, root: usize, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let root = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut buf = if self.rank() == root.rank() as usize {
            bytes
        } else {
            vec![0u8; usize::try_from(len).map_err(|_| failed("broadcast", -1))?]
        };
        // OpenMPI refuses an empty slice's dangling pointer even with a count of 0.
        if !buf.is_empty() {
            root.broadcast_into(&mut buf[..]);
        }
        Ok(buf)
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
