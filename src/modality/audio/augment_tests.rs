//! The spectrogram-domain augmentations against the same change made to the waveform, on
//! clips of the committed harder spoken-word sample (`data/words-hard-sample`).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::modality::audio::load_clip;

fn clip(name: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/words-hard-sample")
        .join(name);
    load_clip(&path, 16000).unwrap()
}

/// The sample's first training clip (the word "zero" at 9,450 samples) and the features of
/// the spoken-word recipes: 64 bands, 10 ms hop, 101 frames = the whole second.
fn setup() -> (Vec<f32>, AudioFeatures, MelSpectrogram) {
    let f = AudioFeatures {
        mel: MelConfig {
            n_mels: 64,
            ..MelConfig::default()
        },
        frames: 101,
        mean: -6.0,
        std: 4.0,
        trim_db: None,
    };
    let mel = MelSpectrogram::new(&f.mel).unwrap();
    (clip("train/zero/en-gb-scotland+robosoft2.wav"), f, mel)
}

fn augment(a: AugmentSettings, f: &AudioFeatures) -> AudioAugment {
    AudioAugment::new(&a, &f.mel, 7).unwrap().unwrap()
}

fn shape(f: &AudioFeatures) -> Shape {
    Shape {
        n_mels: f.mel.n_mels,
        frames: f.frames,
    }
}

#[test]
fn gain_is_the_spectrogram_of_the_scaled_clip() {
    let (wave, f, mel) = setup();
    let a = augment(
        AugmentSettings {
            gain_db: 6.0,
            ..Default::default()
        },
        &f,
    );
    for db in [-6.0f64, 4.5] {
        let mut x = f.spectrogram(&mel, &wave);
        a.gain(&mut x, db);
        let k = 10f32.powf(db as f32 / 20.0);
        let scaled: Vec<f32> = wave.iter().map(|v| v * k).collect();
        let want = f.spectrogram(&mel, &scaled);
        let worst = x
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "{db} dB: largest difference {worst}");
    }
}

#[test]
fn shift_is_the_spectrogram_of_the_delayed_clip() {
    let (wave, f, mel) = setup();
    let hop = f.mel.hop_length;
    let s = shape(&f);
    for by in [7i64, -5] {
        let mut x = f.spectrogram(&mel, &wave);
        let floors: Vec<f32> = x
            .chunks_exact(f.frames)
            .map(|r| r.iter().copied().fold(f32::INFINITY, f32::min))
            .collect();
        shift(&mut x, s, by);
        let n = wave.len() as i64;
        let moved: Vec<f32> = (0..n)
            .map(|i| {
                let src = i - by * hop as i64;
                if (0..n).contains(&src) {
                    wave[src as usize]
                } else {
                    0.0
                }
            })
            .collect();
        let want = f.spectrogram(&mel, &moved);
        // Frames whose window lies inside the moved clip (3 frames of edge each side).
        let (lo, hi) = if by > 0 {
            (by as usize + 3, f.frames - 3)
        } else {
            (3, f.frames - (-by) as usize - 3)
        };
        for b in 0..f.mel.n_mels {
            for t in lo..hi {
                let (got, w) = (x[b * f.frames + t], want[b * f.frames + t]);
                assert!((got - w).abs() < 1e-3, "band {b} frame {t}: {got} vs {w}");
            }
            let uncovered = if by > 0 { 0 } else { f.frames - 1 };
            assert_eq!(x[b * f.frames + uncovered], floors[b]);
        }
    }
}

#[test]
fn noise_has_white_noise_band_profile_and_the_asked_level() {
    let (wave, f, mel) = setup();
    let a = augment(
        AugmentSettings {
            noise: Some(([10.0, 10.0], 1.0)),
            ..Default::default()
        },
        &f,
    );
    let clean = f.spectrogram(&mel, &wave);
    let mut noisy = clean.clone();
    a.add_noise(
        &mut noisy,
        shape(&f),
        10.0,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    let power = |x: &[f32]| -> Vec<f64> {
        x.chunks_exact(f.frames)
            .map(|r| r.iter().map(|&v| (v as f64).exp() - 1e-6).sum())
            .collect()
    };
    let (p_clean, p_noisy) = (power(&clean), power(&noisy));
    let added: Vec<f64> = p_noisy.iter().zip(&p_clean).map(|(n, c)| n - c).collect();
    let snr = 10.0 * (p_clean.iter().sum::<f64>() / added.iter().sum::<f64>()).log10();
    assert!((snr - 10.0).abs() < 0.3, "SNR {snr} dB, asked 10");

    // Real Gaussian white noise through the same front end: the same share per band.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let white: Vec<f32> = (0..16000 * 8)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.01) as f32
        })
        .collect();
    let p_white: Vec<f64> = mel
        .mel_power(&white)
        .chunks_exact(mel.frames(white.len()))
        .map(|r| r.iter().map(|&v| v as f64).sum())
        .collect();
    let share = |p: &[f64]| -> Vec<f64> {
        let s: f64 = p.iter().sum();
        p.iter().map(|v| v / s).collect()
    };
    let (got, want) = (share(&added), share(&p_white));
    // Bands above 1 kHz average many bins; each share within 25 % of the real noise's.
    for b in 20..f.mel.n_mels {
        let r = got[b] / want[b];
        assert!(
            (0.75..1.33).contains(&r),
            "band {b}: {} vs {}",
            got[b],
            want[b]
        );
    }
}

#[test]
fn masks_zero_whole_columns_or_rows_narrower_than_width() {
    let (wave, f, mel) = setup();
    let s = shape(&f);
    let x = f.normalised(&[&f.spectrogram(&mel, &wave)]);
    assert!(x.iter().all(|&v| v != 0.0));
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut t = x.clone();
        mask(
            &mut t,
            s,
            Masks {
                count: 1,
                width: 10,
            },
            Axis::Time,
            &mut rng,
        );
        let cols: Vec<usize> = (0..f.frames)
            .filter(|&j| (0..f.mel.n_mels).all(|b| t[b * f.frames + j] == 0.0))
            .collect();
        let zeros = t.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, cols.len() * f.mel.n_mels, "only whole frames");
        assert!(cols.len() < 10);
        assert!(
            cols.windows(2).all(|w| w[1] == w[0] + 1),
            "one run: {cols:?}"
        );

        let mut q = x.clone();
        mask(
            &mut q,
            s,
            Masks { count: 2, width: 8 },
            Axis::Frequency,
            &mut rng,
        );
        let rows = q
            .chunks_exact(f.frames)
            .filter(|r| r.iter().all(|&v| v == 0.0))
            .count();
        assert_eq!(q.iter().filter(|&&v| v == 0.0).count(), rows * f.frames);
        assert!(rows < 16);
    }
}

#[test]
fn streams_are_per_example_and_the_pipeline_composes() {
    let (wave, f, mel) = setup();
    let spec = f.spectrogram(&mel, &wave);
    let section = AugmentSettings {
        time_shift: 0.1,
        shift_in_padding: false,
        gain_db: 6.0,
        noise: Some(([5.0, 30.0], 0.5)),
        time_masks: Some(Masks {
            count: 2,
            width: 10,
        }),
        freq_masks: Some(Masks { count: 2, width: 8 }),
    };
    let a = augment(section, &f);
    assert_eq!(a.shift_frames, 10);
    let run = |epoch, index| {
        let mut frames = vec![1.0; f.frames];
        let x = a.apply(&spec, &f, &mut frames, &mut a.rng(epoch, index));
        (x, frames)
    };
    assert_eq!(run(0, 3), run(0, 3));
    assert_ne!(run(0, 3), run(1, 3));
    assert_ne!(run(0, 3), run(0, 4));
    // Nothing to do: no augmentation at all.
    let none = AugmentSettings {
        time_masks: Some(Masks { count: 0, width: 5 }),
        ..Default::default()
    };
    assert!(AudioAugment::new(&none, &f.mel, 0).unwrap().is_none());
    // Only SpecAugment: the normalised clip outside the masked frames and bands.
    let masks_only = augment(
        AugmentSettings {
            time_masks: Some(Masks { count: 1, width: 5 }),
            ..Default::default()
        },
        &f,
    );
    let plain = f.normalised(&[&spec]);
    let mut frames = vec![1.0; f.frames];
    let got = masks_only.apply(&spec, &f, &mut frames, &mut masks_only.rng(0, 0));
    assert!(frames.iter().all(|&v| v == 1.0), "no shift: no padding");
    for (g, p) in got.iter().zip(&plain) {
        assert!(*g == 0.0 || g == p);
    }
}

#[test]
fn a_shift_moves_the_frame_mask_and_uncovers_padding() {
    let mut m = vec![1.0, 1.0, 1.0, 0.0, 0.0];
    shift_mask(&mut m, 1);
    assert_eq!(m, [0.0, 1.0, 1.0, 1.0, 0.0]);
    shift_mask(&mut m, -2);
    assert_eq!(m, [1.0, 1.0, 0.0, 0.0, 0.0]);
    shift_mask(&mut m, 0);
    assert_eq!(m, [1.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn a_shift_within_the_padding_never_moves_the_clip_out_of_the_window() {
    assert_eq!(padding_room(&[0.0, 0.0, 1.0, 1.0, 0.0], 5), (-2, 1));
    assert_eq!(padding_room(&[0.0, 0.0, 1.0, 1.0, 0.0], 1), (-1, 1));
    assert_eq!(padding_room(&[1.0, 1.0, 1.0], 4), (0, 0));
    assert_eq!(padding_room(&[0.0, 0.0], 4), (0, 0));
    assert_eq!(padding_room(&[], 4), (0, 0));
    let (wave, f, mel) = setup();
    let spec = f.spectrogram(&mel, &wave);
    let settings = |inside| AugmentSettings {
        time_shift: 0.3,
        shift_in_padding: inside,
        ..Default::default()
    };
    let (anywhere, inside) = (augment(settings(false), &f), augment(settings(true), &f));
    // A clip held in frames 4..20 of the window: within the padding it moves at most 4
    // frames earlier and keeps every frame; anywhere, some draws cut it.
    let held = |m: &[f32]| m.iter().filter(|&&v| v == 1.0).count();
    let mut cut = 0;
    let mut moved = [false; 2];
    for index in 0..200 {
        let start: Vec<f32> = (0..f.frames)
            .map(|j| if (4..20).contains(&j) { 1.0 } else { 0.0 })
            .collect();
        let mut m = start.clone();
        inside.apply(&spec, &f, &mut m, &mut inside.rng(0, index));
        assert_eq!(held(&m), 16, "draw {index}: {m:?}");
        let first = m.iter().position(|&v| v == 1.0).unwrap();
        assert!(first <= 4 + anywhere.shift_frames, "{first}");
        moved[(first < 4) as usize] = true;
        let mut m = start;
        anywhere.apply(&spec, &f, &mut m, &mut anywhere.rng(0, index));
        cut += (held(&m) < 16) as usize;
    }
    assert_eq!(moved, [true, true], "moves both ways");
    assert!(
        cut > 0,
        "an unrestricted shift of 0.3 s cuts a clip 4 frames from the edge"
    );
}
