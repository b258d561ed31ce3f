//! Borrowing the `f32` elements of CPU tensors for the fused ops, without copies.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

static FUSED: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU kernels off (or back on): every op then composes candle ops, the
/// path CUDA and Metal take. For tests and measurements that compare the two paths.
pub fn set_fused_cpu_ops(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

/// Whether the fused CPU kernels can take this tensor (CPU, f32, not turned off). Elsewhere
/// the callers compose the same computation from candle ops, which run on every device.
pub fn applies(x: &Tensor) -> bool {
    FUSED.load(Ordering::Relaxed) && x.device().is_cpu() && x.dtype() == DType::F32
}

/// The elements of a contiguous f32 CPU storage, in layout order.
pub fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{what}: the fused CPU op needs a contiguous tensor");
    };
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => bail!("{what}: the fused CPU op needs an f32 tensor"),
    }
}

/// Runs `f` on the elements of `t` (made contiguous first if it is not).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = if t.is_contiguous() {
        t.clone()
    } else {
        t.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(cpu_f32(s, layout, "tensor")?)),
        _ => bail!("the fused CPU op was given a tensor on another device"),
    }
}
