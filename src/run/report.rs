//! The label-efficiency table: one row per downstream method, one column per label
//! fraction, test accuracy in each cell (the mean over the label draws, when a head makes
//! several). Written into `summary.json` and as `report.md`.

use serde::{Deserialize, Serialize};

use super::downstream::DownstreamResult;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Column headers: label fractions, ascending.
    pub label_fractions: Vec<f64>,
    pub rows: Vec<ReportRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRow {
    pub method: String,
    /// Test accuracy per label fraction (`None` where the method was not run at it): the
    /// mean over the label draws.
    pub test_accuracy: Vec<Option<f64>>,
    /// Per label fraction, the sample standard deviation of the test accuracy over the label
    /// draws, and their number (`None` with a single draw). Empty when no cell has several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<Option<Spread>>,
}

/// How a cell's label draws spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub std: f64,
    pub draws: usize,
}

impl Report {
    pub fn new(results: &[DownstreamResult]) -> Self {
        let mut fractions: Vec<f64> = Vec::new();
        for r in results {
            if !fractions
                .iter()
                .any(|f| (f - r.label_fraction).abs() < 1e-12)
            {
                fractions.push(r.label_fraction);
            }
        }
        fractions.sort_by(f64::total_cmp);
        // Each method's accuracies per fraction, one per label draw.
        let mut cells: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
        for r in results {
            let col = fractions
                .iter()
                .position(|f| (f - r.label_fraction).abs() < 1e-12)
                .expect("every fraction is a column");
            let row = match cells.iter().position(|(method, _)| *method == r.method) {
                Some(i) => i,
                None => {
                    cells.push((r.method.clone(), vec![Vec::new(); fractions.len()]));
                    cells.len() - 1
                }
            };
            cells[row].1[col].push(r.test_accuracy);
        }
        let rows = cells
            .into_iter()
            .map(|(method, accs)| {
                let spread: Vec<Option<Spread>> = accs.iter().map(|a| spread(a)).collect();
                ReportRow {
                    method,
                    test_accuracy: accs
                        .iter()
                        .map(|a| (!a.is_empty()).then(|| a.iter().sum::<f64>() / a.len() as f64))
                        .collect(),
                    spread: if spread.iter().any(Option::is_some) {
                        spread
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        Self {
            label_fractions: fractions,
            rows,
        }
    }

    /// A Markdown table of test accuracies (%).
    pub fn markdown(&self) -> String {
        let mut s = String::from("| method |");
        for f in &self.label_fractions {
            s.push_str(&format!(" {} % labels |", f * 100.0));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(self.label_fractions.len()));
        s.push('\n');
        let mut draws = Vec::new();
        for row in &self.rows {
            s.push_str(&format!("| {} |", row.method));
            for (col, a) in row.test_accuracy.iter().enumerate() {
                let spread = row.spread.get(col).copied().flatten();
                if let (Some(_), Some(d)) = (a, spread) {
                    if !draws.contains(&d.draws) {
                        draws.push(d.draws);
                    }
                }
                s.push_str(&format!(" {} |", cell(*a, spread)));
            }
            s.push('\n');
        }
        if !draws.is_empty() {
            let n: Vec<String> = draws.iter().map(|n| n.to_string()).collect();
            s.push_str(&format!(
                "\nMean ± standard deviation over {} label draws.\n",
                n.join(" or ")
            ));
        }
        s
    }
}

/// A table cell: the accuracy in %, with ± the draws' standard deviation when there are
/// several, or `–` where the method was not run.
pub fn cell(accuracy: Option<f64>, spread: Option<Spread>) -> String {
    match (accuracy, spread) {
        (Some(a), Some(d)) => format!("{:.1} ± {:.1}", a * 100.0, d.std * 100.0),
        (Some(a), None) => format!("{:.1}", a * 100.0),
        (None, _) => "–".into(),
    }
}

/// Sample standard deviation of several draws' accuracies; `None` for fewer than two.
fn spread(accs: &[f64]) -> Option<Spread> {
    let n = accs.len();
    if n < 2 {
        return None;
    }
    let mean = accs.iter().sum::<f64>() / n as f64;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some(Spread {
        std: var.sqrt(),
        draws: n,
    })
}

/// The label-efficiency table of `results` (none when empty), printed and written to
/// `run_dir/report.md`.
pub fn write(
    run_dir: &std::path::Path,
    results: &[DownstreamResult],
) -> crate::error::Result<Option<Report>> {
    if results.is_empty() {
        return Ok(None);
    }
    let report = Report::new(results);
    let md = report.markdown();
    eprintln!("\n{md}");
    crate::tensor_io::write_atomic(&run_dir.join("report.md"), md.as_bytes())?;
    report.draw(&run_dir.join(LABEL_EFFICIENCY_PICTURE))?;
    Ok(Some(report))
}

/// Where a run's label-efficiency chart is drawn.
pub const LABEL_EFFICIENCY_PICTURE: &str = "pictures/label-efficiency.png";

impl Report {
    /// The table as a chart: test accuracy (%) against the fraction of labels (log
    /// scale), one line per method.
    pub fn draw(&self, path: &std::path::Path) -> crate::error::Result<()> {
        let series = self
            .rows
            .iter()
            .map(|row| crate::plot::Series {
                name: row.method.clone(),
                points: self
                    .label_fractions
                    .iter()
                    .zip(&row.test_accuracy)
                    .filter_map(|(f, a)| a.map(|a| (*f, a * 100.0)))
                    .collect(),
            })
            .collect();
        let chart = crate::plot::Chart {
            title: "label efficiency".into(),
            x_label: "fraction of training labels".into(),
            y_label: "test accuracy (%)".into(),
            series,
            log_x: true,
        };
        crate::plot::save(&[chart], 800, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{DownstreamInput, HeadKind, Pooling};

    fn result(method: &str, fraction: f64, acc: f64) -> DownstreamResult {
        DownstreamResult {
            method: method.into(),
            head: HeadKind::LinearProbe,
            input: DownstreamInput::Pretrained,
            pooling: Pooling::Cls,
            label_fraction: fraction,
            train_examples: 1,
            train_accuracy: None,
            test_accuracy: acc,
            steps: None,
            draw: None,
            seconds: 0.0,
            model_dir: None,
        }
    }

    #[test]
    fn rows_by_method_columns_by_fraction() {
        let r = Report::new(&[
            result("a", 1.0, 0.9),
            result("a", 0.1, 0.8),
            result("b", 0.1, 0.7),
        ]);
        assert_eq!(r.label_fractions, vec![0.1, 1.0]);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].test_accuracy, vec![Some(0.8), Some(0.9)]);
        assert_eq!(r.rows[1].test_accuracy, vec![Some(0.7), None]);
        let md = r.markdown();
        assert!(md.contains("| a | 80.0 | 90.0 |"), "{md}");
        assert!(md.contains("| b | 70.0 | – |"), "{md}");
        assert!(r.rows.iter().all(|row| row.spread.is_empty()));
        assert!(!md.contains('±'), "{md}");
    }

    #[test]
    fn label_draws_are_averaged_with_their_spread() {
        let r = Report::new(&[
            result("a", 0.1, 0.6),
            result("a", 0.1, 0.7),
            result("a", 0.1, 0.8),
            result("a", 1.0, 0.9),
            result("b", 0.1, 0.5),
        ]);
        let a = &r.rows[0];
        assert!((a.test_accuracy[0].unwrap() - 0.7).abs() < 1e-12);
        let d = a.spread[0].unwrap();
        assert_eq!(d.draws, 3);
        assert!((d.std - 0.1).abs() < 1e-12, "{d:?}");
        assert_eq!(a.spread[1], None);
        assert!(r.rows[1].spread.is_empty());
        let md = r.markdown();
        assert!(md.contains("| a | 70.0 ± 10.0 | 90.0 |"), "{md}");
        assert!(md.contains("| b | 50.0 | – |"), "{md}");
        assert!(md.contains("over 3 label draws"), "{md}");
    }
}
