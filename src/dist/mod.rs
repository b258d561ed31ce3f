//! Data-parallel training across processes, one per device, launched as HPC jobs are:
//! `mpirun -np N pretext run RECIPE`.
//!
//! Every rank builds the same model from the same seed (or loads the same checkpoint),
//! takes its contiguous share of every global batch ([`Shard`]), and the ranks' gradients
//! are summed with an all-reduce before each optimizer step, so every rank takes the same
//! step. The collectives come from existing engines behind the one small [`Collective`]
//! trait: MPI on CPUs (the `mpi` feature, over the system's MPI library) and NCCL between
//! CUDA devices (the `nccl` feature, its unique id broadcast over MPI).
//!
//! A process started outside any launcher, or by a launcher with one rank, is [`Single`]:
//! every collective is the identity and nothing is linked.

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The collective operations data-parallel training needs.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// What carries the collectives (`"mpi"`, `"nccl"`, `"single process"`).
    fn engine(&self) -> &'static str;
    /// Sums `values` element-wise over every rank, in place; every rank ends with the sum.
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()>;
    /// Sums each tensor element-wise over every rank (every rank passes tensors of the same
    /// shapes, in the same order) and returns the sums.
    fn all_reduce_tensors(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>>;
    /// Rank `root`'s `bytes`, on every rank.
    fn broadcast(&self, root: usize, bytes: Vec<u8>) -> Result<Vec<u8>>;
    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every process of the job with `code` (a rank that failed alone would otherwise
    /// leave the others waiting in a collective).
    fn abort(&self, code: i32) -> !;
}

/// One process, no launcher: every collective is the identity.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "single process"
    }
    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_tensors(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(tensors.to_vec())
    }
    fn broadcast(&self, _root: usize, bytes: Vec<u8>) -> Result<Vec<u8>> {
        Ok(bytes)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The rows of every global batch one rank takes: contiguous, in rank order, their sizes
/// differing by at most one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub size: usize,
}

impl Shard {
    /// The whole batch, for a process training alone.
    pub const ALL: Shard = Shard { rank: 0, size: 1 };

    /// This process's shard in `world`.
    pub fn of(world: &dyn Collective) -> Self {
        Shard {
            rank: world.rank(),
            size: world.size(),
        }
    }

    /// Why a global batch of `batch` cannot be split over `size` ranks (each needs at least
    /// one example), or `None` when it can.
    pub fn too_small(batch: usize, size: usize) -> Option<String> {
        (batch < size).then(|| {
            format!(
                "{batch} is the global batch, split over {size} processes: each needs at least \
                 one example; raise it to {size} or more, or start fewer processes"
            )
        })
    }

    /// This rank's rows of a global batch of `n`.
    pub fn rows(&self, n: usize) -> Range<usize> {
        (self.rank * n / self.size)..((self.rank + 1) * n / self.size)
    }
}

/// Sums tensors over the ranks through their values on the host: the tensors are copied
/// into one f32 buffer, `reduce` sums it in place, and the sums come back with the
/// tensors' shapes, dtypes and devices. What an engine without device buffers (MPI) does.
pub fn all_reduce_on_host(
    tensors: &[Tensor],
    reduce: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Vec<Tensor>> {
    let mut flat: Vec<f32> = Vec::with_capacity(tensors.iter().map(|t| t.elem_count()).sum());
    for t in tensors {
        flat.extend(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    }
    reduce(&mut flat)?;
    let mut out = Vec::with_capacity(tensors.len());
    let mut at = 0;
    for t in tensors {
        let n = t.elem_count();
        let sum = Tensor::from_slice(&flat[at..at + n], t.shape(), t.device())?;
        out.push(sum.to_dtype(t.dtype())?);
        at += n;
    }
    Ok(out)
}

static WORLD: Mutex<Option<Arc<dyn Collective>>> = Mutex::new(None);

/// How many processes the launcher started, read from the variables OpenMPI
/// (`OMPI_COMM_WORLD_SIZE`) and PMI launchers such as MPICH's and Slurm's `srun` (`PMI_SIZE`)
/// set; `None` outside a launcher.
pub fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// How many processes of the job share this machine, from the launcher's variables; `None`
/// outside a launcher.
pub fn local_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Sets the CPU thread pool's size for a rank of a data-parallel job, unless
/// `RAYON_NUM_THREADS` is set: called first thing in `main`, before any other thread exists.
pub fn set_threads_per_rank() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        if let Some(n) = threads_per_rank() {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
}

/// Threads for each of several ranks of a data-parallel job on this machine: a rank the
/// launcher bound to some cores (OpenMPI binds each of two ranks to a core) uses them all;
/// an unbound one gets its share of the machine. `None` outside a launcher or for one rank
/// per machine: the pool's default, every core.
fn threads_per_rank() -> Option<usize> {
    let local = local_size().filter(|&n| n > 1)?;
    let usable = std::thread::available_parallelism().ok()?.get();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpus(s.trim()))
        .unwrap_or(usable);
    Some(match usable < online {
        true => usable,
        false => (usable / local).max(1),
    })
}

/// The number of CPUs in a kernel CPU list such as `0-3,8,10-11`.
fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// This process's place among the job's processes on its machine (`0..local_size`), from
/// the launcher's variables: which GPU it takes.
pub fn local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Joins the job this process was launched in (MPI under `mpirun`), once; a process
/// started alone trains alone. Later calls return the same world.
pub fn init() -> Result<Arc<dyn Collective>> {
    let mut world = WORLD
        .lock()
        .map_err(|_| Error::Usage("the process group lock is poisoned".into()))?;
    if let Some(w) = world.as_ref() {
        return Ok(w.clone());
    }
    let joined = match launched_size() {
        None => Arc::new(Single) as Arc<dyn Collective>,
        Some(n) => join_launched(n)?,
    };
    *world = Some(joined.clone());
    Ok(joined)
}

#[cfg(feature = "mpi")]
fn join_launched(_size: usize) -> Result<Arc<dyn Collective>> {
    Ok(Arc::new(mpi::Mpi::init()?))
}

#[cfg(not(feature = "mpi"))]
fn join_launched(size: usize) -> Result<Arc<dyn Collective>> {
    if size <= 1 {
        return Ok(Arc::new(Single));
    }
    Err(Error::Usage(format!(
        "this process was started as one of {size} by an MPI launcher, but this pretext \
         binary was built without MPI: build it with `cargo build --release --features mpi` \
         (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev) and launch that \
         binary"
    )))
}

/// The world joined by [`init`], or a single process when none was.
pub fn world() -> Arc<dyn Collective> {
    match WORLD.lock().ok().and_then(|w| w.clone()) {
        Some(w) => w,
        None => Arc::new(Single),
    }
}

/// Leaves the job (MPI_Finalize): the last thing the binary does.
pub fn finish() {
    if let Ok(mut w) = WORLD.lock() {
        w.take();
    }
}

/// Whether this process writes the run's files: rank 0, or a process alone.
pub fn is_writer() -> bool {
    world().rank() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for size in 1..6 {
            for n in size..40 {
                let rows: Vec<Range<usize>> =
                    (0..size).map(|rank| Shard { rank, size }.rows(n)).collect();
                assert_eq!(rows[0].start, 0);
                assert_eq!(rows[size - 1].end, n);
                for w in rows.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1 && *lo >= 1, "{n} over {size}: {lens:?}");
            }
        }
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn host_reduction_keeps_shapes_and_order() {
        let dev = candle_core::Device::Cpu;
        let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
        let b = Tensor::new(&[5f32], &dev).unwrap();
        let out = all_reduce_on_host(&[a, b], |v| {
            v.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(out[0].to_vec2::<f32>().unwrap(), [[2., 4.], [6., 8.]]);
        assert_eq!(out[1].to_vec1::<f32>().unwrap(), [10.]);
    }
}
