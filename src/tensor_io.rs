//! Safetensors files with metadata, read and written with errors that name the file.
//! Writes are atomic: a temporary file in the same directory, fsync, then rename.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Writes `tensors` (and string `metadata`) to `path` atomically.
/// [`write`] with the `format = "pt"` metadata `transformers` expects of its files.
pub fn write_pt(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write(
        path,
        tensors,
        HashMap::from([("format".to_string(), "pt".to_string())]),
    )
}

pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    // candle's `Tensor` is a safetensors `View`; it must be contiguous and on the CPU.
    let cpu = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata)
    };
    let bytes = safetensors::serialize(cpu, meta).map_err(|e| Error::data(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` through a temporary file and a rename, so readers never see a
/// partial file even if the process is killed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A safetensors file's tensors (converted to candle, on `device`) and metadata.
pub struct Loaded {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Reads a whole safetensors file. A truncated or corrupt file is an error naming it.
pub fn read(path: &Path, device: &Device) -> Result<Loaded> {
    let bytes = crate::input::read(path)?;
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::data(
            path,
            format!("not a valid safetensors file ({e}); it may be truncated or corrupt"),
        )
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, device)
            .map_err(|e| Error::data(path, format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(Loaded { tensors, metadata })
}
