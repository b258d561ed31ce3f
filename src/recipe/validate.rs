//! Value ranges and cross-field consistency of a recipe, each error naming the file and the
//! key; the data section of each modality is checked by its own `src/modality/<m>/recipe.rs`.

use std::path::Path;

use super::augment::{validate_augment, validate_mixup};
use super::types::*;
use crate::error::{Error, Result};

pub(crate) fn check(
    ok: bool,
    file: &Path,
    key: &str,
    message: impl FnOnce() -> String,
) -> Result<()> {
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

/// A masked objective over a grid of `patches` hides at least one patch and shows the
/// encoder at least one (MAE keeps `floor(patches * (1 - mask_ratio))`).
pub(crate) fn check_masked_grid(r: &Recipe, patches: usize, file: &Path) -> Result<()> {
    let Some(o) = &r.objective else {
        return Ok(());
    };
    let ratio = o.mask_ratio();
    if !(ratio > 0.0 && ratio < 1.0) {
        return Ok(()); // the range's own error comes later
    }
    let kept = ((patches as f64) * (1.0 - ratio)) as usize;
    check(
        patches >= 2 && kept >= 1 && kept < patches,
        file,
        "objective.mask_ratio",
        || {
            format!(
                "masking {ratio} of a grid of {patches} patches leaves {kept} visible: there must be at least one patch hidden and one visible (lower mask_ratio, or use smaller patches)"
            )
        },
    )
}

/// Value ranges and cross-field consistency.
pub fn validate(r: &Recipe, file: &Path) -> Result<()> {
    check(
        !r.name.is_empty()
            && !r.name.starts_with('.')
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        file,
        "name",
        || {
            format!(
                "`{}` names the run's directory: it must be non-empty, use only letters, \
                 digits, - _ . and not start with `.`",
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
            .check()
            .map_err(|(field, m)| Error::InvalidValue {
                file: file.to_path_buf(),
                key: format!("model.{field}"),
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

    if let Some(o) = &r.objective {
        r.data.modality.check_objective(o.kind(), file)?;
    }
    (r.data.modality.recipe().validate)(r, file)?;

    let waveform = r.data.modality == Modality::Audio && r.model.source.is_some();
    if let Some(a) = &r.data.augment {
        validate_augment(a, "data.augment", r.data.modality, waveform, file)?;
    }

    // An audio recipe starting from a waveform model pretrains nothing and takes no
    // objective (src/modality/audio/recipe.rs); every other recipe needs one.
    let o = match &r.objective {
        Some(o) => o,
        None if waveform => return validate_rest(r, file),
        None => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "objective".into(),
                message: "required (e.g. [objective] kind = \"mae\", decoder = { dim = 64, depth = 2, heads = 4 })".into(),
            })
        }
    };
    check(
        o.mask_ratio() > 0.0 && o.mask_ratio() < 1.0,
        file,
        "objective.mask_ratio",
        || format!("must be in (0, 1), found {}", o.mask_ratio()),
    )?;
    if let super::ObjectiveSection::Data2vec(d) = o {
        validate_data2vec(r, d, file)?;
    }
    if let Some(d) = o.decoder() {
        check(
            d.mlp_dim != Some(0),
            file,
            "objective.decoder.mlp_dim",
            || "must be positive (absent = 4 x dim)".into(),
        )?;
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

    validate_rest(r, file)
}

/// data2vec's own keys: the teacher's layers and decay, and masking keys of the modality.
fn validate_data2vec(r: &Recipe, d: &super::objective::Data2vecSection, file: &Path) -> Result<()> {
    let depth = r.model.depth;
    check(
        d.top_k
            .is_none_or(|k| k >= 1 && (r.model.source.is_some() || k <= depth)),
        file,
        "objective.top_k",
        || {
            format!(
                "{} must be between 1 and the model's depth ({depth})",
                d.top_k.unwrap_or(0)
            )
        },
    )?;
    for (key, v) in [
        ("objective.ema.start", d.ema.start),
        ("objective.ema.end", d.ema.end),
    ] {
        check((0.0..=1.0).contains(&v), file, key, || {
            format!("a decay must be in [0, 1], found {v}")
        })?;
    }
    let text = r.data.modality == Modality::Text;
    check(text || !d.whole_word, file, "objective.whole_word", || {
        "only text masks words; patch grids take `masking`".into()
    })?;
    check(text || d.span.is_none(), file, "objective.span", || {
        "only text masks spans of words; patch grids take `masking`".into()
    })?;
    check(
        !text || d.masking == crate::objective::masking::Masking::Random,
        file,
        "objective.masking",
        || "text masks tokens (`whole_word`, `span`), not patches: remove `masking`".into(),
    )
}

/// `[train]` and the downstream heads.
fn validate_rest(r: &Recipe, file: &Path) -> Result<()> {
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
        check(
            (1..=MAX_DRAWS).contains(&d.draws),
            file,
            &key("draws"),
            || {
                format!(
                    "must be 1 to {MAX_DRAWS} (label draws per fraction), found {}",
                    d.draws
                )
            },
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
        check(
            (0.0..1.0).contains(&d.drop_path),
            file,
            &key("drop_path"),
            || format!("must be in [0, 1), found {}", d.drop_path),
        )?;
        check(d.k > 0, file, &key("k"), || "must be at least 1".into())?;
        check(
            d.checkpoint_every() > 0,
            file,
            &key("checkpoint_every"),
            || "must be at least 1".into(),
        )?;
        check(d.temperature > 0.0, file, &key("temperature"), || {
            "must be positive".into()
        })?;
        let waveform = r.data.modality == Modality::Audio && r.model.source.is_some();
        if let Some(a) = &d.augment {
            validate_augment(a, &key("augment"), r.data.modality, waveform, file)?;
        }
        if let Some(m) = &d.mixup {
            validate_mixup(m, &key("mixup"), r.data.modality, waveform, file)?;
        }
        if d.pooler.is_some() {
            check(
                r.data.modality == Modality::Text,
                file,
                &key("pooler"),
                || {
                    "`tanh-cls` is the text classifiers' pooler (BERT's); image and audio heads take none".into()
                },
            )?;
            check(d.pooling == Pooling::Cls, file, &key("pooler"), || {
                "`tanh-cls` reads the [CLS] token: set pooling = \"cls\" (the default) or drop the pooler".into()
            })?;
        }
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
        if let Some(p) = d.projector {
            check(
                r.data.modality == Modality::Audio && r.model.source.is_some(),
                file,
                &key("projector"),
                || {
                    "a projector is the head of wav2vec2 / HuBERT / data2vec-audio sequence \
                     classifiers: it needs an audio recipe whose model.source is a waveform \
                     model; remove it"
                        .into()
                },
            )?;
            check(p > 0, file, &key("projector"), || {
                "must be a positive width (transformers' classifier_proj_size, 256 by default)"
                    .into()
            })?;
        }
        match &r.data.labelled {
            Some(l) => {
                check(
                    l.train.may_have_labels(),
                    file,
                    "data.labelled.train",
                    || LABELLED_SOURCE.into(),
                )?;
                check(l.test.may_have_labels(), file, "data.labelled.test", || {
                    LABELLED_SOURCE.into()
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
    if let Some(classes) = &r.data.classes {
        validate_classes(r, classes, file)?;
    }
    super::memory::check(r, file)
}

/// Label draws per fraction a head may ask for: each trains the head again.
const MAX_DRAWS: usize = 100;

const LABELLED_SOURCE: &str = "must be a labelled source (IDX with `labels`, a folder of class \
     directories, JSONL with a label field, or a manifest)";

/// `data.classes`: names for IDX labels, each given once.
fn validate_classes(r: &Recipe, classes: &[String], file: &Path) -> Result<()> {
    let idx = super::source::sources(r)
        .iter()
        .any(|(_, s)| matches!(s, super::DataSource::Idx { .. }));
    check(idx, file, "data.classes", || {
        "names the classes of IDX label files; folders, JSONL and manifests name their own".into()
    })?;
    check(!classes.is_empty(), file, "data.classes", || {
        "is empty: give one name per label, in label order, or leave it out".into()
    })?;
    for (i, c) in classes.iter().enumerate() {
        check(
            !c.trim().is_empty(),
            file,
            &format!("data.classes[{i}]"),
            || "is blank".into(),
        )?;
        if let Some(j) = classes[..i].iter().position(|d| d == c) {
            check(false, file, &format!("data.classes[{i}]"), || {
                format!("`{c}` is also data.classes[{j}]")
            })?;
        }
    }
    Ok(())
}
