//! A Hugging Face model directory (`config.json` + `model.safetensors`, as `save_pretrained`
//! writes it) → [`LoadedModel`]. Every tensor the table names must be present with its
//! shape and a floating-point dtype; any tensor left over is an error, so nothing is
//! silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::{self, Architecture};
use super::spec::{LoadedModel, Normalize};
use super::vit::Row;
use crate::error::{Error, Result};
use crate::tensor_io;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Whether `dir` looks like a Hugging Face model directory.
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        DType::I64 => "int64",
        DType::U32 => "uint32",
        DType::U8 => "uint8",
        _ => "another dtype",
    }
}

/// Takes the tensors `rows` name out of `file` (Hugging Face names; base-model names with
/// or without `prefix`), checked, as float32 under pretext's names. `what` names the model
/// in messages. Tensors not consumed stay in `file`.
pub fn take(
    rows: &[Row],
    file: &mut BTreeMap<String, Tensor>,
    path: &Path,
    what: &str,
) -> Result<BTreeMap<String, Tensor>> {
    take_prefixed(rows, file, path, what, "vit.")
}

/// [`take`] for a family whose task wrappers hold the base model under `prefix`
/// (`"bert."`, `"roberta."`).
pub fn take_prefixed(
    rows: &[Row],
    file: &mut BTreeMap<String, Tensor>,
    path: &Path,
    what: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Tensor>> {
    let err = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let mut out = BTreeMap::new();
    for row in rows {
        let mut names = vec![row.hf.clone()];
        names.extend(row.aliases.iter().cloned());
        if row.base {
            let prefixed: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
            names.extend(prefixed);
        }
        let Some((name, t)) = names
            .iter()
            .find_map(|n| file.remove(n).map(|t| (n.clone(), t)))
        else {
            return Err(err(format!(
                "missing tensor `{}` (float32, shape {:?}), needed by {what}",
                row.hf, row.shape
            )));
        };
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return Err(err(format!(
                "tensor `{name}`: expected dtype float32 (or float16/bfloat16), found {}",
                dtype_name(t.dtype())
            )));
        }
        if t.dims() != row.shape.as_slice() {
            return Err(err(format!(
                "tensor `{name}`: expected shape {:?}, found {:?}",
                row.shape,
                t.dims()
            )));
        }
        out.insert(row.ours.clone(), t.to_dtype(DType::F32)?);
    }
    Ok(out)
}

/// Errors on tensors nobody consumed.
pub fn reject_leftovers(left: &BTreeMap<String, Tensor>, path: &Path, what: &str) -> Result<()> {
    match left.keys().next() {
        None => Ok(()),
        Some(name) => Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "unexpected tensor `{name}`{}: {what} has no such parameter",
                if left.len() > 1 {
                    format!(" (and {} more)", left.len() - 1)
                } else {
                    String::new()
                }
            ),
        }),
    }
}

/// `image_mean` / `image_std` from a `preprocessor_config.json` in `dir`, if there is one.
pub fn preprocessor_normalize(dir: &Path, channels: usize) -> Result<Option<Normalize>> {
    let path = dir.join(PREPROCESSOR_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::input::read_to_string(&path)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("invalid JSON: {e}")))?;
    let list = |key: &str| -> Result<Option<Vec<f32>>> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => {
                Ok(Some(vec![n.as_f64().unwrap_or(0.5) as f32; channels]))
            }
            Some(serde_json::Value::Array(a)) if a.len() == channels => a
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| Error::InvalidValue {
                    file: path.clone(),
                    key: key.into(),
                    message: "expected numbers".into(),
                }),
            Some(other) => Err(Error::InvalidValue {
                file: path.clone(),
                key: key.into(),
                message: format!("expected {channels} numbers (one per channel), found {other}"),
            }),
        }
    };
    Ok(match (list("image_mean")?, list("image_std")?) {
        (Some(mean), Some(std)) => Some(Normalize { mean, std }),
        _ => None,
    })
}

/// `dir/model.safetensors`, or an error that says what the directory holds instead.
pub fn weights_file(dir: &Path) -> Result<std::path::PathBuf> {
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        let hint = if dir.join("model.safetensors.index.json").is_file() {
            "sharded checkpoints are not supported"
        } else if dir.join("pytorch_model.bin").is_file() {
            "only safetensors weights are supported, not pytorch_model.bin"
        } else {
            "no such file"
        };
        return Err(Error::data(&weights, hint));
    }
    Ok(weights)
}

/// Reads a Hugging Face model directory. `origin` names it in the result.
pub fn read_dir(dir: &Path, device: &Device, origin: &str) -> Result<LoadedModel> {
    let config_path = dir.join(CONFIG_FILE);
    let cfg = config::read(&config_path)?;
    let weights = weights_file(dir)?;
    let mut file = tensor_io::read(&weights, device)?.tensors;
    let has_pooler = cfg.architecture == Architecture::ViTModel
        && (file.contains_key("pooler.dense.weight")
            || file.contains_key("vit.pooler.dense.weight"));
    if has_pooler {
        // A prefixed pooler (a ViTModel saved inside a wrapper) maps like the base model.
        for leaf in ["weight", "bias"] {
            if let Some(t) = file.remove(&format!("vit.pooler.dense.{leaf}")) {
                file.insert(format!("pooler.dense.{leaf}"), t);
            }
        }
    }
    let spec = cfg.spec(has_pooler);
    let what = spec.hf_class();
    let tensors = take(&super::table(&spec), &mut file, &weights, what)?;
    reject_leftovers(&file, &weights, what)?;
    let channels = spec.geometry.channels;
    let normalize =
        preprocessor_normalize(dir, channels)?.unwrap_or_else(|| Normalize::half(channels));
    Ok(LoadedModel {
        spec,
        tensors,
        normalize,
        hf_config: Some(cfg.raw),
        origin: origin.to_string(),
    })
}
