//! Device selection from the recipe's `device` string.

use candle_core::Device;

use crate::error::{Error, Result};

/// What a `device` string asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

/// Parses `auto | cpu | cuda | cuda:N | metal`.
pub fn parse(s: &str) -> std::result::Result<DeviceSpec, String> {
    match s {
        "auto" => Ok(DeviceSpec::Auto),
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        "metal" => Ok(DeviceSpec::Metal),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
            _ => Err(format!(
                "unknown device `{s}`; expected auto, cpu, cuda, cuda:N or metal"
            )),
        },
    }
}

/// Opens the device. `auto` picks CUDA or Metal when the binary was built with that
/// feature and one is present, else the CPU.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    let unavailable = |what: &str, feature: &str| {
        Error::Usage(format!(
            "device `{what}` requested but this binary was built without the `{feature}` feature (cargo build --features {feature})"
        ))
    };
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        // Built with a GPU feature but no GPU present: fall back to the CPU.
        DeviceSpec::Auto => Ok(if candle_core::utils::cuda_is_available() {
            Device::new_cuda(0).unwrap_or(Device::Cpu)
        } else if candle_core::utils::metal_is_available() {
            Device::new_metal(0).unwrap_or(Device::Cpu)
        } else {
            Device::Cpu
        }),
        DeviceSpec::Cuda(n) if candle_core::utils::cuda_is_available() => Ok(Device::new_cuda(n)?),
        DeviceSpec::Cuda(_) => Err(unavailable("cuda", "cuda")),
        DeviceSpec::Metal if candle_core::utils::metal_is_available() => Ok(Device::new_metal(0)?),
        DeviceSpec::Metal => Err(unavailable("metal", "metal")),
    }
}

/// Settings of the CPU runtime that must be made before the first tensor operation, for the
/// `pretext` binary and the benchmarks. Each one is left alone when the user has set it.
///
/// - `CANDLE_NUM_THREADS=1`: candle 0.11 runs elementwise ops on a barrier pool of its own,
///   beside the rayon pool that `gemm` and pretext's fused ops use. On a small machine the
///   two pools take turns spinning on the same cores: a profile of the MAE training step
///   on 2 cores spent a third of its time in the barrier pool's wait. With one thread the
///   barrier pool has no workers; matmuls and the fused ops keep every core
///   (`RAYON_NUM_THREADS`, default: the physical cores).
/// - `MIMALLOC_PURGE_DELAY=-1`: mimalloc hands freed pages back to the kernel after 10 ms,
///   and the next step faults them in again and has them zeroed; a training step frees and
///   re-allocates the same buffers every time, so keeping them is the cheaper choice.
pub fn tune_cpu_runtime() {
    for (key, value) in [("CANDLE_NUM_THREADS", "1"), ("MIMALLOC_PURGE_DELAY", "-1")] {
        if std::env::var_os(key).is_none() {
            // Called first thing in `main`, before any other thread exists.
            std::env::set_var(key, value);
        }
    }
}
