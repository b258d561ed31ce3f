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
/// - mimalloc's purge delay -1 (as `MIMALLOC_PURGE_DELAY=-1` would set it): by default
///   mimalloc hands freed pages back to the kernel after 10 ms, and the next training step
///   faults them in again and has the kernel zero them (a quarter of an MLM step's time on
///   2 cores, 70,000 page faults in 8 steps); a training step frees and re-allocates the
///   same buffers every time, so keeping them is the cheaper choice. mimalloc reads its
///   environment when the process starts, so this sets the option through its API.
pub fn tune_cpu_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called first thing in `main`, before any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc; the index is that of
        // `mi_option_purge_delay` in mimalloc.h (v2 and v3).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Runs `f` on a worker thread of the CPU thread pool that `gemm` and the fused ops split
/// their work over, and returns its result: the binary runs each command this way.
///
/// Called from any other thread, each parallel section (every matmul, every fused op) is
/// handed to the pool while the calling thread sleeps until it is done, and the pool's
/// workers sleep between sections: on the 2-core Intel Xeon the MAE training step then
/// made ~8,000 context switches a second and ran at 0.77x the speed it reaches when the
/// step itself runs on a worker, which takes part in every section and keeps the others
/// warm.
pub fn on_cpu_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    Device::Cpu.with_context(f)
}

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(test)]
mod tests {
    /// The index names the purge delay: mimalloc reads `MIMALLOC_PURGE_DELAY` into it at
    /// start-up, so a process started with the variable reads the value back (the test
    /// binary re-runs itself with it).
    #[test]
    fn the_purge_delay_index_is_the_one_mimalloc_reads_from_its_environment() {
        if let Ok(v) = std::env::var("PRETEXT_PURGE_PROBE") {
            let got = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(got.to_string(), v);
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "device::tests::the_purge_delay_index_is_the_one_mimalloc_reads_from_its_environment", "--nocapture"])
            .env("PRETEXT_PURGE_PROBE", "777")
            .env("MIMALLOC_PURGE_DELAY", "777")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }
}
