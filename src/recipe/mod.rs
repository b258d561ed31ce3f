//! Recipes: TOML files parsed into typed structs, with model presets, `--set`/`--unset`
//! overrides, and validation that names the file and key of anything wrong — all before
//! a device or a data set is touched.

pub mod types;

use std::path::{Path, PathBuf};

pub use types::*;

use crate::error::{Error, Result};

/// Model presets shipped with the binary (`models/*.toml`), by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("vit-tiny", include_str!("../../models/vit-tiny.toml")),
    ("vit-mini", include_str!("../../models/vit-mini.toml")),
    ("bert-mini", include_str!("../../models/bert-mini.toml")),
];

/// A recipe as loaded: the typed form plus where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub recipe: Recipe,
    pub file: PathBuf,
}

/// One command-line override.
#[derive(Debug, Clone, PartialEq)]
pub enum Override {
    /// `--set a.b=value` (value parsed as TOML, else taken as a string).
    Set(String, String),
    /// `--unset a.b`.
    Unset(String),
}

impl Override {
    /// Parses the argument of `--set` (`KEY=VALUE`).
    pub fn parse_set(arg: &str) -> Result<Self> {
        match arg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Override::Set(k.trim().into(), v.into())),
            _ => Err(Error::Usage(format!(
                "--set expects KEY=VALUE (e.g. --set train.steps=100), found `{arg}`"
            ))),
        }
    }
}

/// Reads, overrides, resolves presets, type-checks and validates a recipe file. Data paths
/// are not checked here (see [`check_paths`]).
pub fn load(file: &Path, overrides: &[Override]) -> Result<Loaded> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    load_str(&text, file, overrides)
}

/// [`load`] on text already read; `file` names it in errors.
pub fn load_str(text: &str, file: &Path, overrides: &[Override]) -> Result<Loaded> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::Toml {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    for o in overrides {
        apply_override(&mut table, o, file)?;
    }
    resolve_preset(&mut table, file)?;
    let recipe = deserialize(table, file)?;
    validate(&recipe, file)?;
    Ok(Loaded {
        recipe,
        file: file.to_path_buf(),
    })
}

fn apply_override(table: &mut toml::Table, o: &Override, file: &Path) -> Result<()> {
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
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
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
fn resolve_preset(table: &mut toml::Table, file: &Path) -> Result<()> {
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

fn deserialize(table: toml::Table, file: &Path) -> Result<Recipe> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        match unknown_field(&message) {
            Some((field, valid)) => {
                // The path ends with the unknown key itself.
                let key = if path.is_empty() || path == "." {
                    field.clone()
                } else {
                    path
                };
                Error::UnknownKey {
                    file: file.to_path_buf(),
                    suggestion: closest(&field, &valid).map(|s| replace_last(&key, &s)),
                    key,
                    valid,
                }
            }
            None => Error::InvalidValue {
                file: file.to_path_buf(),
                key: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                message,
            },
        }
    })
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

fn check(ok: bool, file: &Path, key: &str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            file: file.to_path_buf(),
            key: key.into(),
            message: message(),
        })
    }
}

/// Value ranges and cross-field consistency.
pub fn validate(r: &Recipe, file: &Path) -> Result<()> {
    check(
        !r.name.is_empty()
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        file,
        "name",
        || {
            format!(
                "`{}` must be non-empty and use only letters, digits, - _ .",
                r.name
            )
        },
    )?;
    crate::device::parse(&r.device).map_err(|m| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "device".into(),
        message: m,
    })?;
    match &r.model.source {
        None => r
            .model
            .encoder_config()
            .validate()
            .map_err(|m| Error::InvalidValue {
                file: file.to_path_buf(),
                key: "model".into(),
                message: m,
            })?,
        Some(src) => {
            check(
                matches!(r.data.modality, Modality::Text | Modality::Audio),
                file,
                "model.source",
                || {
                    "starting from a model source is supported for text (BERT, RoBERTa) and audio (wav2vec2, HuBERT, data2vec-audio) only"
                        .into()
                },
            )?;
            check(
                r.model.dim == 0 && r.model.depth == 0 && r.model.heads == 0,
                file,
                "model.source",
                || {
                    format!(
                        "the shape of `{src}` comes from its config.json: remove model.dim, model.depth and model.heads"
                    )
                },
            )?;
        }
    }

    validate_sources(r, file)?;
    match r.data.modality {
        Modality::Image => {
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
            check(
                r.objective.kind != ObjectiveKind::Mlm,
                file,
                "objective.kind",
                || "`mlm` is a text objective; images use `mae` or `simmim`".into(),
            )?;
            check(
                matches!(
                    r.objective.masking,
                    MaskingKind::Random | MaskingKind::Block
                ),
                file,
                "objective.masking",
                || {
                    "images use `random` or `block` masking (time / frequency masking is for audio)"
                        .into()
                },
            )?;
        }
        Modality::Text => validate_text(r, file)?,
        Modality::Audio => validate_audio(r, file)?,
    }

    if let Some(a) = &r.data.augment {
        validate_augment(a, file)?;
    }

    let o = &r.objective;
    check(
        o.mask_ratio() > 0.0 && o.mask_ratio() < 1.0,
        file,
        "objective.mask_ratio",
        || format!("must be in (0, 1), found {}", o.mask_ratio()),
    )?;
    // An audio recipe starting from a waveform model does no pretraining: its objective is
    // unused and may omit the decoder.
    let waveform_source = r.data.modality == Modality::Audio && r.model.source.is_some();
    match (o.kind, &o.decoder) {
        (ObjectiveKind::Mae, None) if !waveform_source => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "objective.decoder".into(),
                message: "required for kind = \"mae\" (e.g. decoder = { dim = 64, depth = 2, heads = 4 })".into(),
            })
        }
        (ObjectiveKind::Simmim, Some(_)) => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "objective.decoder".into(),
                message: "kind = \"simmim\" has no decoder (a linear head predicts the pixels); remove this key".into(),
            })
        }
        _ => {}
    }
    if let Some(d) = &o.decoder {
        check(
            d.dim > 0 && d.dim.is_multiple_of(4),
            file,
            "objective.decoder.dim",
            || format!("{} must be a positive multiple of 4", d.dim),
        )?;
        check(
            d.depth > 0 && d.heads > 0 && d.dim.is_multiple_of(d.heads),
            file,
            "objective.decoder.heads",
            || {
                format!(
                    "depth and heads must be positive and heads ({}) must divide dim ({})",
                    d.heads, d.dim
                )
            },
        )?;
    }

    let t = &r.train;
    check(
        t.steps > 0 || r.model.source.is_some(),
        file,
        "train.steps",
        || "must be positive (0 is allowed only with model.source: downstream only)".into(),
    )?;
    check(t.batch_size > 0, file, "train.batch_size", || {
        "must be positive".into()
    })?;
    check(t.grad_accum > 0, file, "train.grad_accum", || {
        "must be positive".into()
    })?;
    let opt = &t.optimizer;
    check(
        opt.lr.is_finite() && opt.lr > 0.0,
        file,
        "train.optimizer.lr",
        || format!("must be a positive number, found {}", opt.lr),
    )?;
    check(
        opt.weight_decay >= 0.0,
        file,
        "train.optimizer.weight_decay",
        || "must not be negative".into(),
    )?;
    check(
        opt.betas.iter().all(|b| (0.0..1.0).contains(b)),
        file,
        "train.optimizer.betas",
        || format!("each must be in [0, 1), found {:?}", opt.betas),
    )?;
    check(opt.eps > 0.0, file, "train.optimizer.eps", || {
        "must be positive".into()
    })?;
    check(
        t.schedule.warmup_steps <= t.steps,
        file,
        "train.schedule.warmup_steps",
        || {
            format!(
                "{} exceeds train.steps ({})",
                t.schedule.warmup_steps, t.steps
            )
        },
    )?;
    check(
        t.schedule.min_lr >= 0.0 && t.schedule.min_lr <= opt.lr,
        file,
        "train.schedule.min_lr",
        || format!("must be in [0, lr], found {}", t.schedule.min_lr),
    )?;
    if let Some(c) = t.clip_grad_norm {
        check(c > 0.0, file, "train.clip_grad_norm", || {
            "must be positive".into()
        })?;
    }
    check(
        t.checkpoint_every > 0,
        file,
        "train.checkpoint_every",
        || "must be positive".into(),
    )?;
    check(
        t.keep_checkpoints > 0,
        file,
        "train.keep_checkpoints",
        || "must be at least 1".into(),
    )?;
    check(t.log_every > 0, file, "train.log_every", || {
        "must be positive".into()
    })?;

    for (i, d) in r.downstream.iter().enumerate() {
        let key = |k: &str| format!("downstream[{i}].{k}");
        check(
            !d.label_fractions.is_empty()
                && d.label_fractions.iter().all(|f| *f > 0.0 && *f <= 1.0),
            file,
            &key("label_fractions"),
            || format!("each must be in (0, 1], found {:?}", d.label_fractions),
        )?;
        check(d.epochs() > 0, file, &key("epochs"), || {
            "must be positive".into()
        })?;
        check(d.lr() > 0.0, file, &key("lr"), || "must be positive".into())?;
        check(
            (0.0..1.0).contains(&d.warmup_fraction),
            file,
            &key("warmup_fraction"),
            || format!("must be in [0, 1), found {}", d.warmup_fraction),
        )?;
        check(
            d.layer_decay > 0.0 && d.layer_decay <= 1.0,
            file,
            &key("layer_decay"),
            || format!("must be in (0, 1], found {}", d.layer_decay),
        )?;
        check(
            (0.0..1.0).contains(&d.label_smoothing),
            file,
            &key("label_smoothing"),
            || format!("must be in [0, 1), found {}", d.label_smoothing),
        )?;
        check(d.k > 0, file, &key("k"), || "must be at least 1".into())?;
        check(d.temperature > 0.0, file, &key("temperature"), || {
            "must be positive".into()
        })?;
        check(
            !(d.head == HeadKind::FineTune && d.input == DownstreamInput::Pixels),
            file,
            &key("input"),
            || "a fine-tuned head needs an encoder: use `pretrained` or `scratch`".into(),
        )?;
        check(d.batch_size > 0, file, &key("batch_size"), || {
            "must be positive".into()
        })?;
        check(
            !(d.input == DownstreamInput::Pixels && r.data.modality != Modality::Image),
            file,
            &key("input"),
            || {
                "`pixels` is an image baseline; text and audio heads take `pretrained` or `scratch`"
                    .into()
            },
        )?;
        match &r.data.labelled {
            Some(l) => {
                check(
                    l.train.may_have_labels(),
                    file,
                    "data.labelled.train",
                    || "must be a labelled format (jsonl with a label field)".into(),
                )?;
                check(l.test.may_have_labels(), file, "data.labelled.test", || {
                    "must be a labelled format (jsonl with a label field)".into()
                })?;
            }
            None => {
                check(
                    r.data.train.may_have_labels(),
                    file,
                    "data.train.labels",
                    || "a downstream head needs labels for the training split".into(),
                )?;
                check(
                    r.data.test.as_ref().is_some_and(|t| t.may_have_labels()),
                    file,
                    "data.test.labels",
                    || "a downstream head needs a labelled test split".into(),
                )?;
            }
        }
    }
    Ok(())
}

/// Text recipes: a tokenizer from a file, from training, or from the model source.
fn validate_text(r: &Recipe, file: &Path) -> Result<()> {
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
            matches!(src.format, DataFormat::Text | DataFormat::Jsonl),
            file,
            &format!("{key}.format"),
            || "text recipes read format = \"text\" or \"jsonl\"".into(),
        )?;
    }
    check(
        r.objective.kind == ObjectiveKind::Mlm,
        file,
        "objective.kind",
        || "text pretraining uses kind = \"mlm\"".into(),
    )?;
    Ok(())
}

/// Audio recipes: spectrogram settings, patches that tile them, Audio-MAE.
/// An audio recipe starting from a waveform model (`model.source`): downstream only, on raw
/// 16 kHz waveforms of the clip length `frames` and the mel hop describe; the objective and
/// patch sizes are unused.
fn validate_waveform_source(r: &Recipe, a: &AudioSection, file: &Path) -> Result<()> {
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

fn validate_audio(r: &Recipe, file: &Path) -> Result<()> {
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
            matches!(src.format, DataFormat::Folder | DataFormat::Manifest),
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
        r.objective.kind == ObjectiveKind::Mae,
        file,
        "objective.kind",
        || "audio pretraining uses kind = \"mae\" (Audio-MAE)".into(),
    )?;
    check(
        r.objective.masking != MaskingKind::Block,
        file,
        "objective.masking",
        || "audio uses `random`, `time`, `frequency` or `time-frequency` masking".into(),
    )?;
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
    let axis_ok = match r.objective.masking {
        MaskingKind::Time => gt >= 2,
        MaskingKind::Frequency => gf >= 2,
        MaskingKind::TimeFrequency => gt >= 2 && gf >= 2,
        _ => gt * gf >= 2,
    };
    check(axis_ok, file, "objective.masking", || {
        format!("the patch grid ({gt} time x {gf} frequency) is too small to mask along that axis")
    })?;
    Ok(())
}

/// The data sources a recipe names, with their keys.
fn sources(r: &Recipe) -> Vec<(&'static str, &DataSource)> {
    let mut sources = vec![("data.train", &r.data.train)];
    if let Some(t) = &r.data.test {
        sources.push(("data.test", t));
    }
    if let Some(l) = &r.data.labelled {
        sources.push(("data.labelled.train", &l.train));
        sources.push(("data.labelled.test", &l.test));
    }
    sources
}

/// Keys of a source and whether each is present.
type KeysPresent<'a> = &'a [(&'a str, bool)];

/// Each source has the keys its format needs and none of another format's.
fn validate_sources(r: &Recipe, file: &Path) -> Result<()> {
    for (key, src) in sources(r) {
        let text_keys = [
            ("path", src.path.is_some()),
            ("text_field", src.text_field.is_some()),
            ("label_field", src.label_field.is_some()),
        ];
        let (needed, foreign): (KeysPresent, KeysPresent) = match src.format {
            DataFormat::Idx => (
                &[("images", src.images.is_some())],
                &[("root", src.root.is_some()), text_keys[0]],
            ),
            DataFormat::Folder => (
                &[("root", src.root.is_some())],
                &[
                    ("images", src.images.is_some()),
                    ("labels", src.labels.is_some()),
                    text_keys[0],
                ],
            ),
            DataFormat::Text => (
                &[("path", src.path.is_some())],
                &[
                    ("images", src.images.is_some()),
                    ("labels", src.labels.is_some()),
                    ("root", src.root.is_some()),
                    text_keys[1],
                    text_keys[2],
                ],
            ),
            DataFormat::Jsonl => (
                &[("path", src.path.is_some())],
                &[
                    ("images", src.images.is_some()),
                    ("labels", src.labels.is_some()),
                    ("root", src.root.is_some()),
                ],
            ),
            DataFormat::Manifest => (
                &[("path", src.path.is_some())],
                &[
                    ("images", src.images.is_some()),
                    ("labels", src.labels.is_some()),
                    ("root", src.root.is_some()),
                    text_keys[1],
                    text_keys[2],
                ],
            ),
        };
        let format = match src.format {
            DataFormat::Idx => "idx",
            DataFormat::Folder => "folder",
            DataFormat::Text => "text",
            DataFormat::Jsonl => "jsonl",
            DataFormat::Manifest => "manifest",
        };
        check(
            src.split.is_none() || src.format == DataFormat::Manifest,
            file,
            &format!("{key}.split"),
            || "only a manifest source selects rows by `split`".into(),
        )?;
        for (k, present) in needed {
            check(*present, file, &format!("{key}.{k}"), || {
                format!("required when format = \"{format}\"")
            })?;
        }
        for (k, present) in foreign {
            check(!*present, file, &format!("{key}.{k}"), || {
                match src.format {
                DataFormat::Idx => "is not an IDX key; an IDX source names `images` (and `labels`)".into(),
                DataFormat::Folder => "is not a folder key; a folder source names only `root` (labels are its class directories)".into(),
                DataFormat::Text => "is not a text key; a text source names only `path` (a file or a folder)".into(),
                DataFormat::Jsonl => "is not a jsonl key; a jsonl source names `path`, `text_field` and `label_field`".into(),
                DataFormat::Manifest => "is not a manifest key; a manifest source names `path` (a CSV file) and `split`".into(),
            }
            })?;
        }
        if src.format == DataFormat::Folder && r.data.modality == Modality::Image {
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

fn validate_augment(a: &AugmentSection, file: &Path) -> Result<()> {
    check(
        (0.0..=1.0).contains(&a.hflip),
        file,
        "data.augment.hflip",
        || format!("a probability in [0, 1], found {}", a.hflip),
    )?;
    if let Some(c) = &a.random_resized_crop {
        check(
            c.scale[0] > 0.0 && c.scale[0] <= c.scale[1] && c.scale[1] <= 1.0,
            file,
            "data.augment.random_resized_crop.scale",
            || format!("needs 0 < min <= max <= 1, found {:?}", c.scale),
        )?;
        check(
            c.ratio[0] > 0.0 && c.ratio[0] <= c.ratio[1] && c.ratio[1].is_finite(),
            file,
            "data.augment.random_resized_crop.ratio",
            || format!("needs 0 < min <= max, found {:?}", c.ratio),
        )?;
    }
    Ok(())
}

/// Every data file the recipe names exists (and a local `model.source`).
pub fn check_paths(r: &Recipe, file: &Path) -> Result<()> {
    if let Some(src) = r.model.source.as_deref().filter(|s| !s.starts_with("hf:")) {
        if !Path::new(src).exists() {
            return Err(Error::MissingFile {
                file: file.to_path_buf(),
                key: "model.source".into(),
                path: PathBuf::from(src),
            });
        }
    }
    if let Some(p) = r
        .data
        .text
        .as_ref()
        .and_then(|t| t.tokenizer.as_ref())
        .and_then(|t| t.file.as_ref())
    {
        if !p.exists() {
            return Err(Error::MissingFile {
                file: file.to_path_buf(),
                key: "data.text.tokenizer.file".into(),
                path: p.clone(),
            });
        }
    }
    for (key, src) in sources(r) {
        let mut paths = Vec::new();
        if let Some(p) = &src.images {
            paths.push(("images", p));
        }
        if let Some(p) = &src.root {
            paths.push(("root", p));
        }
        if let Some(l) = &src.labels {
            paths.push(("labels", l));
        }
        if let Some(p) = &src.path {
            paths.push(("path", p));
        }
        for (k, p) in paths {
            if !p.exists() {
                return Err(Error::MissingFile {
                    file: file.to_path_buf(),
                    key: format!("{key}.{k}"),
                    path: p.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The recipe as TOML, as it will run (presets and overrides applied, defaults filled in).
pub fn to_toml(r: &Recipe) -> String {
    toml::to_string_pretty(r).expect("a recipe always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[model]
preset = "vit-mini"
[data]
modality = "image"
train = { format = "idx", images = "a.gz" }
image = { size = 28, channels = 1, patch = 4 }
[objective]
kind = "mae"
decoder = { dim = 32, depth = 1, heads = 2 }
[train]
steps = 10
batch_size = 4
optimizer = { kind = "adamw", lr = 1e-3 }
"#;

    fn load(text: &str, o: &[Override]) -> Result<Loaded> {
        load_str(text, Path::new("r.toml"), o)
    }

    #[test]
    fn misspelled_key_names_file_key_and_suggestion() {
        let text = MINIMAL.replace("kind = \"mae\"", "kind = \"mae\"\nmask_rato = 0.5");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("r.toml"), "{err}");
        assert!(err.contains("objective.mask_rato"), "{err}");
        assert!(err.contains("did you mean `objective.mask_ratio`"), "{err}");
    }

    #[test]
    fn misspelled_top_level_and_inline_keys() {
        let err = load(
            &MINIMAL
                .replace("seed", "x")
                .replace("name = \"t\"", "name = \"t\"\nsede = 1"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown key `sede`") && err.contains("`seed`"),
            "{err}"
        );
        let err = load(
            &MINIMAL.replace("lr = 1e-3", "lr = 1e-3, weight_decy = 0.1"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("train.optimizer.weight_decy"), "{err}");
        assert!(err.contains("train.optimizer.weight_decay"), "{err}");
    }

    #[test]
    fn wrong_type_and_range_name_the_key() {
        let err = load(&MINIMAL.replace("steps = 10", "steps = \"ten\""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.steps"), "{err}");
        let err = load(
            MINIMAL,
            &[Override::parse_set("objective.mask_ratio=1.5").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("objective.mask_ratio") && err.contains("(0, 1)"),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let err = load("name = \"t\"\n[model\n", &[]).unwrap_err().to_string();
        assert!(err.contains("r.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn preset_fills_and_recipe_wins() {
        let r = load(MINIMAL, &[]).unwrap().recipe;
        let preset: toml::Table = toml::from_str(PRESETS[1].1).unwrap();
        assert_eq!(r.model.dim as i64, preset["dim"].as_integer().unwrap());
        let r = load(MINIMAL, &[Override::parse_set("model.depth=1").unwrap()])
            .unwrap()
            .recipe;
        assert_eq!(r.model.depth, 1);
        let err = load(&MINIMAL.replace("vit-mini", "vit-qiuck"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `vit-mini`"), "{err}");
    }

    #[test]
    fn set_and_unset() {
        let r = load(
            MINIMAL,
            &[
                Override::parse_set("train.schedule.kind=cosine").unwrap(),
                Override::parse_set("name=other").unwrap(),
                Override::Unset("train.optimizer.lr".into()),
                Override::parse_set("train.optimizer.lr=0.5").unwrap(),
            ],
        )
        .unwrap()
        .recipe;
        assert_eq!(r.train.schedule.kind, ScheduleKind::Cosine);
        assert_eq!(r.name, "other");
        assert_eq!(r.train.optimizer.lr, 0.5);
        let err = load(MINIMAL, &[Override::Unset("train.steps".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train") && err.contains("steps"), "{err}");
        assert!(Override::parse_set("novalue").is_err());
    }

    #[test]
    fn resolved_recipe_round_trips() {
        let r = load(MINIMAL, &[]).unwrap().recipe;
        let again = load(&to_toml(&r), &[]).unwrap().recipe;
        assert_eq!(r, again);
    }
}
