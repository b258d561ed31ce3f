//! Full-state checkpoints: model weights (`model.*`), AdamW moments (`optim.m.*`,
//! `optim.v.*`) and, in the safetensors metadata, the step, the RNG state and the data
//! position. One file per checkpoint, `checkpoints/step-NNNNNNN.safetensors`, written
//! atomically; the newest `keep` are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::sampler::Position;
use crate::error::{Error, Result};
use crate::tensor_io;

/// Everything but the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimizer steps completed.
    pub step: usize,
    pub data: Position,
    pub rng: ChaCha8Rng,
    /// The current epoch's order, for data orders drawn from the RNG (the downstream heads'
    /// [`EpochOrder`](super::epochs::EpochOrder)); pretraining's seeded sampler needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<usize>>,
    /// The steps the learning-rate schedule spanned when this was written (`train.steps`),
    /// so that a resume under another count can say what that does to the learning rate;
    /// absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_steps: Option<usize>,
}

const STATE_KEY: &str = "pretext.training_state";

pub struct Checkpoint {
    pub path: PathBuf,
    pub state: TrainingState,
    pub model: BTreeMap<String, Tensor>,
    pub optim: BTreeMap<String, Tensor>,
}

pub fn file_name(step: usize) -> String {
    format!("step-{step:07}.safetensors")
}

/// Writes a checkpoint into `dir` and removes all but the newest `keep`.
pub fn save(
    dir: &Path,
    state: &TrainingState,
    model: &[(String, Tensor)],
    optim: &[(String, Tensor)],
    keep: usize,
) -> Result<PathBuf> {
    let path = dir.join(file_name(state.step));
    let mut tensors: Vec<(String, Tensor)> = model
        .iter()
        .map(|(n, t)| (format!("model.{n}"), t.clone()))
        .collect();
    tensors.extend(optim.iter().map(|(n, t)| (format!("optim.{n}"), t.clone())));
    let state_json = serde_json::to_string(state).map_err(|e| Error::data(&path, e.to_string()))?;
    let meta = HashMap::from([
        (STATE_KEY.to_string(), state_json),
        ("format".to_string(), "pt".to_string()),
    ]);
    tensor_io::write(&path, &tensors, meta)?;
    let all = list(dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_file(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(path)
}

/// Checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(step) = step {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(dir)?.pop().map(|(_, p)| p))
}

/// The newest checkpoint in `dir` that loads, onto `device`, saying on stderr that the run
/// resumes from it. A newer one that does not load (truncated by a crash or a full disk,
/// say) is moved aside to `step-NNNNNNN.safetensors.unreadable` — kept, not deleted — and
/// the one before it is tried; what was skipped and why is said on stderr. Temporary files
/// left by writes that never finished are removed first.
pub fn resume_from(dir: &Path, device: &Device) -> Result<Option<Checkpoint>> {
    crate::tensor_io::remove_stale_temps(dir)?;
    let mut all = list(dir)?;
    while let Some((_, path)) = all.pop() {
        match load(&path, device) {
            Ok(c) => {
                eprintln!("resuming from {} (step {})", path.display(), c.state.step);
                return Ok(Some(c));
            }
            // Not the file's fault (permissions, a disk that cannot be read): say so.
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => {
                let aside = path.with_extension("safetensors.unreadable");
                std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                eprintln!(
                    "warning: skipping checkpoint {} ({e}); moved aside to {}",
                    path.display(),
                    aside.display()
                );
            }
        }
    }
    Ok(None)
}

/// Whether a safetensors file's metadata marks it as a training checkpoint.
pub fn is_checkpoint(metadata: &HashMap<String, String>) -> bool {
    metadata.contains_key(STATE_KEY)
}

pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let loaded = tensor_io::read(path, device)?;
    let state_json = loaded
        .metadata
        .get(STATE_KEY)
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("no `{STATE_KEY}` metadata: not a pretext training checkpoint"),
        })?;
    let state: TrainingState = serde_json::from_str(state_json).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("unreadable training state: {e}"),
    })?;
    let mut model = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in loaded.tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("optim.") {
            optim.insert(n.to_string(), t);
        } else {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("unexpected tensor `{name}`"),
            });
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        state,
        model,
        optim,
    })
}
