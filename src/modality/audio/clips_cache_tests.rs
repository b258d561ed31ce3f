//! The mapped spectrogram cache against in-memory featurisation, on the committed sample
//! (a test module of `clips.rs`).

use super::*;
use crate::modality::audio::dataset::{class_names, scan_folder};

fn sample(split: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/words-sample")
        .join(split)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn mapped_clips_equal_in_memory_ones_and_a_second_load_reuses_the_cache() {
    let items = scan_folder(&sample("test")).unwrap();
    let classes = class_names(&items);
    let mel = MelConfig::default();
    let cache = tempfile::tempdir().unwrap();
    let memory = ClipSet::load_in_memory(&items, &mel, 96, None, &classes).unwrap();
    let mapped = ClipSet::load_cached(&items, &mel, 96, None, &classes, cache.path()).unwrap();
    assert_eq!(memory.cache_file(), None);
    let (file, reused) = mapped.cache_file().unwrap();
    assert!(!reused);
    assert!(file.starts_with(cache.path()));
    assert_eq!(mapped.len(), items.len());
    assert_eq!(mapped.kind, memory.kind);
    assert_eq!(mapped.labels, memory.labels);
    assert_eq!(mapped.paths, memory.paths);
    assert_eq!(bits(mapped.values()), bits(memory.values()));
    for i in [0, 7, items.len() - 1] {
        assert_eq!(bits(mapped.get(i)), bits(memory.get(i)));
    }
    // Statistics and batches agree too.
    let (m0, s0) = memory.stats().unwrap();
    let (m1, s1) = mapped.stats().unwrap();
    assert_eq!((m0.to_bits(), s0.to_bits()), (m1.to_bits(), s1.to_bits()));
    let f = AudioFeatures {
        mel: mel.clone(),
        frames: 96,
        mean: m0,
        std: s0,
        trim_db: None,
    };
    let idx = [3, 1, 4, 1, 5];
    assert_eq!(
        bits(&mapped.normalised(&idx, &f).unwrap()),
        bits(&memory.normalised(&idx, &f).unwrap())
    );

    // Unchanged files and settings: the same file, reused, nothing rewritten.
    let modified = std::fs::metadata(file).unwrap().modified().unwrap();
    let again = ClipSet::load_cached(&items, &mel, 96, None, &classes, cache.path()).unwrap();
    assert_eq!(again.cache_file(), Some((file, true)));
    assert_eq!(
        std::fs::metadata(file).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(bits(again.values()), bits(memory.values()));

    // Other settings: another cache.
    let other = ClipSet::load_cached(&items, &mel, 48, None, &classes, cache.path()).unwrap();
    assert_ne!(other.cache_file().unwrap().0, file);

    // Truncation keeps the first clips of the map.
    let mut short = again.clone();
    short.truncate(3);
    assert_eq!(short.len(), 3);
    assert_eq!(bits(short.values()), bits(&memory.values()[..3 * 64 * 96]));
}

#[test]
fn a_changed_file_makes_a_new_cache() {
    let data = tempfile::tempdir().unwrap();
    for word in ["down", "five"] {
        let to = data.path().join(word);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(sample("test").join(word)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    let items = scan_folder(data.path()).unwrap();
    let classes = class_names(&items);
    let mel = MelConfig::default();
    let cache = tempfile::tempdir().unwrap();
    let first = ClipSet::load_cached(&items, &mel, 96, None, &classes, cache.path()).unwrap();
    let first_file = first.cache_file().unwrap().0.to_path_buf();
    // Another word's recording under the first file's name: new content, size, mtime.
    let replacement = std::fs::read_dir(sample("test").join("eight"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&replacement, &items[0].path).unwrap();
    let second = ClipSet::load_cached(&items, &mel, 96, None, &classes, cache.path()).unwrap();
    let (second_file, reused) = second.cache_file().unwrap();
    assert!(!reused);
    assert_ne!(second_file, first_file);
    // The first cache is still intact; the new one holds the new clip.
    assert_eq!(bits(first.get(1)), bits(second.get(1)));
    assert_ne!(bits(first.get(0)), bits(second.get(0)));
    let memory = ClipSet::load_in_memory(&items, &mel, 96, None, &classes).unwrap();
    assert_eq!(bits(second.values()), bits(memory.values()));
}

#[test]
fn one_pass_stats_match_the_two_pass_ones() {
    let values: Vec<f32> = (0..50_000)
        .map(|i| -4.0 + (i as f32 * 0.013).sin() * 3.0)
        .collect();
    let set = ClipSet::from_values(
        ClipKind::Waveform { samples: 500 },
        values.clone(),
        None,
        (0..100)
            .map(|i| PathBuf::from(format!("{i}.wav")))
            .collect(),
    )
    .unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (m, s) = set.stats().unwrap();
    assert!((m as f64 - mean).abs() < 1e-6, "{m} vs {mean}");
    assert!(
        (s as f64 - var.sqrt()).abs() < 1e-6,
        "{s} vs {}",
        var.sqrt()
    );
    assert!(ClipSet::from_values(set.kind, vec![0.0; 3], None, set.paths.clone()).is_err());
}
