//! `pretext eval`: a classifier on a labelled data set, as `predict` runs it — accuracy,
//! precision, recall and F1 per class, and the confusion matrix (printed, in JSON with
//! `--out`, and as a picture with `--confusion F.png`).
//!
//! The data is what the classifier's modality reads: an image folder (`root/<class>/*.png`),
//! a JSONL file (`text` and `label` fields), or audio as a folder (`root/<label>/*.wav`) or
//! a CSV manifest (`path`, `label`). Labels are matched to the classifier's classes by name.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use super::predict::{classifier, score, top};
use super::EmbedInputs;
use crate::error::{Error, Result};
use crate::modality::audio::dataset::{read_manifest, scan_folder};
use crate::modality::image::folder;
use crate::modality::text::corpus::{read_jsonl, JsonlFields};

/// Per-class figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples of this class in the data.
    pub support: usize,
}

/// What `eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub model: String,
    pub data: PathBuf,
    pub examples: usize,
    pub accuracy: f64,
    /// Unweighted mean of the classes' F1 (classes with examples or predictions).
    pub macro_f1: f64,
    pub classes: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`, in the order of `classes`.
    pub confusion: Vec<Vec<usize>>,
}

/// `pretext eval`.
pub fn eval(model: &str, data: &Path, batch_size: usize, dev: &Device) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::Usage("eval: --batch-size must be at least 1".into()));
    }
    let c = classifier::load(model, dev)?;
    let (inputs, truth) = labelled(&c.predictor, data)?;
    if truth.is_empty() {
        return Err(Error::data(data, "no labelled examples"));
    }
    let truth: Vec<usize> = truth
        .iter()
        .map(|name| {
            c.classes.iter().position(|k| k == name).ok_or_else(|| {
                Error::data(
                    data,
                    format!(
                        "label `{name}` is not one of the classifier's classes ({})",
                        c.classes.join(", ")
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let scored = score(&c, inputs, batch_size, dev)?;
    let predicted: Vec<usize> = scored.iter().map(|s| top(&s.probs, 1)[0]).collect();
    Ok(measure(model, data, &c.classes, &truth, &predicted))
}

/// The inputs of `data` for the classifier's modality, and their label names.
fn labelled(p: &classifier::Predictor, data: &Path) -> Result<(EmbedInputs, Vec<String>)> {
    use classifier::Predictor;
    match p {
        Predictor::Image { .. } => {
            let index = folder::scan(data)?;
            let labels = index.labels.ok_or_else(|| {
                Error::data(
                    data,
                    "has no class directories (root/<class>/*.png): no labels",
                )
            })?;
            let names = labels
                .iter()
                .map(|&l| index.classes[l as usize].clone())
                .collect();
            Ok((EmbedInputs::Images(index.files), names))
        }
        Predictor::Text { .. } | Predictor::HfText { .. } => {
            let docs = read_jsonl(data, &JsonlFields::default())?;
            let mut texts = Vec::with_capacity(docs.len());
            let mut names = Vec::with_capacity(docs.len());
            for (i, d) in docs.into_iter().enumerate() {
                let label = d.label.ok_or_else(|| {
                    Error::data(data, format!("document {} has no `label`", i + 1))
                })?;
                texts.push(d.text);
                names.push(label);
            }
            Ok((EmbedInputs::Texts(texts), names))
        }
        Predictor::Spectrogram { .. } | Predictor::Waveform { .. } => {
            let items = if data.is_dir() {
                scan_folder(data)?
            } else {
                read_manifest(data)?
            };
            let mut files = Vec::with_capacity(items.len());
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                let label = item.label.ok_or_else(|| {
                    Error::data(data, format!("{} has no label", item.path.display()))
                })?;
                files.push(item.path);
                names.push(label);
            }
            Ok((EmbedInputs::Audio(files), names))
        }
    }
}

/// Accuracy, per-class precision / recall / F1 and the confusion matrix.
pub fn measure(
    model: &str,
    data: &Path,
    classes: &[String],
    truth: &[usize],
    predicted: &[usize],
) -> Evaluation {
    let n = classes.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let right: usize = (0..n).map(|i| confusion[i][i]).sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = (0..n)
        .map(|i| {
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = confusion.iter().map(|row| row[i]).sum();
            let precision = ratio(confusion[i][i], predicted);
            let recall = ratio(confusion[i][i], support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                class: classes[i].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let active: Vec<&ClassMetrics> = per_class
        .iter()
        .enumerate()
        .filter(|(i, m)| m.support > 0 || confusion.iter().any(|row| row[*i] > 0))
        .map(|(_, m)| m)
        .collect();
    let macro_f1 = active.iter().map(|m| m.f1).sum::<f64>() / active.len().max(1) as f64;
    Evaluation {
        model: model.to_string(),
        data: data.to_path_buf(),
        examples: truth.len(),
        accuracy: ratio(right, truth.len()),
        macro_f1,
        classes: per_class,
        confusion,
    }
}

impl Evaluation {
    /// The report `eval` prints: the per-class table, then the confusion matrix.
    pub fn table(&self) -> String {
        let width = self
            .classes
            .iter()
            .map(|c| c.class.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{} on {}: accuracy {:.2} % of {} examples, macro F1 {:.4}\n\n",
            self.model,
            self.data.display(),
            self.accuracy * 100.0,
            self.examples,
            self.macro_f1
        );
        out += &format!("{:width$}  precision  recall      f1  support\n", "class");
        for c in &self.classes {
            out += &format!(
                "{:width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        out += "\nconfusion (rows: true class, columns: predicted, in the order above)\n";
        for (c, row) in self.classes.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>5}")).collect();
            out += &format!("{:width$} {}\n", c.class, cells.join(""));
        }
        out
    }
}

/// The confusion matrix as a picture (`--confusion F.png`): one square per (true, predicted)
/// pair, rows true and columns predicted in the order of `classes`, from white (none of
/// the true class's examples) to dark blue (all of them).
pub fn confusion_png(e: &Evaluation, path: &Path) -> Result<()> {
    let n = e.classes.len();
    let mut px = vec![0f32; 3 * n * n];
    for (i, row) in e.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (j, &v) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                v as f32 / total as f32
            };
            for (ch, depth) in [0.97f32, 0.81, 0.58].iter().enumerate() {
                px[(ch * n + i) * n + j] = 1.0 - depth * share;
            }
        }
    }
    let t = candle_core::Tensor::from_vec(px, (1, 3, n, n), &Device::Cpu)?;
    let cell = (480 / n.max(1)).clamp(8, 48);
    crate::modality::image::grid::save_grid(&[t], cell, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_their_definitions() {
        let classes = vec!["a".to_string(), "b".into(), "c".into()];
        // a: 2 right, 1 taken for b; b: 1 right; c: never seen, once predicted.
        let truth = [0, 0, 0, 1, 1];
        let predicted = [0, 0, 1, 1, 2];
        let e = measure("m", Path::new("d"), &classes, &truth, &predicted);
        assert_eq!(
            e.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]
        );
        assert!((e.accuracy - 0.6).abs() < 1e-12);
        let a = &e.classes[0];
        assert!((a.precision - 1.0).abs() < 1e-12 && (a.recall - 2.0 / 3.0).abs() < 1e-12);
        let b = &e.classes[1];
        assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 0.5).abs() < 1e-12);
        assert_eq!((e.classes[2].precision, e.classes[2].support), (0.0, 0));
        // c was predicted, so it counts in the macro average (F1 0).
        let f1_a = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
        assert!((e.macro_f1 - (f1_a + 0.5 + 0.0) / 3.0).abs() < 1e-12);
        assert!(e.table().contains("accuracy 60.00 % of 5 examples"));
    }
}
