//! NCCL between CUDA devices (cudarc's bindings, enabled through candle-core's `nccl`
//! feature): gradients on the GPU are summed in place on the device, never copied to the
//! host. The communicator is set up on the first reduction, on the device of the tensors it
//! is given, with rank 0's unique id broadcast over MPI.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::error::{Error, Result};

/// NCCL's unique id: 128 bytes.
const ID_BYTES: usize = 128;

pub struct Nccl {
    comm: Comm,
}

// SAFETY: the communicator is only used from the training thread, one call at a time, as
// the MPI communicator is (see `super::mpi`).
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Usage(format!("NCCL {what} failed: {e:?}"))
}

impl Nccl {
    /// Joins the NCCL communicator of `size` ranks on `device`; `share_id` gives every rank
    /// rank 0's id (it is called with rank 0's id on rank 0 and with nothing elsewhere).
    pub fn new(
        device: &candle_core::CudaDevice,
        rank: usize,
        size: usize,
        share_id: impl FnOnce(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let mine = match rank {
            0 => {
                let id = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
                id.internal().iter().map(|&c| c as u8).collect()
            }
            _ => Vec::new(),
        };
        let shared = share_id(mine)?;
        let internal: [std::ffi::c_char; ID_BYTES] = shared
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| Error::Usage(format!("NCCL's unique id is {ID_BYTES} bytes")))?;
        let comm = Comm::from_rank(device.cuda_stream(), rank, size, Id::uninit(internal))
            .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        Ok(Self { comm })
    }

    /// The element-wise sum of `t` (f32, on this communicator's device) over every rank.
    pub fn all_reduce(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        Ok(t.apply_op1_no_bwd(&AllReduce { comm: &self.comm })?)
    }
}

struct AllReduce<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce takes CUDA tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let dev = s.device().clone();
        let src = s.as_cuda_slice::<f32>()?;
        let src = match l.contiguous_offsets() {
            Some((a, b)) => src.slice(a..b),
            None => candle_core::bail!("the NCCL all-reduce needs a contiguous tensor"),
        };
        // SAFETY: every element is written by the all-reduce before it is read.
        let mut dst = unsafe { dev.alloc::<f32>(n) }?;
        self.comm
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce failed: {e:?}")))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
    }
}
