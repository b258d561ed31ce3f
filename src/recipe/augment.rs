//! Checks of an augmentation table (`data.augment`, `downstream[i].augment`): which keys the
//! recipe's modality takes, and their ranges.

use std::path::Path;

use super::types::{AugmentSection, MixupSection, Modality, ShiftWithin, SpecMaskSection};
use super::validate::check;
use crate::error::Result;

/// Checks the table at `at` for a recipe of `modality`; `waveform` is an audio recipe whose
/// heads read raw waveforms (a `model.source`), which nothing augments.
pub(crate) fn validate_augment(
    a: &AugmentSection,
    at: &str,
    modality: Modality,
    waveform: bool,
    file: &Path,
) -> Result<()> {
    let (image, audio) = (a.image_keys(), a.audio_keys());
    match modality {
        Modality::Image => check(
            audio.is_empty(),
            file,
            &format!("{at}.{}", audio.first().copied().unwrap_or_default()),
            || {
                "is an audio augmentation; images take random_resized_crop, hflip and random_erasing".into()
            },
        )?,
        Modality::Audio => {
            check(
                image.is_empty(),
                file,
                &format!("{at}.{}", image.first().copied().unwrap_or_default()),
                || {
                    "is an image augmentation; audio takes time_shift (and time_shift_within), gain_db, noise, time_masks and freq_masks".into()
                },
            )?;
            check(!waveform, file, at, || {
                "augments spectrograms; a waveform model.source reads raw waveforms: remove it"
                    .into()
            })?;
        }
        Modality::Text => check(false, file, at, || {
            "text takes no augmentation (its masking is the objective's): remove it".into()
        })?,
    }
    check_probability(a.hflip, &format!("{at}.hflip"), file)?;
    if let Some(c) = &a.random_resized_crop {
        check(
            c.scale[0] > 0.0 && c.scale[0] <= c.scale[1] && c.scale[1] <= 1.0,
            file,
            &format!("{at}.random_resized_crop.scale"),
            || format!("needs 0 < min <= max <= 1, found {:?}", c.scale),
        )?;
        check_ratio(c.ratio, &format!("{at}.random_resized_crop.ratio"), file)?;
    }
    if let Some(e) = &a.random_erasing {
        check_probability(e.prob, &format!("{at}.random_erasing.prob"), file)?;
        check(
            e.scale[0] > 0.0 && e.scale[0] <= e.scale[1] && e.scale[1] < 1.0,
            file,
            &format!("{at}.random_erasing.scale"),
            || {
                format!(
                    "needs 0 < min <= max < 1 (a fraction of the image), found {:?}",
                    e.scale
                )
            },
        )?;
        check_ratio(e.ratio, &format!("{at}.random_erasing.ratio"), file)?;
    }
    check(
        a.time_shift.is_finite() && (0.0..=60.0).contains(&a.time_shift),
        file,
        &format!("{at}.time_shift"),
        || format!("seconds in [0, 60], found {}", a.time_shift),
    )?;
    check(
        a.time_shift_within == ShiftWithin::Window || a.time_shift > 0.0,
        file,
        &format!("{at}.time_shift_within"),
        || {
            "says where a time shift may move a clip, but time_shift is 0: set time_shift (seconds) or remove it".into()
        },
    )?;
    check(
        a.gain_db.is_finite() && (0.0..=60.0).contains(&a.gain_db),
        file,
        &format!("{at}.gain_db"),
        || {
            format!(
                "dB in [0, 60] (the largest change either way), found {}",
                a.gain_db
            )
        },
    )?;
    if let Some(n) = &a.noise {
        check(
            n.snr_db.iter().all(|s| s.is_finite() && s.abs() <= 100.0)
                && n.snr_db[0] <= n.snr_db[1],
            file,
            &format!("{at}.noise.snr_db"),
            || {
                format!(
                    "needs [min, max] in dB, min <= max, within ±100, found {:?}",
                    n.snr_db
                )
            },
        )?;
        check_probability(n.probability, &format!("{at}.noise.probability"), file)?;
    }
    for (m, key) in [(&a.time_masks, "time_masks"), (&a.freq_masks, "freq_masks")] {
        if let Some(SpecMaskSection { count, width }) = m {
            check(*count <= 64, file, &format!("{at}.{key}.count"), || {
                format!("at most 64 masks, found {count}")
            })?;
            check(*width >= 1, file, &format!("{at}.{key}.width"), || {
                "the largest width must be at least 1 (masks are [0, width) wide)".into()
            })?;
        }
    }
    Ok(())
}

/// Checks a fine-tuning head's `mixup` table at `at`: images and audio only (a waveform
/// model, `waveform`, mixup only), and sane ranges.
pub(crate) fn validate_mixup(
    m: &MixupSection,
    at: &str,
    modality: Modality,
    waveform: bool,
    file: &Path,
) -> Result<()> {
    check(modality != Modality::Text, file, at, || {
        "mixup and CutMix mix images and audio; token ids cannot be blended, so a text head takes neither: remove it".into()
    })?;
    for (value, name) in [(m.alpha, "alpha"), (m.cutmix_alpha, "cutmix_alpha")] {
        check(
            value.is_finite() && value >= 0.0,
            file,
            &format!("{at}.{name}"),
            || format!("a Beta distribution's α, 0 (off) or more, found {value}"),
        )?;
    }
    check(
        !waveform || m.cutmix_alpha == 0.0,
        file,
        &format!("{at}.cutmix_alpha"),
        || {
            "CutMix cuts a box out of a spectrogram or an image; a waveform model (model.source) \
         takes mixup only: set cutmix_alpha = 0"
                .into()
        },
    )?;
    check(m.alpha > 0.0 || m.cutmix_alpha > 0.0, file, at, || {
        "alpha and cutmix_alpha are both 0, so nothing would be mixed: set one or remove the table"
            .into()
    })?;
    for (value, name) in [(m.prob, "prob"), (m.switch_prob, "switch_prob")] {
        check_probability(value, &format!("{at}.{name}"), file)?;
    }
    Ok(())
}

/// `key` holds a probability.
fn check_probability(value: f64, key: &str, file: &Path) -> Result<()> {
    check((0.0..=1.0).contains(&value), file, key, || {
        format!("a probability in [0, 1], found {value}")
    })
}

/// `key` holds a range of aspect ratios.
fn check_ratio(ratio: [f64; 2], key: &str, file: &Path) -> Result<()> {
    check(
        ratio[0] > 0.0 && ratio[0] <= ratio[1] && ratio[1].is_finite(),
        file,
        key,
        || format!("needs 0 < min <= max, found {ratio:?}"),
    )
}
