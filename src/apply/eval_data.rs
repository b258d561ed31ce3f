//! The labelled examples `eval` scores: a folder, JSONL file or CSV manifest named on the
//! command line, or a recipe's data source — the labelled test (or training) split of a
//! recipe file, of a run's `recipe.toml`, or of the run a classifier was fine-tuned in when
//! `--data` is left out. IDX images are scored in memory; every other source is read as
//! `predict` reads files.

use std::path::{Path, PathBuf};

use super::predict::classifier::Predictor;
use super::EmbedInputs;
use crate::error::{Error, Result};
use crate::modality::audio::dataset::{read_manifest, scan_folder};
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::folder;
use crate::modality::text::corpus::{read_jsonl, JsonlFields};
use crate::recipe::DataSource;
use crate::run;

/// Which split of a recipe `eval` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    Test,
    Train,
}

/// Labelled examples, ready for the classifier.
pub enum Examples {
    /// Files or sentences, as `predict` takes them.
    Inputs(EmbedInputs),
    /// Images already in memory (IDX).
    Images(ImageDataset),
}

/// What `eval` scores: examples, their true class names, and where they came from.
pub struct Labelled {
    pub examples: Examples,
    pub truth: Vec<String>,
    /// The file or folder named in the report.
    pub origin: PathBuf,
}

/// The data `eval` was asked for: `data` when given (a folder, JSONL, manifest, recipe file
/// or run directory), else the run `model` belongs to; `classes` are the classifier's, for
/// IDX labels, which are numbers.
pub fn resolve(
    p: &Predictor,
    model: &str,
    data: Option<&Path>,
    split: EvalSplit,
    classes: &[String],
) -> Result<Labelled> {
    let recipe = match data {
        Some(d) if d.is_file() && d.extension().is_some_and(|e| e == "toml") => d.to_path_buf(),
        Some(d) if run::dir::is_run_dir(d) => d.join(run::dir::RECIPE_FILE),
        Some(d) => return from_path(p, d),
        None => run_recipe(Path::new(model)).ok_or_else(|| {
            Error::Usage(format!(
                "eval: {model} is not in a run, so give --data (a folder, JSONL file, CSV \
                 manifest, recipe file or run directory)"
            ))
        })?,
    };
    from_recipe(p, &recipe, split, classes)
}

/// The `recipe.toml` of the run `model` is (or was fine-tuned in).
fn run_recipe(model: &Path) -> Option<PathBuf> {
    let dir = if model.is_file() {
        model.parent()?
    } else {
        model
    };
    [Some(dir), dir.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
        .find(|d| run::dir::is_run_dir(d))
        .map(|d| d.join(run::dir::RECIPE_FILE))
}

/// The labelled `split` of the recipe `file`: `data.labelled` when it has one, else
/// `data.test` / `data.train`.
fn from_recipe(
    p: &Predictor,
    file: &Path,
    split: EvalSplit,
    classes: &[String],
) -> Result<Labelled> {
    let r = crate::recipe::load(file, &[])?.recipe;
    let (src, key) = match (&r.data.labelled, split) {
        (Some(l), EvalSplit::Test) => (Some(&l.test), "data.labelled.test"),
        (Some(l), EvalSplit::Train) => (Some(&l.train), "data.labelled.train"),
        (None, EvalSplit::Test) => (r.data.test.as_ref(), "data.test"),
        (None, EvalSplit::Train) => (Some(&r.data.train), "data.train"),
    };
    let src = src.ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: key.into(),
        message: "is not set: this recipe has no such split to evaluate on".into(),
    })?;
    let mut l = match src {
        DataSource::Idx {
            images,
            labels: Some(labels),
            ..
        } => {
            let data = ImageDataset::from_idx(images, Some(labels))?;
            let names = r.data.classes.as_deref().unwrap_or(classes);
            let truth = data
                .labels
                .iter()
                .flatten()
                .map(|&l| {
                    names.get(l as usize).cloned().ok_or_else(|| {
                        Error::data(
                            labels,
                            format!(
                                "label {l} has no class name (the classifier has {} classes)",
                                names.len()
                            ),
                        )
                    })
                })
                .collect::<Result<_>>()?;
            Labelled {
                examples: Examples::Images(data),
                truth,
                origin: images.clone(),
            }
        }
        DataSource::Idx { images, .. } => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: key.into(),
                message: format!(
                    "{} has no `labels` file to evaluate against",
                    images.display()
                ),
            })
        }
        DataSource::Folder { root, .. } => from_path(p, root)?,
        DataSource::Jsonl {
            path,
            text_field,
            label_field,
            ..
        } => {
            let fields = JsonlFields {
                text: text_field.clone().unwrap_or_else(|| "text".into()),
                label: label_field.clone().unwrap_or_else(|| "label".into()),
            };
            jsonl(path, &fields)?
        }
        DataSource::Manifest {
            path, split: keep, ..
        } => {
            let items = read_manifest(path)?
                .into_iter()
                .filter(|i| keep.is_none() || i.split == *keep)
                .map(|i| (i.path, i.label))
                .collect();
            audio(path, items)?
        }
        DataSource::Text { path, .. } => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: key.into(),
                message: format!(
                    "{} is plain text, which has no labels; point eval at a labelled JSONL file",
                    path.display()
                ),
            })
        }
    };
    if let Some(limit) = src.limit() {
        l.truncate(limit);
    }
    Ok(l)
}

impl Labelled {
    /// Keeps the first `n` examples, as a source's `limit` does.
    fn truncate(&mut self, n: usize) {
        self.truth.truncate(n);
        match &mut self.examples {
            Examples::Inputs(EmbedInputs::Images(v) | EmbedInputs::Audio(v)) => v.truncate(n),
            Examples::Inputs(EmbedInputs::Texts(v)) => v.truncate(n),
            Examples::Images(d) => {
                let keep: Vec<usize> = (0..d.len.min(n)).collect();
                *d = d.subset(&keep);
            }
        }
    }
}

/// A folder, JSONL file or CSV manifest, read as the classifier's modality reads it.
fn from_path(p: &Predictor, data: &Path) -> Result<Labelled> {
    match p {
        Predictor::Image { .. } => {
            let index = folder::scan(data)?;
            let labels = index.labels.ok_or_else(|| {
                Error::data(
                    data,
                    "has no class directories (root/<class>/*.png): no labels",
                )
            })?;
            let truth = labels
                .iter()
                .map(|&l| index.classes[l as usize].clone())
                .collect();
            Ok(Labelled {
                examples: Examples::Inputs(EmbedInputs::Images(index.files)),
                truth,
                origin: data.to_path_buf(),
            })
        }
        Predictor::Text { .. } | Predictor::HfText { .. } => jsonl(data, &JsonlFields::default()),
        Predictor::Spectrogram { .. } | Predictor::Waveform { .. } => {
            let items = if data.is_dir() {
                scan_folder(data)?
            } else {
                read_manifest(data)?
            };
            audio(data, items.into_iter().map(|i| (i.path, i.label)).collect())
        }
    }
}

fn jsonl(path: &Path, fields: &JsonlFields) -> Result<Labelled> {
    let docs = read_jsonl(path, fields)?;
    let mut texts = Vec::with_capacity(docs.len());
    let mut truth = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let label = d.label.ok_or_else(|| {
            Error::data(
                path,
                format!("document {} has no `{}`", i + 1, fields.label),
            )
        })?;
        texts.push(d.text);
        truth.push(label);
    }
    Ok(Labelled {
        examples: Examples::Inputs(EmbedInputs::Texts(texts)),
        truth,
        origin: path.to_path_buf(),
    })
}

fn audio(origin: &Path, items: Vec<(PathBuf, Option<String>)>) -> Result<Labelled> {
    let mut files = Vec::with_capacity(items.len());
    let mut truth = Vec::with_capacity(items.len());
    for (path, label) in items {
        let label =
            label.ok_or_else(|| Error::data(origin, format!("{} has no label", path.display())))?;
        files.push(path);
        truth.push(label);
    }
    Ok(Labelled {
        examples: Examples::Inputs(EmbedInputs::Audio(files)),
        truth,
        origin: origin.to_path_buf(),
    })
}
