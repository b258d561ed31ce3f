//! The `[data.audio]` section of a recipe (features, clip length, patches, normalisation)
//! and the checks of an audio recipe, Audio-MAE or a waveform `model.source`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backbone::Pooling;
use crate::error::{Error, Result};
use crate::objective::masking::Masking;
use crate::recipe::memory::Footprint;
use crate::recipe::source::{sources, DataSource};
use crate::recipe::{check, ModalityRecipe, ObjectiveKind, Recipe};

/// Audio pretrains with Audio-MAE or data2vec on spectrograms (nothing with a waveform
/// `model.source`).
pub const RECIPE: ModalityRecipe = ModalityRecipe {
    name: "audio",
    objectives: &[ObjectiveKind::Mae, ObjectiveKind::Data2vec],
    validate,
    footprint,
};

fn footprint(r: &Recipe) -> Option<Footprint> {
    let a = r.data.audio.as_ref()?;
    let (frames, mels) = (a.frames as f64, a.mel.n_mels as f64);
    let (pt, pf) = (a.patch_time.max(1) as f64, a.patch_freq.max(1) as f64);
    let patches = (frames / pt) * (mels / pf);
    let d = r.model.dim as f64;
    Some(Footprint {
        tokens: (patches + 1.0) as u128,
        tokens_key: "data.audio.frames",
        input_values: (frames * mels) as u128,
        patch_values: (pt * pf) as u128,
        embed_params: (pt * pf * d + d + 2.0 * d) as u128,
        embed_key: "data.audio.frames",
        output_values: 0,
    })
}

/// How audio clips become spectrograms: every clip is read (WAV; any channel count is
/// mixed down), resampled to `mel.sample_rate`, cut or padded to `frames` frames, turned
/// into a log-mel spectrogram and normalised with one mean and standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSection {
    /// Log-mel settings (FFT size, hop, mel bands, scale, ...), and the sample rate clips are
    /// resampled to.
    #[serde(default)]
    pub mel: crate::modality::audio::mel::MelConfig,
    /// Spectrogram frames per clip: a clip is `(frames - 1) * hop_length` samples, longer
    /// ones centre-cropped, shorter ones padded with silence at the end.
    pub frames: usize,
    /// Mel bands per patch; must divide `mel.n_mels` (Audio-MAE; absent with a waveform
    /// `model.source`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patch_freq: usize,
    /// Frames per patch; must divide `frames` (Audio-MAE).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patch_time: usize,
    /// Normalisation of the log-mel values; absent = the mean and standard deviation of
    /// the training split (saved with the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f32>,
    /// Cut each clip's leading and trailing audio more than this many dB below its loudest
    /// 10 ms (one hop) before fitting it to the window, in training, evaluation, `embed`
    /// and `predict` alike (librosa's `effects.trim`); absent keeps clips whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_db: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An audio recipe starting from a waveform model (`model.source`): downstream only, on raw
/// 16 kHz waveforms of the clip length `frames` and the mel hop describe; it takes no
/// objective and no patch sizes.
fn validate_waveform_source(r: &Recipe, a: &AudioSection, file: &Path) -> Result<()> {
    check(r.objective.is_none(), file, "objective", || {
        "a recipe starting from a waveform model.source pretrains nothing: remove [objective]"
            .into()
    })?;
    check(
        a.patch_freq == 0 && a.patch_time == 0,
        file,
        "data.audio.patch_freq",
        || {
            "patch sizes are Audio-MAE's; a waveform model.source reads raw waveforms: remove patch_freq and patch_time"
                .into()
        },
    )?;
    check(a.trim_db.is_none(), file, "data.audio.trim_db", || {
        "silence trimming is for spectrogram recipes; a waveform model.source reads clips whole: remove trim_db".into()
    })?;
    check(r.train.steps == 0, file, "train.steps", || {
        format!(
            "must be 0 with model.source in an audio recipe (found {}): there is no Audio-MAE pretraining of a waveform model; its downstream heads run on the source's weights",
            r.train.steps
        )
    })?;
    check(
        a.mel.sample_rate == 16000,
        file,
        "data.audio.mel.sample_rate",
        || {
            format!(
                "waveform models (wav2vec2, HuBERT, data2vec-audio) take 16000 Hz input, found {}",
                a.mel.sample_rate
            )
        },
    )?;
    check(!r.downstream.is_empty(), file, "downstream", || {
        "an audio recipe with model.source needs at least one [[downstream]] head".into()
    })?;
    for (i, d) in r.downstream.iter().enumerate() {
        check(
            d.pooling != Pooling::Cls,
            file,
            &format!("downstream[{i}].pooling"),
            || "waveform models have no class token: use pooling = \"mean\"".into(),
        )?;
    }
    Ok(())
}

pub fn validate(r: &Recipe, file: &Path) -> Result<()> {
    let a = r.data.audio.as_ref().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.audio".into(),
        message: "required when data.modality = \"audio\" (e.g. audio = { frames = 96, patch_freq = 8, patch_time = 4, mel = { n_mels = 64 } })".into(),
    })?;
    a.mel.validate().map_err(|m| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.audio.mel".into(),
        message: m,
    })?;
    check(a.frames >= 2, file, "data.audio.frames", || {
        format!("must be at least 2, found {}", a.frames)
    })?;
    for (key, src) in sources(r) {
        check(
            matches!(src, DataSource::Folder { .. } | DataSource::Manifest { .. }),
            file,
            &format!("{key}.format"),
            || {
                "audio recipes read format = \"folder\" (root/<label>/*.wav) or \"manifest\" (CSV)"
                    .into()
            },
        )?;
    }
    check(
        a.trim_db.is_none_or(|d| d > 0.0 && d.is_finite()),
        file,
        "data.audio.trim_db",
        || "must be a positive number of dB (e.g. 40)".into(),
    )?;
    if r.model.source.is_some() {
        // Patch sizes, normalisation and the objective are Audio-MAE's.
        return validate_waveform_source(r, a, file);
    }
    check(
        a.patch_freq > 0 && a.mel.n_mels % a.patch_freq == 0,
        file,
        "data.audio.patch_freq",
        || format!("{} must divide mel.n_mels = {}", a.patch_freq, a.mel.n_mels),
    )?;
    check(
        a.patch_time > 0 && a.frames % a.patch_time == 0,
        file,
        "data.audio.patch_time",
        || format!("{} must divide frames = {}", a.patch_time, a.frames),
    )?;
    check(
        a.std.is_none_or(|s| s > 0.0 && s.is_finite()),
        file,
        "data.audio.std",
        || "must be positive".into(),
    )?;
    check(
        a.mean.is_some() == a.std.is_some(),
        file,
        "data.audio.mean",
        || "give both `mean` and `std`, or neither (then the training split's are used)".into(),
    )?;
    let masking = r
        .objective
        .as_ref()
        .map_or(Masking::Random, |o| o.masking());
    check(masking != Masking::Block, file, "objective.masking", || {
        "audio uses `random`, `time`, `frequency` or `time-frequency` masking".into()
    })?;
    check(r.model.dim.is_multiple_of(4), file, "model.dim", || {
        format!(
            "{} must be divisible by 4 (2-D sin-cos positions)",
            r.model.dim
        )
    })?;
    let (gt, gf) = (
        a.frames / a.patch_time.max(1),
        a.mel.n_mels / a.patch_freq.max(1),
    );
    let axis_ok = match masking {
        Masking::Time => gt >= 2,
        Masking::Frequency => gf >= 2,
        Masking::TimeFrequency => gt >= 2 && gf >= 2,
        _ => gt.saturating_mul(gf) >= 2,
    };
    check(axis_ok, file, "objective.masking", || {
        format!("the patch grid ({gt} time x {gf} frequency) is too small to mask along that axis")
    })?;
    if masking == Masking::Random {
        crate::recipe::check_masked_grid(r, gt.saturating_mul(gf), file)?;
    }
    Ok(())
}
