//! The label-efficiency table: one row per downstream method, one column per label
//! fraction, test accuracy in each cell. Written into `summary.json` and as `report.md`.

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
    /// Test accuracy per label fraction (`None` where the method was not run at it).
    pub test_accuracy: Vec<Option<f64>>,
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
        let mut rows: Vec<ReportRow> = Vec::new();
        for r in results {
            let col = fractions
                .iter()
                .position(|f| (f - r.label_fraction).abs() < 1e-12)
                .expect("every fraction is a column");
            let row = match rows.iter_mut().position(|row| row.method == r.method) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(ReportRow {
                        method: r.method.clone(),
                        test_accuracy: vec![None; fractions.len()],
                    });
                    rows.last_mut().expect("just pushed")
                }
            };
            row.test_accuracy[col] = Some(r.test_accuracy);
        }
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
        for row in &self.rows {
            s.push_str(&format!("| {} |", row.method));
            for a in &row.test_accuracy {
                match a {
                    Some(a) => s.push_str(&format!(" {:.1} |", a * 100.0)),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s
    }
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
    }
}
