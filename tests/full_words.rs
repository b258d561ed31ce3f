//! Slow tier for the spoken-word set: needs `scripts/fetch-data.sh words` (espeak-ng).
//! Run with `cargo test --release --test full_words -- --ignored` (`.ci/run` does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pretext::modality::audio::clips::ClipSet;
use pretext::modality::audio::dataset::{self, AudioItem};
use pretext::modality::audio::mel::MelConfig;
use pretext::modality::audio::wav::read_wav;

const MANIFEST: &str = "data/words/manifest.csv";

fn items() -> Vec<AudioItem> {
    assert!(
        Path::new(MANIFEST).is_file(),
        "{MANIFEST} is missing: run scripts/fetch-data.sh words first"
    );
    dataset::read_manifest(Path::new(MANIFEST)).unwrap()
}

/// `…/<base>+<variant>_s<speed>_p<pitch>.wav` → (base, variant).
fn voice(item: &AudioItem) -> (String, String) {
    let stem = item
        .path
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let voice = stem.split('_').next().unwrap();
    let (base, variant) = voice.split_once('+').unwrap();
    (base.to_string(), variant.to_string())
}

#[test]
#[ignore = "needs scripts/fetch-data.sh words"]
fn words_are_split_by_voice_variant() {
    let all = items();
    let split = |s: &str| -> Vec<&AudioItem> {
        all.iter()
            .filter(|i| i.split.as_deref() == Some(s))
            .collect()
    };
    let (train, test) = (split("train"), split("test"));
    assert_eq!(train.len(), 7040);
    assert_eq!(test.len(), 2560);
    // 20 words, balanced in both splits.
    for set in [&train, &test] {
        let mut per_word: BTreeMap<&str, usize> = BTreeMap::new();
        for i in set.iter() {
            *per_word.entry(i.label.as_deref().unwrap()).or_default() += 1;
        }
        assert_eq!(per_word.len(), 20);
        let counts: BTreeSet<usize> = per_word.values().copied().collect();
        assert_eq!(counts.len(), 1, "unbalanced: {per_word:?}");
    }
    // No variant (timbre) of a test voice is heard in training, under any accent.
    let variants =
        |set: &[&AudioItem]| -> BTreeSet<String> { set.iter().map(|i| voice(i).1).collect() };
    let (tr, te) = (variants(&train), variants(&test));
    assert!(
        tr.is_disjoint(&te),
        "shared variants: {:?}",
        tr.intersection(&te)
    );
    assert_eq!(te.len(), 8);
    assert_eq!(tr.len(), 22);
}

#[test]
#[ignore = "needs scripts/fetch-data.sh words"]
fn every_clip_is_16k_mono_speech_and_featurises() {
    let all = items();
    // Every clip reads as 16 kHz mono and has speech in it (not silence).
    for item in all.iter().step_by(37) {
        let w = read_wav(&item.path).unwrap();
        assert_eq!(w.sample_rate, 16_000, "{}", item.path.display());
        let secs = w.samples.len() as f64 / 16_000.0;
        assert!(
            (0.15..=1.0).contains(&secs),
            "{}: {secs} s",
            item.path.display()
        );
        let peak = w.samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.05, "{}: peak {peak}", item.path.display());
    }
    // The whole test split through the recipe's features: finite, and louder where the
    // word is than in the padding.
    let test: Vec<AudioItem> = all
        .into_iter()
        .filter(|i| i.split.as_deref() == Some("test"))
        .collect();
    let classes = dataset::class_names(&test);
    let mel = MelConfig::default();
    let set = ClipSet::load(&test, &mel, 96, None, &classes).unwrap();
    assert_eq!(set.len(), 2560);
    assert!(set.values().iter().all(|v| v.is_finite()));
    let (mean, std) = set.stats().unwrap();
    assert!(std > 1.0, "log-mel std {std} (mean {mean})");
    let first_frames: f32 = (0..set.len())
        .map(|i| set.get(i)[..96].iter().take(20).sum::<f32>())
        .sum();
    let last_frames: f32 = (0..set.len())
        .map(|i| set.get(i)[..96].iter().skip(90).sum::<f32>())
        .sum();
    assert!(
        first_frames / 20.0 > last_frames / 6.0,
        "speech is at the start of each clip, padding at the end"
    );
}
