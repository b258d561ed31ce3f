//! Audio-MAE (Huang et al. 2022, "Masked Autoencoders that Listen"): MAE on log-mel
//! spectrogram patches. The encoder sees only the kept patches, the light decoder (shared
//! with the image MAE, [`MaeDecoder`]) predicts every patch, and the loss is the mean squared
//! error on the removed ones, optionally on per-patch normalised targets.
//!
//! Masking removes patches uniformly at random (the paper's pretraining default), or whole
//! time columns, whole frequency rows, or both (the paper's structured "time+frequency"
//! masking): a mask is drawn first, then turned into MAE noise (removed patches get
//! `noise + 1`) so the same gather-based encoder path serves every kind. Each kind removes
//! the same number of patches in every example, so batches stay rectangular.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use rand::seq::index::sample;
use rand::Rng;

use super::mae::{denormalize_patches, masked_mse, normalize_patches, random_masking, MaeDecoder};
use super::masking::Masking;
use crate::backbone::{EncoderConfig, Mode};
use crate::modality::audio::encoder::{
    patchify, positions, SpectrogramEncoder, SpectrogramGeometry,
};

#[derive(Debug, Clone)]
pub struct AudioMaeConfig {
    pub geometry: SpectrogramGeometry,
    pub encoder: EncoderConfig,
    pub decoder: EncoderConfig,
    pub mask_ratio: f64,
    pub masking: Masking,
    pub norm_pix_loss: bool,
}

/// Draws masks of one kind over a time × frequency patch grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioMasker {
    pub time: usize,
    pub freq: usize,
    pub kind: Masking,
    /// Masked time columns / frequency rows (structured kinds).
    masked_time: usize,
    masked_freq: usize,
    /// Masked patches (random kind).
    masked_random: usize,
}

impl AudioMasker {
    /// `random`, `time`, `frequency` or `time-frequency` masking over `g`'s patch grid;
    /// `block` is an error (it is image masking).
    pub fn new(g: &SpectrogramGeometry, ratio: f64, kind: Masking) -> Result<Self> {
        let (t, f) = (g.time_patches(), g.freq_patches());
        let l = t * f;
        let count = |n: usize, r: f64| {
            ((r * n as f64).round() as usize).clamp(1, n.saturating_sub(1).max(1))
        };
        let each = 1.0 - (1.0 - ratio).sqrt();
        let (masked_time, masked_freq) = match kind {
            Masking::Random => (0, 0),
            Masking::Time => (count(t, ratio), 0),
            Masking::Frequency => (0, count(f, ratio)),
            Masking::TimeFrequency => (count(t, each), count(f, each)),
            Masking::Block => candle_core::bail!(
                "block masking is for images; spectrograms use `random`, `time`, `frequency` or `time-frequency`"
            ),
        };
        let keep = ((l as f64) * (1.0 - ratio)) as usize;
        Ok(Self {
            time: t,
            freq: f,
            kind,
            masked_time,
            masked_freq,
            masked_random: l - keep.min(l),
        })
    }

    pub fn num_patches(&self) -> usize {
        self.time * self.freq
    }

    /// Patches the encoder keeps, the same for every example.
    pub fn len_keep(&self) -> usize {
        match self.kind {
            Masking::Random => self.num_patches() - self.masked_random,
            _ => (self.time - self.masked_time) * (self.freq - self.masked_freq),
        }
    }

    /// One example's mask, time-major, `true` = removed.
    pub fn mask(&self, rng: &mut impl Rng) -> Vec<bool> {
        let l = self.num_patches();
        match self.kind {
            Masking::Random => {
                let mut m = vec![false; l];
                for i in sample(rng, l, self.masked_random) {
                    m[i] = true;
                }
                m
            }
            _ => {
                let mut cols = vec![false; self.time];
                for i in sample(rng, self.time, self.masked_time) {
                    cols[i] = true;
                }
                let mut rows = vec![false; self.freq];
                for i in sample(rng, self.freq, self.masked_freq) {
                    rows[i] = true;
                }
                (0..l)
                    .map(|i| cols[i / self.freq] || rows[i % self.freq])
                    .collect()
            }
        }
    }

    /// MAE noise `[B, L]`: uniform, plus 1 on removed patches, so keeping the `len_keep`
    /// lowest keeps exactly the unmasked patches.
    pub fn noise(&self, batch: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
        let l = self.num_patches();
        let mut v = Vec::with_capacity(batch * l);
        for _ in 0..batch {
            let m = self.mask(rng);
            v.extend(
                m.iter()
                    .map(|&removed| rng.gen::<f32>() + if removed { 1.0 } else { 0.0 }),
            );
        }
        Tensor::from_vec(v, (batch, l), device)
    }
}

pub struct AudioMaeOutput {
    pub loss: Tensor,
    /// `[B, L, pf * pt]` (normalised per patch when `norm_pix_loss`).
    pub pred: Tensor,
    /// `[B, L]`, 1 = removed.
    pub mask: Tensor,
}

pub struct AudioMae {
    pub audio: SpectrogramEncoder,
    decoder: MaeDecoder,
    pub masker: AudioMasker,
    cfg: AudioMaeConfig,
}

impl AudioMae {
    /// Parameters: `audio.*` (the encoder) and `decoder.*`.
    pub fn new(cfg: &AudioMaeConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0) {
            candle_core::bail!("mask_ratio must be in (0, 1), found {}", cfg.mask_ratio);
        }
        let audio = SpectrogramEncoder::new(cfg.geometry, &cfg.encoder, vb.pp("audio"))?;
        let decoder = MaeDecoder::new(
            cfg.encoder.dim,
            &cfg.decoder,
            positions(cfg.decoder.dim, &cfg.geometry, vb.device())?,
            cfg.geometry.patch_dim(),
            vb.pp("decoder"),
        )?;
        Ok(Self {
            audio,
            decoder,
            masker: AudioMasker::new(&cfg.geometry, cfg.mask_ratio, cfg.masking)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &AudioMaeConfig {
        &self.cfg
    }

    /// The reconstruction target `[B, L, pf * pt]`.
    pub fn target(&self, spec: &Tensor) -> Result<Tensor> {
        let p = patchify(spec, &self.cfg.geometry)?;
        if self.cfg.norm_pix_loss {
            normalize_patches(&p)
        } else {
            Ok(p)
        }
    }

    /// `spec: [B, n_mels, frames]`, `noise: [B, L]` (see [`AudioMasker::noise`]).
    pub fn forward(
        &self,
        spec: &Tensor,
        noise: &Tensor,
        mode: &mut Mode,
    ) -> Result<AudioMaeOutput> {
        let x = self.audio.embed_patches(spec)?;
        let (x, mask, ids_restore) = random_masking(&x, noise, self.masker.len_keep())?;
        let latent = self.audio.encode_tokens(&x, mode)?;
        let pred = self.decoder.forward(&latent, &ids_restore, mode)?;
        let loss = masked_mse(&pred, &self.target(spec)?, &mask)?;
        Ok(AudioMaeOutput { loss, pred, mask })
    }

    /// Predictions back in the spectrogram's (normalised log-mel) space, `[B, L, pf * pt]`.
    pub fn pred_to_spec(&self, spec: &Tensor, pred: &Tensor) -> Result<Tensor> {
        if self.cfg.norm_pix_loss {
            denormalize_patches(pred, &patchify(spec, &self.cfg.geometry)?)
        } else {
            Ok(pred.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn geometry() -> SpectrogramGeometry {
        SpectrogramGeometry {
            n_mels: 16,
            frames: 24,
            patch_freq: 4,
            patch_time: 4,
        }
    }

    #[test]
    fn every_kind_removes_a_fixed_count_with_its_structure() {
        let g = geometry(); // 6 time x 4 freq patches
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for kind in [
            Masking::Random,
            Masking::Time,
            Masking::Frequency,
            Masking::TimeFrequency,
        ] {
            let m = AudioMasker::new(&g, 0.5, kind).unwrap();
            for _ in 0..5 {
                let mask = m.mask(&mut rng);
                let kept = mask.iter().filter(|r| !**r).count();
                assert_eq!(kept, m.len_keep(), "{kind:?}");
                match kind {
                    Masking::Time => {
                        // A column is removed whole or not at all.
                        for t in 0..6 {
                            let col: Vec<bool> = (0..4).map(|f| mask[t * 4 + f]).collect();
                            assert!(col.iter().all(|&c| c == col[0]), "{col:?}");
                        }
                        assert_eq!(kept, 3 * 4);
                    }
                    Masking::Frequency => {
                        for f in 0..4 {
                            let row: Vec<bool> = (0..6).map(|t| mask[t * 4 + f]).collect();
                            assert!(row.iter().all(|&c| c == row[0]), "{row:?}");
                        }
                        assert_eq!(kept, 6 * 2);
                    }
                    Masking::TimeFrequency => assert!(kept < 24 && kept > 0),
                    Masking::Random => assert_eq!(kept, 12),
                    Masking::Block => unreachable!("not in the list"),
                }
            }
        }
    }

    #[test]
    fn block_masking_of_a_spectrogram_is_an_error_naming_the_kinds_it_takes() {
        let err = AudioMasker::new(&geometry(), 0.5, Masking::Block).unwrap_err();
        assert!(err.to_string().contains("time-frequency"), "{err}");
    }

    #[test]
    fn noise_keeps_exactly_the_unmasked_patches() {
        let g = geometry();
        let m = AudioMasker::new(&g, 0.6, Masking::TimeFrequency).unwrap();
        let noise = m
            .noise(3, &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu)
            .unwrap();
        for row in noise.to_vec2::<f32>().unwrap() {
            let low = row.iter().filter(|&&v| v < 1.0).count();
            assert_eq!(low, m.len_keep());
        }
    }
}
