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
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        f.write_all(first)?;
        if let Some(pause) = write_pause() {
            std::thread::sleep(pause);
        }
        f.write_all(rest)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    // A write that failed (a full disk, say) leaves neither a partial file nor its
    // temporary one, which would keep the disk full; what was there before is untouched.
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// `PRETEXT_WRITE_PAUSE_MS`: a pause halfway through every atomic write, which widens the
/// moment a crash test aims its kills at (a half-written temporary file). Unset: none.
fn write_pause() -> Option<std::time::Duration> {
    static PAUSE: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("PRETEXT_WRITE_PAUSE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// The process id in a hidden scratch name `.NAME{marker}PID` (a temporary file of
/// [`write_atomic`] has the marker `.tmp`), or `None` when `name` is not one.
pub fn owner_pid(name: &str, marker: &str) -> Option<u32> {
    name.strip_prefix('.')?.rsplit_once(marker)?.1.parse().ok()
}

/// Removes the temporary files that writes into `dir` by processes no longer running left
/// behind (a process killed in the middle of a write leaves one), saying so on stderr.
pub fn remove_stale_temps(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let owner = entry
            .file_name()
            .to_str()
            .and_then(|n| owner_pid(n, ".tmp"));
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if let (Some(pid), true) = (owner, is_file) {
            if !process_running(pid) {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                eprintln!("removed {} (left by an interrupted write)", path.display());
            }
        }
    }
    Ok(())
}

/// Removes the staging directories `.NAME{marker}PID` in `parent` whose process is no
/// longer running (a process killed while filling one leaves it), saying on stderr what was
/// removed and that it was `left by` what.
pub fn remove_stale_dirs(parent: &Path, marker: &str, left_by: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| owner_pid(n, marker)) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) && !process_running(pid) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            eprintln!("removed {} (left by {left_by})", path.display());
        }
    }
    Ok(())
}

/// Whether a process `pid` is running (this one is). Where that cannot be told (no
/// `/proc`), only this process counts as running.
pub fn process_running(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new(&format!("/proc/{pid}")).exists())
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
    check_header(&bytes).map_err(|m| Error::data(path, m))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if !all_finite(view.dtype(), view.data()) {
            return Err(Error::data(
                path,
                format!("tensor `{name}` holds NaN or infinite values"),
            ));
        }
        let t = candle_core::safetensors::Load::load(&view, device)
            .map_err(|e| Error::data(path, format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(Loaded { tensors, metadata })
}

/// What the `safetensors` crate does not say by name: a tensor named twice in the header
/// (JSON would keep the last), and a tensor whose byte range does not match its dtype and
/// shape or lies outside the file. The error names the tensor.
pub fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    use serde::de::{Deserializer, MapAccess, Visitor};

    let Some(len) = bytes.get(..8) else {
        return Ok(()); // the crate's own error follows
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Ok(());
    };
    let data_len = (bytes.len() - 8 - header.len()) as u128;

    struct Entries(Vec<(String, serde_json::Value)>);
    impl<'de> serde::Deserialize<'de> for Entries {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> std::result::Result<Entries, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = m.next_entry::<String, serde_json::Value>()? {
                        out.push(entry);
                    }
                    Ok(Entries(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let Ok(Entries(entries)) = serde_json::from_slice::<Entries>(header) else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for (name, info) in &entries {
        if !seen.insert(name) {
            return Err(format!("tensor `{name}` is named twice in the header"));
        }
        if name == "__metadata__" {
            let strings = info.as_object().map(|m| m.values().all(|v| v.is_string()));
            if strings != Some(true) {
                return Err("`__metadata__` must map names to strings".into());
            }
            continue;
        }
        let size = match info["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => 1,
            Some(other) => {
                return Err(format!(
                    "tensor `{name}`: dtype `{other}` is not one pretext reads (F64, F32, \
                     F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)"
                ))
            }
            None => return Err(format!("tensor `{name}`: no `dtype` string")),
        };
        let shape: Option<Vec<u128>> = info["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(u128::from)).collect());
        let offsets: Option<Vec<u128>> = info["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(u128::from)).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(format!(
                "tensor `{name}`: shape or data_offsets is not a list of integers"
            ));
        };
        let [begin, end] = offsets[..] else {
            return Err(format!("tensor `{name}`: data_offsets needs two numbers"));
        };
        let want = shape
            .iter()
            .try_fold(size as u128, |a, &d| a.checked_mul(d));
        if begin > end || end > data_len || want != Some(end - begin) {
            return Err(format!(
                "tensor `{name}`: shape {shape:?} of {} needs {} bytes, but its data_offsets [{begin}, {end}] give {} of the {data_len} the file holds; the file is truncated or its header is wrong",
                info["dtype"],
                want.map_or("too many".to_string(), |w| w.to_string()),
                end.saturating_sub(begin)
            ));
        }
    }
    Ok(())
}

/// Whether floating-point data (little-endian, as safetensors stores it) is all finite:
/// a value is NaN or infinite exactly when its exponent bits are all ones.
fn all_finite(dtype: safetensors::Dtype, data: &[u8]) -> bool {
    use safetensors::Dtype;
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .all(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7F80_0000 != 0x7F80_0000),
        Dtype::F16 => data
            .chunks_exact(2)
            .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 != 0x7C00),
        Dtype::BF16 => data
            .chunks_exact(2)
            .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7F80 != 0x7F80),
        Dtype::F64 => data.chunks_exact(8).all(|b| {
            u64::from_le_bytes(b.try_into().expect("8 bytes")) & 0x7FF0_0000_0000_0000
                != 0x7FF0_0000_0000_0000
        }),
        _ => true,
    }
}
