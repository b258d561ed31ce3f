//! Variable-length audio: clips shorter than the encoder's window are padded, and the
//! padding mask keeps whatever the padding holds out of the encoder's outputs (pooled
//! embeddings, class token), Audio-MAE's loss and data2vec's, on the committed
//! spoken-word sample (words of 0.2–1.0 s in a 0.95 s window).

mod common;

use candle_core::{Device, Tensor};
use pretext::backbone::{Mode, PooledEncoder, Pooling};
use pretext::draws::Draws;
use pretext::modality::audio::clips::{AudioFeatures, ClipSet};
use pretext::modality::audio::dataset::{class_names, scan_folder};
use pretext::modality::audio::encoder::{token_mask, SpectrogramEncoder, Spectrograms};
use pretext::modality::audio::run::{data2vec_config, mae_config};
use pretext::objective::data2vec::AudioData2vec;
use pretext::objective::mae::AudioMae;
use pretext::params::ParamStore;
use pretext::recipe::{self, Override, Recipe};

const RECIPE: &str = "recipes/audio-mae-words-sample.toml";

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe(sets: &[&str]) -> Recipe {
    let sets: Vec<Override> = sets
        .iter()
        .map(|s| Override::parse_set(s).unwrap())
        .collect();
    recipe::load(&root().join(RECIPE), &sets).unwrap().recipe
}

/// The sample's test clips (in memory) and their normalised features.
fn clips(r: &Recipe) -> (ClipSet, AudioFeatures) {
    let a = r.data.audio.as_ref().unwrap();
    let items = scan_folder(&root().join("data/words-sample/test")).unwrap();
    let set =
        ClipSet::load_in_memory(&items, &a.mel, a.frames, a.trim_db, &class_names(&items)).unwrap();
    let (mean, std) = set.stats().unwrap();
    let f = AudioFeatures {
        mel: a.mel.clone(),
        frames: a.frames,
        mean,
        std,
        trim_db: a.trim_db,
    };
    (set, f)
}

/// `x` with random values (std 3) in every frame of the time steps that hold no frame of
/// the clip: what the mask must make irrelevant.
fn new_padding(x: &Spectrograms, enc: &SpectrogramEncoder) -> Spectrograms {
    let g = enc.geometry;
    let frames = x.frames.as_ref().unwrap();
    let tokens = token_mask(frames, &g).unwrap(); // [B, L], time-major
    let (b, _) = tokens.dims2().unwrap();
    // Time step t of each clip: the token (t, 0).
    let steps = tokens
        .reshape((b, g.time_patches(), g.freq_patches()))
        .unwrap()
        .narrow(2, 0, 1)
        .unwrap();
    let per_frame = steps
        .broadcast_as((b, g.time_patches(), g.patch_time))
        .unwrap()
        .reshape((b, 1, g.frames))
        .unwrap();
    let pad = (1.0 - per_frame).unwrap();
    let noise = (Tensor::randn(0f32, 1.0, x.values.dims(), &Device::Cpu).unwrap() * 3.0).unwrap();
    Spectrograms {
        values: (&x.values + noise.broadcast_mul(&pad).unwrap()).unwrap(),
        frames: x.frames.clone(),
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b)
}

/// The indices of padded clips (some) and the full-length ones (the rest).
fn padded(set: &ClipSet, f: &AudioFeatures) -> Vec<usize> {
    (0..set.len())
        .filter(|&i| (set.length(i) as usize) < f.clip_len())
        .collect()
}

#[test]
fn short_clips_carry_frame_masks_that_end_where_the_clip_does() {
    let r = recipe(&[]);
    let (set, f) = clips(&r);
    let short = padded(&set, &f);
    // Every word of the sample is shorter than the window.
    assert_eq!(short.len(), set.len());
    let x = set.batch(&short, &f, &Device::Cpu).unwrap();
    let frames: Vec<Vec<f32>> = x.frames.unwrap().to_vec2().unwrap();
    let hop = f.mel.hop_length;
    for (row, &i) in frames.iter().zip(&short) {
        let held = row.iter().filter(|&&v| v == 1.0).count();
        // Frames are centred: frame j holds the clip while j * hop - n_fft / 2 < length.
        let want = (set.length(i) as usize + f.mel.n_fft / 2).div_ceil(hop);
        assert_eq!(held, want.min(f.frames), "clip {i}");
        assert!(row[..held].iter().all(|&v| v == 1.0), "a prefix: {row:?}");
    }
    // Full-length clips (or of unknown length) need no mask at all.
    assert!(f.frame_masks(&[f.clip_len() as u32, u32::MAX]).is_none());
    assert!(f.frame_masks(&[f.clip_len() as u32 - 1]).is_some());
}

#[test]
fn padding_changes_no_embedding_but_does_without_the_mask() {
    let r = recipe(&[]);
    let (set, f) = clips(&r);
    let short = padded(&set, &f);
    let a = r.data.audio.as_ref().unwrap();
    let cfg = mae_config(&r, a).unwrap();
    let dev = Device::Cpu;
    let enc = SpectrogramEncoder::new(
        cfg.geometry,
        &cfg.encoder,
        ParamStore::new(5).var_builder(&dev).pp("audio"),
    )
    .unwrap();
    let x = set.batch(&short, &f, &dev).unwrap();
    let y = new_padding(&x, &enc);
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let px = enc.pooled(&x, pooling, &mut Mode::Eval).unwrap();
        let py = enc.pooled(&y, pooling, &mut Mode::Eval).unwrap();
        assert!(
            max_diff(&px, &py) < 1e-4,
            "{pooling:?}: {}",
            max_diff(&px, &py)
        );
        // Without the mask the same change does show.
        let unmasked = |s: &Spectrograms| {
            let full = Spectrograms::full(s.values.clone());
            enc.pooled(&full, pooling, &mut Mode::Eval).unwrap()
        };
        assert!(max_diff(&unmasked(&x), &unmasked(&y)) > 1e-2, "{pooling:?}");
    }
}

/// An objective's loss on a batch, its masks fixed.
type LossFn = Box<dyn Fn(&Spectrograms) -> f32>;

#[test]
fn padding_changes_no_pretraining_loss() {
    let dev = Device::Cpu;
    for kind in ["mae", "data2vec"] {
        let objective = format!(
            "objective={{ kind = \"{kind}\", mask_ratio = 0.75, decoder = {{ dim = 64, depth = 1, heads = 4 }} }}"
        );
        let r = recipe(&[&objective]);
        let (set, f) = clips(&r);
        let short = padded(&set, &f);
        let a = r.data.audio.as_ref().unwrap();
        let x = set.batch(&short, &f, &dev).unwrap();
        let draws = Draws::fixed(9, short.len());
        let (loss, with_pad): (LossFn, _) = if kind == "mae" {
            let mae = AudioMae::new(
                &mae_config(&r, a).unwrap(),
                ParamStore::new(5).var_builder(&dev),
            )
            .unwrap();
            let noise = mae.sample_noise(&draws, &dev).unwrap();
            let y = new_padding(&x, &mae.encoder);
            let loss = move |s: &Spectrograms| {
                let out = mae.forward(s, &noise, &mut Mode::Eval).unwrap();
                out.loss.to_scalar::<f32>().unwrap()
            };
            (Box::new(loss), y)
        } else {
            let params = ParamStore::new(5);
            let d2v = AudioData2vec::new(&data2vec_config(&r, a).unwrap(), &params, &dev).unwrap();
            let noise = d2v.masker().noise(&draws, &dev).unwrap();
            let y = new_padding(&x, &d2v.encoder);
            let loss = move |s: &Spectrograms| {
                let out = d2v.forward(s, &noise, &mut Mode::Eval).unwrap();
                out.loss.to_scalar::<f32>().unwrap()
            };
            (Box::new(loss), y)
        };
        let (lx, ly) = (loss(&x), loss(&with_pad));
        assert!(lx.is_finite() && lx > 0.0, "{kind}: {lx}");
        assert!((lx - ly).abs() <= 1e-5 * lx.abs(), "{kind}: {lx} vs {ly}");
        // Unmasked, the padding's content enters the loss.
        let unmasked = |s: &Spectrograms| loss(&Spectrograms::full(s.values.clone()));
        let (ux, uy) = (unmasked(&x), unmasked(&with_pad));
        assert!((ux - uy).abs() > 1e-3 * ux.abs(), "{kind}: {ux} vs {uy}");
    }
}

#[test]
fn trimmed_clips_do_not_depend_on_the_silence_around_them() {
    let r = recipe(&["data.audio.trim_db=40.0"]);
    let (_, f) = clips(&r);
    assert_eq!(f.trim_db, Some(40.0));
    let mel = pretext::modality::audio::mel::MelSpectrogram::new(&f.mel).unwrap();
    let path = root().join("data/words-sample/test/go/en-us+anika_s175_p50.wav");
    let clip = pretext::modality::audio::resample::load_clip(&path, 16_000).unwrap();
    // The same word after 0.2 s and before 0.1 s of digital silence (whole hops).
    let mut padded = vec![0f32; 3200];
    padded.extend(&clip);
    padded.extend(vec![0f32; 1600]);
    let trimmed = f.trim(&padded);
    assert!(
        trimmed.len() < clip.len(),
        "{} of {}",
        trimmed.len(),
        clip.len()
    );
    assert_eq!(trimmed, f.trim(&clip));
    let dev = Device::Cpu;
    let a = f.windows_input(&mel, &[trimmed], &dev).unwrap();
    let b = f.windows_input(&mel, &[f.trim(&clip)], &dev).unwrap();
    assert_eq!(max_diff(&a.values, &b.values), 0.0);
    // Shorter than the window: padded, and the mask ends with the word.
    let frames: Vec<f32> = a.frames.unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let held = frames.iter().filter(|&&v| v == 1.0).count();
    assert!(held < f.frames, "{held}");
    // Untrimmed, the silence is part of the clip.
    let whole = AudioFeatures {
        trim_db: None,
        ..f.clone()
    };
    assert_eq!(whole.trim(&padded).len(), padded.len());
}
