//! Mixup and CutMix of a fine-tuning batch, as timm's `Mixup` in batch mode (the one MAE's
//! and Audio-MAE's fine-tuning use): a batch draws one weight `λ` and either blends every
//! input with the input in the mirrored row (mixup: `λ·x + (1 - λ)·x'`, row `i` with row
//! `B - 1 - i`) or pastes a box of the partner into it (CutMix; for a spectrogram the box
//! spans mel bands and frames). The targets mix in the same proportion
//! ([`super::finetune::Scored::mixed`]).
//!
//! The draws follow timm's order: whether to mix (`prob`), then mixup or CutMix
//! (`switch_prob`, when both are on), `λ ~ Beta(α, α)`, and for CutMix the box's centre; a
//! box that reaches past an edge is clipped and `λ` recomputed from the area left
//! (`correct_lam`).

use std::ops::Range;

use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::error::{Error, Result};

/// How batches are mixed (a recipe's `downstream[i].mixup`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixup {
    /// Mixup's `λ ~ Beta(α, α)`; 0 = no mixup.
    pub alpha: f64,
    /// CutMix's `λ ~ Beta(α, α)`; 0 = no CutMix.
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// With both on, the probability of CutMix rather than mixup.
    pub switch_prob: f64,
}

/// What one batch draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Each example's own share of its input and target.
    pub lam: f64,
    /// CutMix: the rows and columns pasted from the partner; `None`: mixup.
    pub cut: Option<(Range<usize>, Range<usize>)>,
}

/// Draws a batch's mix for images of `h × w`, or `None` when the batch stays as it is.
pub fn draw(m: &Mixup, h: usize, w: usize, rng: &mut impl Rng) -> Result<Option<Mix>> {
    if m.prob <= 0.0 || rng.gen::<f64>() >= m.prob {
        return Ok(None);
    }
    let cutmix = match (m.alpha > 0.0, m.cutmix_alpha > 0.0) {
        (true, true) => rng.gen::<f64>() < m.switch_prob,
        (false, true) => true,
        (true, false) => false,
        (false, false) => return Ok(None),
    };
    let alpha = if cutmix { m.cutmix_alpha } else { m.alpha };
    let beta = Beta::new(alpha, alpha)
        .map_err(|e| Error::Usage(format!("mixup: Beta({alpha}, {alpha}): {e}")))?;
    let lam: f64 = beta.sample(rng);
    if !cutmix {
        return Ok(Some(Mix { lam, cut: None }));
    }
    let ratio = (1.0 - lam).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let (cy, cx) = (rng.gen_range(0..h), rng.gen_range(0..w));
    let rows = cy.saturating_sub(cut_h / 2)..(cy + cut_h / 2).min(h);
    let cols = cx.saturating_sub(cut_w / 2)..(cx + cut_w / 2).min(w);
    let area = rows.len() * cols.len();
    Ok(Some(Mix {
        lam: 1.0 - area as f64 / (h * w) as f64,
        cut: Some((rows, cols)),
    }))
}

/// The rows each row is mixed with: the batch reversed (for whatever travels with the
/// inputs, such as a padding mask).
pub fn partner_rows(t: &Tensor) -> Result<Tensor> {
    let b = t.dim(0)?;
    let rev: Vec<u32> = (0..b as u32).rev().collect();
    let rev = Tensor::from_vec(rev, b, t.device())?;
    Ok(t.index_select(&rev, 0)?)
}

/// The batch `x` `[B, …, H, W]` mixed as `mix` says.
pub fn mix_images(x: &Tensor, mix: &Mix) -> Result<Tensor> {
    let partner = partner_rows(x)?;
    let Some((rows, cols)) = &mix.cut else {
        return Ok(((x * mix.lam)? + (partner * (1.0 - mix.lam))?)?);
    };
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(Error::Usage(format!(
            "CutMix needs a batch of images [B, …, H, W], found shape {dims:?}"
        )));
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let mut inside = vec![0f32; h * w];
    for r in rows.clone() {
        inside[r * w + cols.start..r * w + cols.end].fill(1.0);
    }
    let inside = Tensor::from_vec(inside, (h, w), x.device())?.to_dtype(x.dtype())?;
    let outside = (1.0 - &inside)?;
    Ok((x.broadcast_mul(&outside)? + partner.broadcast_mul(&inside)?)?)
}

/// The labels of the rows each example of the batch is mixed with.
pub fn partner_labels(labels: &Tensor) -> Result<Tensor> {
    partner_rows(&labels.to_dtype(DType::U32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn section(alpha: f64, cutmix_alpha: f64) -> Mixup {
        Mixup {
            alpha,
            cutmix_alpha,
            prob: 1.0,
            switch_prob: 0.5,
        }
    }

    #[test]
    fn mixup_blends_each_image_with_the_mirrored_one() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 2, 4))
            .unwrap();
        let mix = Mix {
            lam: 0.75,
            cut: None,
        };
        let y: Vec<Vec<Vec<f32>>> = mix_images(&x, &mix)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec3()
            .unwrap();
        // Row 0 with row 2, row 1 with itself.
        assert_eq!(y[0][0][0], 0.75 * 0.0 + 0.25 * 16.0);
        assert_eq!(y[1][1][3], 15.0);
        assert_eq!(y[2][0][1], 0.75 * 17.0 + 0.25 * 1.0);
    }

    #[test]
    fn cutmix_pastes_the_box_and_lambda_is_the_area_left() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = Tensor::arange(0f32, 2.0 * 28.0 * 28.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 1, 28, 28))
            .unwrap();
        let mut seen = 0;
        for _ in 0..200 {
            let Some(mix) = draw(&section(0.0, 1.0), 28, 28, &mut rng).unwrap() else {
                panic!("prob 1 mixes every batch");
            };
            let (rows, cols) = mix.cut.clone().expect("CutMix only");
            assert!(rows.end <= 28 && cols.end <= 28);
            let area = rows.len() * cols.len();
            assert!((mix.lam - (1.0 - area as f64 / 784.0)).abs() < 1e-12);
            let y = mix_images(&x, &mix).unwrap().squeeze(1).unwrap();
            let y: Vec<Vec<Vec<f32>>> = y.to_vec3().unwrap();
            let mut pasted = 0;
            for (r, row) in y[0].iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let own = (r * 28 + c) as f32;
                    let other = own + 784.0;
                    let inside = rows.contains(&r) && cols.contains(&c);
                    assert_eq!(v, if inside { other } else { own });
                    pasted += inside as usize;
                }
            }
            assert_eq!(pasted, area);
            seen += (area > 0) as usize;
        }
        assert!(seen > 150, "most boxes are not empty: {seen} of 200");
    }

    #[test]
    fn draws_follow_prob_switch_prob_and_alpha() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut none, mut cut, mut blend, mut sum) = (0, 0, 0, 0.0);
        let half = Mixup {
            prob: 0.5,
            ..section(0.8, 1.0)
        };
        for _ in 0..4000 {
            match draw(&half, 28, 28, &mut rng).unwrap() {
                None => none += 1,
                Some(Mix { cut: Some(_), .. }) => cut += 1,
                Some(Mix { lam, cut: None }) => {
                    blend += 1;
                    sum += lam;
                    assert!((0.0..=1.0).contains(&lam));
                }
            }
        }
        assert!((1800..2200).contains(&none), "{none}");
        assert!((800..1200).contains(&cut), "{cut}");
        assert!((800..1200).contains(&blend), "{blend}");
        // Beta(α, α) is symmetric about 1/2.
        assert!(
            (sum / blend as f64 - 0.5).abs() < 0.03,
            "{}",
            sum / blend as f64
        );
        let off = Mixup {
            prob: 0.0,
            ..section(0.8, 1.0)
        };
        assert!(draw(&off, 28, 28, &mut rng).unwrap().is_none());
    }

    #[test]
    fn partners_are_the_labels_reversed() {
        let y = Tensor::new(&[3u32, 1, 4, 1, 5], &Device::Cpu).unwrap();
        let p = partner_labels(&y).unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(p, vec![5, 1, 4, 1, 3]);
    }
}
