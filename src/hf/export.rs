//! [`LoadedModel`] → a directory `transformers` loads with `from_pretrained`:
//! `config.json`, `model.safetensors` (metadata `{"format": "pt"}`, names from the family's
//! table, base-model names under `vit.` in task wrappers, as `save_pretrained` writes them)
//! and `preprocessor_config.json` (a `ViTImageProcessor` with the model's normalisation).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::checkpoint::{CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE};
use super::config;
use super::spec::{Kind, LoadedModel};
use crate::error::{Error, Result};
use crate::tensor_io;

/// What a user of the export should know, if anything.
pub fn notes(m: &LoadedModel) -> Option<String> {
    match m.spec.kind {
        Kind::Encoder { pooler: None } => Some(
            "this ViTModel has no pooler: load it with \
             ViTModel.from_pretrained(DIR, add_pooling_layer=False)"
                .into(),
        ),
        _ => None,
    }
}

/// Writes `m` into `out` (created if needed); returns the files written.
pub fn write_hf(m: &LoadedModel, out: &Path) -> Result<Vec<PathBuf>> {
    let cfg = config::to_json(&m.spec, m.hf_config.as_ref())?;
    let prefix = match m.spec.kind {
        Kind::Encoder { .. } => "",
        Kind::Classifier { .. } | Kind::Mae { .. } => "vit.",
    };
    let mut tensors = Vec::new();
    for row in super::table(&m.spec) {
        let t = m.tensors.get(&row.ours).ok_or_else(|| {
            Error::data(
                &m.origin,
                format!("missing tensor `{}` to export", row.ours),
            )
        })?;
        let name = if row.base {
            format!("{prefix}{}", row.hf)
        } else {
            row.hf.clone()
        };
        tensors.push((name, t.contiguous()?));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights = out.join(WEIGHTS_FILE);
    tensor_io::write_pt(&weights, &tensors)?;
    let config_path = out.join(CONFIG_FILE);
    write_json(&config_path, &Value::Object(cfg))?;
    let size = m.spec.geometry.size;
    let pre = json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": {"height": size, "width": size},
        "resample": 2,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": shortest(&m.normalize.mean),
        "image_std": shortest(&m.normalize.std),
    });
    let pre_path = out.join(PREPROCESSOR_FILE);
    write_json(&pre_path, &pre)?;
    Ok(vec![config_path, weights, pre_path])
}

/// f32 values as the f64 with the shortest decimal form (0.286, not 0.28600001335144043).
fn shortest(v: &[f32]) -> Vec<f64> {
    v.iter()
        .map(|x| x.to_string().parse().unwrap_or(*x as f64))
        .collect()
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::data(path, e.to_string()))?;
    tensor_io::write_atomic(path, format!("{text}\n").as_bytes())
}
