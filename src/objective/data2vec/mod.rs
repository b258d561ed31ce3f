//! data2vec (Baevski et al. 2022, "data2vec: A General Framework for Self-supervised
//! Learning in Speech, Vision and Language"; data2vec 2.0, 2023): one objective for every
//! modality. A student encodes the masked input; a teacher, the exponential moving average
//! of the student's encoder ([`Teacher`]), encodes the whole input; the target at each
//! position is the average of the teacher's last `top_k` block outputs, each
//! instance-normalised over the positions ([`targets`]); a light decoder regresses the
//! targets from the student's output, and the loss is the mean squared error at the masked
//! positions.
//!
//! The teacher, the targets and the loss are this module's, shared by every modality; what
//! differs is how a modality's input is masked, in [`patch`] (images and spectrograms:
//! masked patches are dropped, as in MAE and data2vec 2.0, and the decoder restores them)
//! and [`text`] (tokens replaced as BERT's masking does, as in data2vec's text model).
//!
//! The block outputs are the residual stream after each block (the fused CPU block gives
//! no other); data2vec 1 took the feed-forward output before the last residual.

pub mod patch;
pub mod teacher;
pub mod text;

use candle_core::{Result, Tensor};

use crate::backbone::{EncoderConfig, Mode};
use crate::objective::masking::Masking;
pub use patch::{AudioData2vec, ImageData2vec, PatchData2vec};
pub use teacher::{EmaSchedule, Teacher};
pub use text::TextData2vec;

/// A data2vec objective over a patch grid of geometry `G`.
#[derive(Debug, Clone)]
pub struct Data2vecConfig<G> {
    pub geometry: G,
    pub encoder: EncoderConfig,
    /// The light decoder (a pre-norm stack, as MAE's).
    pub decoder: EncoderConfig,
    /// Fraction of patches removed, in (0, 1).
    pub mask_ratio: f64,
    pub masking: Masking,
    /// Teacher blocks averaged into the target (the last ones), `1..=encoder.depth`.
    pub top_k: usize,
    pub ema: EmaSchedule,
}

/// The blocks a teacher's forward pass in [`Mode::Layers`] recorded.
pub fn recorded(mode: Mode) -> Result<Vec<Tensor>> {
    match mode {
        Mode::Layers(layers) => Ok(layers),
        _ => candle_core::bail!("data2vec: the teacher's pass recorded no block outputs"),
    }
}

/// Checks `top_k` against the encoder's depth.
pub fn check_top_k(top_k: usize, depth: usize) -> Result<()> {
    if top_k == 0 || top_k > depth {
        candle_core::bail!(
            "data2vec: top_k = {top_k} must be between 1 and the encoder's depth ({depth})"
        );
    }
    Ok(())
}

/// The regression target: the average of the last `top_k` of the teacher's block outputs
/// `layers` (`[B, T, D]` each), each instance-normalised over its positions (per example
/// and channel: zero mean, unit variance, eps 1e-5, as `F.instance_norm`), after dropping
/// the first `skip` positions (a class token). `valid` (`[B, T - skip]`, 1 = real) leaves
/// padding out of the statistics. No gradient flows into it.
pub fn targets(
    layers: &[Tensor],
    top_k: usize,
    skip: usize,
    valid: Option<&Tensor>,
) -> Result<Tensor> {
    check_top_k(top_k, layers.len())?;
    let mut sum: Option<Tensor> = None;
    for h in &layers[layers.len() - top_k..] {
        let h = h.detach();
        let t = h.dim(1)?;
        let n = instance_norm(&h.narrow(1, skip, t - skip)?, valid)?;
        sum = Some(match sum {
            None => n,
            Some(s) => (s + n)?,
        });
    }
    let sum = sum.expect("top_k >= 1");
    Ok((sum / top_k as f64)?.detach())
}

/// `h: [B, T, D]` normalised over `T` per example and channel; `valid: [B, T]`.
pub fn instance_norm(h: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
    const EPS: f64 = 1e-5;
    match valid {
        None => {
            let centred = h.broadcast_sub(&h.mean_keepdim(1)?)?;
            let var = centred.sqr()?.mean_keepdim(1)?;
            centred.broadcast_div(&(var + EPS)?.sqrt()?)
        }
        Some(m) => {
            let m = m.to_dtype(h.dtype())?.unsqueeze(2)?;
            let count = m.sum_keepdim(1)?.clamp(1f64, f64::MAX)?;
            let mean = h.broadcast_mul(&m)?.sum_keepdim(1)?.broadcast_div(&count)?;
            let centred = h.broadcast_sub(&mean)?;
            let var = centred
                .sqr()?
                .broadcast_mul(&m)?
                .sum_keepdim(1)?
                .broadcast_div(&count)?;
            centred
                .broadcast_div(&(var + EPS)?.sqrt()?)?
                .broadcast_mul(&m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn seq(b: usize, t: usize, d: usize, scale: f32) -> Tensor {
        let v: Vec<f32> = (0..b * t * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * scale + i as f32 * 0.01)
            .collect();
        Tensor::from_vec(v, (b, t, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn targets_are_instance_normalised_averages_of_the_top_blocks() {
        let layers = vec![seq(2, 5, 3, 100.0), seq(2, 5, 3, 1.0), seq(2, 5, 3, 3.0)];
        let y = targets(&layers, 2, 1, None).unwrap();
        assert_eq!(y.dims(), [2, 4, 3]);
        let one = |l: &Tensor| instance_norm(&l.narrow(1, 1, 4).unwrap(), None).unwrap();
        let expected = ((one(&layers[1]) + one(&layers[2])).unwrap() / 2.0).unwrap();
        let diff = (&y - &expected).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        // Each normalised block has zero mean and unit variance per example and channel.
        let n = one(&layers[2]);
        let mean = n.mean(1).unwrap().abs().unwrap().max_all().unwrap();
        assert!(mean.to_scalar::<f32>().unwrap() < 1e-5);
        let var = n.sqr().unwrap().mean(1).unwrap();
        for v in var.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((v - 1.0).abs() < 1e-3, "variance {v}");
        }
        // The first block (scale 100) is not among the top two: it leaves no trace.
        assert!(targets(&layers, 4, 1, None).is_err());
        assert!(targets(&layers, 0, 1, None).is_err());
    }

    #[test]
    fn padding_stays_out_of_the_statistics() {
        let h = seq(1, 4, 2, 1.0);
        let valid = Tensor::new(&[[1f32, 1., 1., 0.]], &Device::Cpu).unwrap();
        let masked = instance_norm(&h, Some(&valid)).unwrap();
        let alone = instance_norm(&h.narrow(1, 0, 3).unwrap(), None).unwrap();
        let diff = (masked.narrow(1, 0, 3).unwrap() - alone)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let pad = masked.i((0, 3)).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(pad, vec![0.0, 0.0]);
    }
}
