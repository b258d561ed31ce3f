//! `pretext eval`: a classifier on a labelled data set, as `predict` runs it — accuracy,
//! precision, recall and F1 per class, and the confusion matrix (printed, in JSON with
//! `--out`, and as a picture with `--confusion F.png`).
//!
//! The data is what the classifier's modality reads: an image folder (`root/<class>/*.png`),
//! a JSONL file (`text` and `label` fields), or audio as a folder (`root/<label>/*.wav`) or
//! a CSV manifest (`path`, `label`); or a recipe's labelled split, whatever its format
//! (IDX included): a recipe file, a run directory, or by default the run the classifier
//! belongs to ([`eval_data`]). Labels are matched to the classifier's classes by name.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use super::eval_data::{self, EvalSplit, Examples};
use super::predict::{classifier, score, score_images, top};
use crate::error::{Error, Result};

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

/// `pretext eval`: `model` on `data` (see [`eval_data::resolve`]; its `split` when it is
/// a recipe or run).
pub fn eval(
    model: &str,
    data: Option<&Path>,
    split: EvalSplit,
    batch_size: usize,
    dev: &Device,
) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::Usage("eval: --batch-size must be at least 1".into()));
    }
    let c = classifier::load(model, dev)?;
    let l = eval_data::resolve(&c.predictor, model, data, split, &c.classes)?;
    let origin = l.origin.as_path();
    if l.truth.is_empty() {
        return Err(Error::data(origin, "no labelled examples"));
    }
    let truth: Vec<usize> = l
        .truth
        .iter()
        .map(|name| {
            c.classes.iter().position(|k| k == name).ok_or_else(|| {
                Error::data(
                    origin,
                    format!(
                        "label `{name}` is not one of the classifier's classes ({})",
                        c.classes.join(", ")
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let scored = match l.examples {
        Examples::Inputs(inputs) => score(&c, inputs, batch_size, dev)?,
        Examples::Images(data) => score_images(&c, &data, batch_size, dev)?,
    };
    let predicted: Vec<usize> = scored.iter().map(|s| top(&s.probs, 1)[0]).collect();
    Ok(measure(model, origin, &c.classes, &truth, &predicted))
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

/// The confusion matrix as a picture (`--confusion F.png`): rows true and columns predicted
/// in the order of `classes`, each cell its count, shaded from white (none of the true
/// class's examples) to dark blue (all of them).
pub fn confusion_png(e: &Evaluation, path: &Path) -> Result<()> {
    let names: Vec<String> = e.classes.iter().map(|c| c.class.clone()).collect();
    let title = format!(
        "rows: true class, columns: predicted; accuracy {:.2} % of {}",
        e.accuracy * 100.0,
        e.examples
    );
    crate::plot::confusion(&title, &names, &e.confusion, path)
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
