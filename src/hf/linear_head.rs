//! The linear layer of a classifier that no `transformers` class computes, written beside
//! its encoder as `classifier.safetensors` (`weight [num_labels, dim]`, `bias [num_labels]`);
//! the encoder's `config.json` says how to pool under `pretext_classifier`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::tensor_io;

/// The file holding the linear layer.
pub const HEAD_FILE: &str = "classifier.safetensors";

/// Writes `classifier.{weight,bias}` of `tensors` (read from `weights`), checked to be
/// `[labels, dim]` and `[labels]`, as `out/classifier.safetensors`; returns its path.
pub fn write(
    tensors: &BTreeMap<String, Tensor>,
    weights: &Path,
    labels: usize,
    dim: usize,
    out: &Path,
) -> Result<PathBuf> {
    let take = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = tensors.get(name).ok_or_else(|| {
            Error::data(
                weights,
                format!("missing tensor `{name}` of the classifier"),
            )
        })?;
        if t.dims() != shape {
            return Err(Error::data(
                weights,
                format!(
                    "tensor `{name}`: expected shape {shape:?} (model.json), found {:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t.to_dtype(DType::F32)?)
    };
    let linear = vec![
        (
            "weight".to_string(),
            take("classifier.weight", &[labels, dim])?,
        ),
        ("bias".to_string(), take("classifier.bias", &[labels])?),
    ];
    let path = out.join(HEAD_FILE);
    tensor_io::write_pt(&path, &linear)?;
    Ok(path)
}
