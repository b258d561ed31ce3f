//! From TOML text to a typed [`Recipe`]: `--set` / `--unset` overrides, model presets,
//! and serde errors turned into errors that name the file, the key and, for a misspelled
//! key, the closest valid one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::types::{Modality, ObjectiveKind};
use super::{Override, Recipe, PRESETS};
use crate::error::{Error, KeyHelp, Result};

pub(super) fn apply_override(table: &mut toml::Table, o: &Override, file: &Path) -> Result<()> {
    let key = match o {
        Override::Set(k, _) | Override::Unset(k) => k,
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Usage(format!("override key `{key}` is malformed")));
    }
    let (last, parents) = parts.split_last().expect("split on a non-empty key");
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        let not_table = || Error::InvalidValue {
            file: file.to_path_buf(),
            key: parts[..=i].join("."),
            message: format!("is not a table, so `{key}` cannot be overridden"),
        };
        // `name[i]` steps into the i-th table of an array of tables (`downstream[1].lr`).
        let (name, index) = split_index(p).ok_or_else(|| {
            Error::Usage(format!("override key `{key}`: `{p}` has a malformed index"))
        })?;
        let entry = cur
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let entry = match index {
            None => entry,
            Some(n) => match entry {
                toml::Value::Array(items) => {
                    let len = items.len();
                    items.get_mut(n).ok_or_else(|| Error::InvalidValue {
                        file: file.to_path_buf(),
                        key: parts[..=i].join("."),
                        message: format!(
                            "`{name}` has {len} entries, so index {n} is out of range"
                        ),
                    })?
                }
                _ => return Err(not_table()),
            },
        };
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(not_table()),
        };
    }
    match o {
        Override::Set(_, v) => {
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            cur.insert(last.to_string(), value);
        }
        Override::Unset(_) => {
            cur.remove(*last);
        }
    }
    Ok(())
}

/// `name[3]` → (`name`, Some(3)); `name` → (`name`, None); `None` if the index is malformed.
fn split_index(part: &str) -> Option<(&str, Option<usize>)> {
    match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
        Some((name, i)) => Some((name, Some(i.parse().ok()?))),
        None if part.contains('[') || part.contains(']') => None,
        None => Some((part, None)),
    }
}

/// Looks a preset up by name (built in) or as a `.toml` path relative to the recipe.
fn preset_table(name: &str, file: &Path) -> Result<toml::Table> {
    let (text, origin) = if name.ends_with(".toml") {
        let path = file.parent().unwrap_or(Path::new(".")).join(name);
        // Named by the recipe and key that point at it, beside the file's own error.
        let text = crate::input::read_to_string(&path).map_err(|e| Error::InvalidValue {
            file: file.to_path_buf(),
            key: "model.preset".into(),
            message: format!("cannot read the preset file: {e}"),
        })?;
        (text, path)
    } else {
        let found = PRESETS.iter().find(|(n, _)| *n == name);
        match found {
            Some((_, text)) => (
                text.to_string(),
                PathBuf::from(format!("models/{name}.toml")),
            ),
            None => {
                let names: Vec<String> = PRESETS.iter().map(|(n, _)| n.to_string()).collect();
                return Err(Error::InvalidValue {
                    file: file.to_path_buf(),
                    key: "model.preset".into(),
                    message: format!(
                        "no preset named `{name}`{}",
                        match closest(name, &names) {
                            Some(s) => format!("; did you mean `{s}`?"),
                            None => format!(" (presets: {})", names.join(", ")),
                        }
                    ),
                });
            }
        }
    };
    toml::from_str(&text).map_err(|e| Error::Toml {
        path: origin,
        message: e.to_string(),
    })
}

/// Fills keys missing from `[model]` with the preset's; keys set in the recipe win.
pub(super) fn resolve_preset(table: &mut toml::Table, file: &Path) -> Result<()> {
    let Some(toml::Value::Table(model)) = table.get_mut("model") else {
        return Ok(());
    };
    let name = match model.get("preset") {
        None => return Ok(()),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "model.preset".into(),
                message: format!("expected a preset name, found {}", other.type_str()),
            })
        }
    };
    for (k, v) in preset_table(&name, file)? {
        model.entry(k).or_insert(v);
    }
    Ok(())
}

/// Recipes written before `[objective]` was tagged by `kind` (run directories' resolved
/// recipes among them) carry every kind's keys at their defaults: those keys say nothing
/// and are dropped. A waveform `model.source` recipe's `[objective]` is refused with what
/// to do, before serde would ask for an MAE decoder.
pub(super) fn migrate(table: &mut toml::Table, file: &Path) -> Result<()> {
    let modality = table
        .get("data")
        .and_then(|d| d.get("modality"))
        .and_then(toml::Value::as_str)
        .map(str::to_string);
    let waveform = modality.as_deref() == Some("audio")
        && table.get("model").and_then(|m| m.get("source")).is_some();
    if let Some(toml::Value::Array(heads)) = table.get_mut("downstream") {
        for h in heads.iter_mut().filter_map(toml::Value::as_table_mut) {
            let head = h
                .get("head")
                .and_then(toml::Value::as_str)
                .unwrap_or("")
                .to_string();
            for (k, v) in super::head::foreign_defaults(&head) {
                if h.get(k) == Some(&v) {
                    h.remove(k);
                }
            }
        }
    }
    let Some(toml::Value::Table(o)) = table.get_mut("objective") else {
        return Ok(());
    };
    if waveform {
        return Err(Error::InvalidValue {
            file: file.to_path_buf(),
            key: "objective".into(),
            message: "a recipe starting from a waveform model.source pretrains nothing: remove [objective] (and data.audio's patch_freq / patch_time)".into(),
        });
    }
    // The kind decides which keys are valid: a kind the modality does not pretrain with is
    // reported as such, before its keys are.
    let kind = o
        .get("kind")
        .and_then(|k| ObjectiveKind::deserialize(k.clone()).ok());
    let modality = modality.and_then(|m| Modality::deserialize(toml::Value::String(m)).ok());
    if let (Some(m), Some(k)) = (modality, kind) {
        m.check_objective(k, file)?;
    }
    let is = |o: &toml::Table, k: &str, v: toml::Value| o.get(k) == Some(&v);
    match o.get("kind").and_then(toml::Value::as_str) {
        Some("mlm") => {
            if is(o, "masking", toml::Value::String("random".into())) {
                o.remove("masking");
            }
            if is(o, "norm_pix_loss", toml::Value::Boolean(true)) {
                o.remove("norm_pix_loss");
            }
        }
        Some("mae" | "simmim") if is(o, "whole_word", toml::Value::Boolean(false)) => {
            o.remove("whole_word");
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn deserialize(table: toml::Table, file: &Path) -> Result<Recipe> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = match e.path().to_string() {
            p if p.is_empty() || p == "." => String::new(),
            p => p,
        };
        let message = e.inner().to_string();
        // Inside a tagged variant (a data source, an objective) serde reports the table,
        // not the key: the key is appended here.
        let within = |field: &str| match path.rsplit('.').next() {
            Some(last) if last == field => path.clone(),
            _ if path.is_empty() => field.to_string(),
            _ => format!("{path}.{field}"),
        };
        if let Some((field, valid)) = unknown_field(&message) {
            let key = within(&field);
            return Error::UnknownKey {
                file: file.to_path_buf(),
                help: Box::new(KeyHelp {
                    within: tag_at(&value, &path),
                    suggestion: closest(&field, &valid).map(|s| replace_last(&key, &s)),
                    valid,
                }),
                key,
            };
        }
        if let Some(field) = missing_field(&message) {
            return Error::InvalidValue {
                file: file.to_path_buf(),
                key: within(&field),
                message: "required here, but missing".into(),
            };
        }
        Error::InvalidValue {
            file: file.to_path_buf(),
            key: if path.is_empty() {
                "(top level)".into()
            } else {
                path
            },
            message,
        }
    })
}

/// The tag (`format = "folder"`, `kind = "mae"`) of the table at `path` (`data.train`,
/// `downstream[1]`), when it has one.
fn tag_at(value: &toml::Value, path: &str) -> Option<String> {
    let mut cur = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = split_index(part)?;
        cur = cur.get(name)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    ["format", "kind", "head"].iter().find_map(|tag| {
        cur.get(tag)
            .and_then(toml::Value::as_str)
            .map(|v| format!("{tag} = \"{v}\""))
    })
}

/// Parses serde's ``missing field `x` `` into x.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let rest = rest.lines().next().unwrap_or(rest);
    Some(rest.split_once('`')?.0.to_string())
}

fn replace_last(key: &str, last: &str) -> String {
    match key.rsplit_once('.') {
        Some((head, _)) => format!("{head}.{last}"),
        None => last.to_string(),
    }
}

/// Parses serde's `unknown field `x`, expected one of `a`, `b`` into (x, [a, b]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    // The TOML deserializer adds where it was on a line of its own (`\nin `data.train``).
    let rest = rest.lines().next().unwrap_or(rest);
    let (field, rest) = rest.split_once('`')?;
    let valid = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), valid))
}

/// The valid name most similar to `given`, if any is similar enough.
pub fn closest(given: &str, valid: &[String]) -> Option<String> {
    valid
        .iter()
        .map(|v| (strsim::jaro_winkler(given, v), v))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v.clone())
}
