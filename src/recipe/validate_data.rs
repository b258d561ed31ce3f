//! The data sections of each modality: image geometry and normalisation, text tokenizers,
//! audio features and patches, waveform sources, and which source formats each reads.

use std::path::Path;

use super::source::{sources, DataSource};
use super::types::*;
use super::validate::check;
use crate::error::{Error, Result};

/// Image recipes: geometry, normalisation, MAE or SimMIM with image masking.
pub(super) fn validate_image(r: &Recipe, file: &Path) -> Result<()> {
    let img = r.data.image.as_ref().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.image".into(),
        message: "required when data.modality = \"image\" (e.g. image = { size = 28, channels = 1, patch = 4 })".into(),
    })?;
    check(
        img.patch > 0 && img.size % img.patch == 0,
        file,
        "data.image.patch",
        || format!("patch {} must divide size {}", img.patch, img.size),
    )?;
    check(img.channels > 0, file, "data.image.channels", || {
        "must be positive".into()
    })?;
    check(
        img.mean.len() == img.channels,
        file,
        "data.image.mean",
        || {
            format!(
                "needs one value per channel ({}), found {}",
                img.channels,
                img.mean.len()
            )
        },
    )?;
    check(
        img.std.len() == img.channels && img.std.iter().all(|s| *s > 0.0),
        file,
        "data.image.std",
        || format!("needs {} positive values", img.channels),
    )?;
    check(r.model.dim.is_multiple_of(4), file, "model.dim", || {
        format!(
            "{} must be divisible by 4 (2-D sin-cos positions)",
            r.model.dim
        )
    })?;
    // A missing [objective] is reported by `validate`.
    let Some(o) = &r.objective else {
        return Ok(());
    };
    check(
        o.kind() != ObjectiveKind::Mlm,
        file,
        "objective.kind",
        || "`mlm` is a text objective; images use `mae` or `simmim`".into(),
    )?;
    check(
        matches!(o.masking(), Masking::Random | Masking::Block),
        file,
        "objective.masking",
        || "images use `random` or `block` masking (time / frequency masking is for audio)".into(),
    )?;
    Ok(())
}

/// Text recipes: a tokenizer from a file, from training, or from the model source.
pub(super) fn validate_text(r: &Recipe, file: &Path) -> Result<()> {
    let text = r.data.text.as_ref().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.text".into(),
        message: "required when data.modality = \"text\" (e.g. text = { max_len = 128, tokenizer = { train = \"wordpiece\", vocab_size = 8000 } })".into(),
    })?;
    check(text.max_len >= 8, file, "data.text.max_len", || {
        format!("must be at least 8, found {}", text.max_len)
    })?;
    match (&text.tokenizer, &r.model.source) {
        (None, None) => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "data.text.tokenizer".into(),
                message: "required without model.source: { file = \"tokenizer.json\" } or { train = \"wordpiece\", vocab_size = 8000 }".into(),
            })
        }
        (Some(t), _) => {
            check(
                t.file.is_some() != t.train.is_some(),
                file,
                "data.text.tokenizer",
                || "give exactly one of `file` and `train`".into(),
            )?;
            check(
                t.file.is_none() || r.model.source.is_none(),
                file,
                "data.text.tokenizer.file",
                || "model.source brings its own tokenizer.json; remove this key".into(),
            )?;
            check(
                t.vocab_size >= 100,
                file,
                "data.text.tokenizer.vocab_size",
                || format!("must be at least 100, found {}", t.vocab_size),
            )?;
        }
        (None, Some(_)) => {}
    }
    for (key, src) in sources(r) {
        check(
            matches!(src, DataSource::Text { .. } | DataSource::Jsonl { .. }),
            file,
            &format!("{key}.format"),
            || "text recipes read format = \"text\" or \"jsonl\"".into(),
        )?;
    }
    check(
        r.objective
            .as_ref()
            .is_none_or(|o| o.kind() == ObjectiveKind::Mlm),
        file,
        "objective.kind",
        || "text pretraining uses kind = \"mlm\"".into(),
    )?;
    Ok(())
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

pub(super) fn validate_audio(r: &Recipe, file: &Path) -> Result<()> {
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
    check(
        r.objective
            .as_ref()
            .is_none_or(|o| o.kind() == ObjectiveKind::Mae),
        file,
        "objective.kind",
        || "audio pretraining uses kind = \"mae\" (Audio-MAE)".into(),
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
        _ => gt * gf >= 2,
    };
    check(axis_ok, file, "objective.masking", || {
        format!("the patch grid ({gt} time x {gf} frequency) is too small to mask along that axis")
    })?;
    Ok(())
}

/// What the format checks of the sources leave: an image folder gives 1 or 3 channels.
pub(super) fn validate_sources(r: &Recipe, file: &Path) -> Result<()> {
    for (_, src) in sources(r) {
        if matches!(src, DataSource::Folder { .. }) && r.data.modality == Modality::Image {
            if let Some(img) = &r.data.image {
                check(
                    img.channels == 1 || img.channels == 3,
                    file,
                    "data.image.channels",
                    || {
                        format!(
                            "image folders give 1 (luma) or 3 (RGB) channels, found {}",
                            img.channels
                        )
                    },
                )?;
            }
        }
    }
    Ok(())
}
