//! The losses `transformers` models return when given `labels`, with the labels checked
//! first (shape, integer type, range) so a wrong one is an error naming the input.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// `…ForSequenceClassification`'s (and `…ForImageClassification`'s) loss: cross-entropy for integer labels `[B]` with several
/// classes, mean squared error for one output (regression, labels `[B]` float).
pub fn classifier_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, n) = logits.dims2()?;
    if labels.dims() != [b] {
        return Err(Error::Usage(format!(
            "inputs: `labels` must have shape [{b}] (one per sequence), found {:?}",
            labels.dims()
        )));
    }
    if n == 1 {
        let l = labels.to_dtype(DType::F32)?;
        return Ok((logits.squeeze(1)? - l)?.sqr()?.mean_all()?);
    }
    if labels.dtype().is_float() {
        return Err(Error::Usage(
            "inputs: `labels` must be integer class indices (multi-label classification is \
             not supported)"
                .into(),
        ));
    }
    let l = labels.to_dtype(DType::I64)?;
    let bad = l
        .to_vec1::<i64>()?
        .into_iter()
        .enumerate()
        .find(|&(_, x)| x < 0 || x as usize >= n);
    if let Some((i, x)) = bad {
        return Err(Error::Usage(format!(
            "inputs: `labels`[{i}]: label {x} is out of range for {n} classes (0 to {})",
            n - 1
        )));
    }
    Ok(candle_nn::loss::cross_entropy(logits, &l)?)
}

/// Mean cross-entropy of `logits [B, T, V]` over the tokens whose `labels [B, T]` are not
/// -100 (NaN when there are none, as in PyTorch).
pub fn mlm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if labels.dims() != [b, t] {
        return Err(Error::Usage(format!(
            "inputs: `labels` must have shape [{b}, {t}] like input_ids, found {:?}",
            labels.dims()
        )));
    }
    let flat = labels
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let mut keep = Vec::new();
    let mut targets = Vec::new();
    for (i, &l) in flat.iter().enumerate() {
        if l == -100 {
            continue;
        }
        if l < 0 || l as usize >= v {
            return Err(Error::Usage(format!(
                "inputs: label {l} at [{}, {}] is out of range for a vocabulary of {v}",
                i / t,
                i % t
            )));
        }
        keep.push(i as u32);
        targets.push(l);
    }
    let dev = logits.device();
    if keep.is_empty() {
        return Ok(Tensor::new(f32::NAN, dev)?);
    }
    let n = keep.len();
    let rows = logits
        .reshape((b * t, v))?
        .index_select(&Tensor::from_vec(keep, n, dev)?, 0)?;
    let targets = Tensor::from_vec(targets, n, dev)?;
    Ok(candle_nn::loss::cross_entropy(&rows, &targets)?)
}
