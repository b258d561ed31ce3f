//! `pretext inspect`: what a safetensors file, a checkpoint or a run holds.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::dir;
use crate::train::checkpoint;

/// The safetensors file that `path` stands for: the file itself, a run's latest
/// checkpoint, or a directory's `model.safetensors`.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if dir::is_run_dir(path) {
        return checkpoint::latest(&path.join("checkpoints"))?
            .ok_or_else(|| Error::data(path, "this run has no checkpoint yet"));
    }
    let model = path.join("model.safetensors");
    if model.is_file() {
        return Ok(model);
    }
    Err(Error::data(
        path,
        "neither a run directory nor a directory with model.safetensors",
    ))
}

/// "Hugging Face BertForMaskedLM (bert, text)" for a directory (or a file in one) whose
/// config.json names its family.
fn hf_family(path: &Path) -> Option<String> {
    let dir = if path.is_dir() { path } else { path.parent()? };
    let text = crate::input::read_to_string(&dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let model_type = v.get("model_type")?.as_str()?;
    let arch = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("(no architectures)");
    let modality = match model_type {
        "bert" | "roberta" => "text",
        "vit" | "vit_mae" => "image",
        _ => "not loadable by pretext",
    };
    Some(format!("Hugging Face {arch} ({model_type}, {modality})"))
}

/// A human-readable listing: one line per tensor (name, dtype, shape, elements), totals,
/// and the training state for checkpoints.
pub fn report(path: &Path) -> Result<String> {
    let file = resolve(path)?;
    let bytes = crate::input::read(&file)?;
    crate::tensor_io::check_header(&bytes).map_err(|m| Error::data(&file, m))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::data(
            &file,
            format!("not a valid safetensors file ({e}); it may be truncated or corrupt"),
        )
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::data(&file, e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();

    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    writeln!(out, "{}", file.display()).ok();
    if let Some(line) = hf_family(path) {
        writeln!(out, "{line}").ok();
    }
    writeln!(
        out,
        "{:width$}  {:5}  {:>16}  {:>10}",
        "name", "dtype", "shape", "elements"
    )
    .ok();
    let (mut params, mut other) = (0usize, 0usize);
    let is_ckpt = checkpoint::is_checkpoint(&meta);
    for name in &names {
        let view = st
            .tensor(name)
            .map_err(|e| Error::data(&file, e.to_string()))?;
        let n: usize = view.shape().iter().product();
        if is_ckpt && !name.starts_with("model.") {
            other += n;
        } else {
            params += n;
        }
        writeln!(
            out,
            "{name:width$}  {:5}  {:>16}  {n:>10}",
            format!("{:?}", view.dtype()),
            format!("{:?}", view.shape())
        )
        .ok();
    }
    writeln!(
        out,
        "{} tensors, {} parameters ({:.2} M)",
        names.len(),
        params,
        params as f64 / 1e6
    )
    .ok();
    if is_ckpt {
        let c = checkpoint::load(&file, &candle_core::Device::Cpu)?;
        writeln!(
            out,
            "training checkpoint: step {}, data epoch {} position {}, {} optimizer-state elements",
            c.state.step, c.state.data.epoch, c.state.data.index, other
        )
        .ok();
    }
    Ok(out)
}
