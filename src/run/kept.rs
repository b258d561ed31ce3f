//! Finished downstream results are never overwritten. Each (section, fraction, draw) has one
//! directory, named by its place in the recipe (`downstream/00-fine-tune-pretrained-1pct`);
//! when a resumed run puts other settings in that place, the finished result there moves to
//! `downstream/replaced/<name>-<k>` first, and a later run with those settings again moves it
//! back instead of training it again.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Directory (inside `downstream/`) of the results that other settings replaced.
pub const REPLACED: &str = "replaced";

/// The file of a finished result; its `settings` say what produced it.
const RESULT: &str = "result.json";

/// Readies `dir` for the result of `settings`: keeps a finished result of other settings
/// in `replaced/`, and brings back a kept result of `settings` if there is one. The caller
/// then reads `dir/result.json` (reused when its settings match) or trains into `dir`.
pub fn prepare(dir: &Path, settings: &serde_json::Value) -> Result<()> {
    let here = settings_of(dir);
    if here.as_ref() == Some(settings) {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return Ok(());
    };
    let store = parent.join(REPLACED);
    let found = kept(&store, name)?
        .into_iter()
        .find(|k| settings_of(k).as_ref() == Some(settings));
    match (here.is_some(), found) {
        (true, Some(k)) => {
            // The two trade places (through a third name, so nothing is lost midway).
            let swap = store.join(format!(".{name}-swap"));
            rename(&k, &swap)?;
            rename(dir, &k)?;
            rename(&swap, dir)?;
            eprintln!(
                "  {}: the result of these settings is back from {}, which now keeps the other",
                dir.display(),
                k.display()
            );
        }
        (true, None) => {
            let slot = free_slot(&store, name)?;
            rename(dir, &slot)?;
            eprintln!(
                "  {}: other settings now; its finished result is kept in {}",
                dir.display(),
                slot.display()
            );
        }
        (false, Some(k)) => {
            if dir.exists() {
                // An unfinished fine-tuning of other settings, whose checkpoints would be
                // discarded anyway.
                std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            rename(&k, dir)?;
            eprintln!(
                "  {}: the result of these settings is back from {}",
                dir.display(),
                k.display()
            );
        }
        (false, None) => {}
    }
    Ok(())
}

/// The settings of the finished result in `dir`, if it holds one that parses.
fn settings_of(dir: &Path) -> Option<serde_json::Value> {
    let text = crate::input::read_to_string(&dir.join(RESULT)).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v.get_mut("settings")?.take())
}

/// The kept results of `name`: `store/<name>-<k>`.
fn kept(store: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(store) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(store, e))?;
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        let numbered = f
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
        if numbered {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `store/<name>-<k>` for the smallest `k` not taken.
fn free_slot(store: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(store).map_err(|e| Error::io(store, e))?;
    (1..)
        .map(|k| store.join(format!("{name}-{k}")))
        .find(|p| !p.exists())
        .ok_or_else(|| Error::io(store, std::io::Error::other("no free name")))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(from, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finish(dir: &Path, settings: serde_json::Value, weights: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let r = json!({ "settings": settings, "result": {} });
        std::fs::write(dir.join(RESULT), r.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    }

    fn weights(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("model.safetensors")).unwrap()
    }

    #[test]
    fn other_settings_keep_the_finished_result_and_bring_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("00-fine-tune-pretrained-1pct");
        let (a, b) = (json!({ "lr": 1 }), json!({ "lr": 2 }));
        finish(&dir, a.clone(), "A");
        // The same settings: nothing moves.
        prepare(&dir, &a).unwrap();
        assert_eq!(weights(&dir), "A");
        // Other settings: A is kept, the place is free to train B.
        prepare(&dir, &b).unwrap();
        assert!(!dir.exists());
        let store = tmp.path().join(REPLACED);
        assert_eq!(weights(&store.join("00-fine-tune-pretrained-1pct-1")), "A");
        finish(&dir, b.clone(), "B");
        // A again: it comes back, and B is kept in its place.
        prepare(&dir, &a).unwrap();
        assert_eq!(weights(&dir), "A");
        assert_eq!(weights(&store.join("00-fine-tune-pretrained-1pct-1")), "B");
        // A third: A is kept beside B, and B comes back from there.
        prepare(&dir, &json!({ "lr": 3 })).unwrap();
        assert_eq!(weights(&store.join("00-fine-tune-pretrained-1pct-2")), "A");
        prepare(&dir, &b).unwrap();
        assert_eq!(weights(&dir), "B");
        // No temporary name is left behind.
        let names: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["00-fine-tune-pretrained-1pct-2"]);
        // Kept results of another place with a longer name are not this place's.
        let other = tmp.path().join("00-fine-tune-pretrained-1pct-draw1");
        prepare(&other, &a).unwrap();
        assert!(!other.exists());
    }

    #[test]
    fn an_unfinished_fine_tuning_gives_way_to_a_kept_result() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("01-fine-tune-scratch-100pct");
        let a = json!({ "epochs": 3 });
        finish(&dir, a.clone(), "A");
        prepare(&dir, &json!({ "epochs": 4 })).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        prepare(&dir, &a).unwrap();
        assert_eq!(weights(&dir), "A");
        assert!(!dir.join("checkpoints").exists());
        // Unfinished with no kept result of the new settings: left for the fine-tuning.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        prepare(&dir, &json!({ "epochs": 5 })).unwrap();
        assert!(dir.join("checkpoints").exists());
    }
}
