//! What a run's checkpoints were trained with. `settings.json` in the run directory holds
//! the recipe's pretraining settings (everything but its name, device, downstream heads,
//! step count and checkpoint/log cadence); a resumed run whose recipe changed one of them
//! would go on training something else than its checkpoints were, so it is refused unless
//! the user allows that key by name.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::recipe::Recipe;
use crate::train::checkpoint;

pub const SETTINGS_FILE: &str = "settings.json";

/// Keys that may change between invocations of a run without changing what its
/// checkpoints continue: more steps (`pretext run RUN_DIR --set train.steps=N`), where it
/// runs, how often it checkpoints and logs, the heads (their results are keyed by their
/// own settings) and the class names (pretraining never sees them).
const FREE: [&str; 8] = [
    "name",
    "device",
    "downstream",
    "data.classes",
    "train.steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
];

/// The pretraining settings of `r`: its recipe as JSON without the [`FREE`] keys.
pub fn pretraining(r: &Recipe) -> Result<Value> {
    let mut v = serde_json::to_value(r).map_err(|e| Error::Usage(e.to_string()))?;
    for key in FREE {
        let mut at = &mut v;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some(obj) = at.as_object_mut() else { break };
            if parts.peek().is_none() {
                obj.remove(part);
                break;
            }
            match obj.get_mut(part) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    Ok(v)
}

/// Every leaf of `v` as (`dotted.key[i]`, value).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(x, &key, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// The keys whose values differ between `old` and `new`, with both values (`null`: absent).
pub fn changes(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    leaves(old, "", &mut a);
    leaves(new, "", &mut b);
    let a: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).cloned().unwrap_or(Value::Null),
                b.get(k).cloned().unwrap_or(Value::Null),
            );
            (x != y).then(|| (k.clone(), x, y))
        })
        .collect()
}

/// Whether `allowed` (keys or their parents: `objective` allows `objective.mask_ratio`)
/// covers `key`.
fn is_allowed(key: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        key == a
            || key
                .strip_prefix(a.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// Before resuming `run_dir` with the recipe `r`: when the run has checkpoints, checks
/// that `r`'s pretraining settings are those they were written with, except for the keys in
/// `allowed` (said on stderr). A run directory without `settings.json` (from an older
/// version) is not checked.
pub fn verify(run_dir: &Path, r: &Recipe, allowed: &[String]) -> Result<()> {
    let path = run_dir.join(SETTINGS_FILE);
    if !path.is_file() || checkpoint::list(&run_dir.join("checkpoints"))?.is_empty() {
        return Ok(());
    }
    let text = crate::input::read_to_string(&path)?;
    let before: Value =
        serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
    let changed = changes(&before, &pretraining(r)?);
    let refused: Vec<_> = changed
        .iter()
        .filter(|(k, _, _)| !is_allowed(k, allowed))
        .collect();
    if !refused.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|(k, a, b)| format!("{k}: {a} -> {b}"))
            .collect();
        let keys: Vec<String> = refused
            .iter()
            .map(|(k, _, _)| format!("--allow-changed {k}"))
            .collect();
        return Err(Error::Usage(format!(
            "the recipe of {} changes what its checkpoints were trained with ({}): resuming \
             would go on training something else. Start a new run from the recipe, or resume \
             anyway with {}",
            run_dir.display(),
            list.join(", "),
            keys.join(" ")
        )));
    }
    for (k, a, b) in &changed {
        eprintln!("warning: resuming with {k} changed ({a} -> {b}), as allowed");
    }
    Ok(())
}

/// Records `r`'s pretraining settings in `run_dir` as those its checkpoints are written with.
pub fn record(run_dir: &Path, r: &Recipe) -> Result<()> {
    let path = run_dir.join(SETTINGS_FILE);
    let json = serde_json::to_string_pretty(&pretraining(r)?)
        .map_err(|e| Error::data(&path, e.to_string()))?;
    crate::tensor_io::write_atomic(&path, json.as_bytes())
}

/// Before pretraining from step 0 in `run_dir`: refuses to start over a metrics log that
/// records steps (its checkpoints were deleted, or the run stopped before its first one)
/// unless `restart`.
pub fn check_fresh_start(run_dir: &Path, restart: bool) -> Result<()> {
    let metrics = &run_dir.join("metrics.jsonl");
    if restart || !metrics.is_file() {
        return Ok(());
    }
    let text = crate::input::read_to_string(metrics)?;
    let last = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("step").and_then(Value::as_u64))
        .max();
    match last {
        Some(step) if step > 0 => Err(Error::Usage(format!(
            "{} logs steps up to {step}, but {} holds no checkpoint to resume from (they were \
             removed, or the run stopped before its first one): `pretext run {} --restart` \
             starts it over from step 0 and rewrites the log",
            metrics.display(),
            run_dir.join("checkpoints").display(),
            run_dir.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_leaf_and_allowed_parents_cover_children() {
        let a = json!({"objective": {"mask_ratio": 0.75, "decoder": {"dim": 16}}, "seed": 1});
        let b =
            json!({"objective": {"mask_ratio": 0.9, "decoder": {"dim": 16}}, "seed": 1, "x": [1]});
        let c = changes(&a, &b);
        let keys: Vec<&str> = c.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["objective.mask_ratio", "x[0]"]);
        assert!(is_allowed("objective.mask_ratio", &["objective".into()]));
        assert!(is_allowed("x[0]", &["x".into()]));
        assert!(!is_allowed("objective_x", &["objective".into()]));
        assert!(!is_allowed("seed", &["objective.mask_ratio".into()]));
    }
}
