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
