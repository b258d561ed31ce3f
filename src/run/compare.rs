//! `pretext report RUN [RUN…]`: several runs side by side — their training losses overlaid
//! in one picture, and their label-efficiency tables as one table, a column per run.

use std::path::{Path, PathBuf};

use super::report::{self, Report, Spread};
use crate::error::{Error, Result};
use crate::plot::{Chart, Series};

/// One run's name (its directory's) and table, if it has one.
struct Run {
    name: String,
    table: Option<Report>,
}

/// What `summary.json` holds that the comparison reads.
#[derive(serde::Deserialize)]
struct Summary {
    label_efficiency: Option<Report>,
}

/// Draws the runs' losses into `picture` and returns the table comparing them (Markdown).
pub fn compare(runs: &[PathBuf], picture: &Path) -> Result<String> {
    if runs.is_empty() {
        return Err(Error::Usage(
            "report: give one or more run directories".into(),
        ));
    }
    let mut loaded = Vec::with_capacity(runs.len());
    let mut losses = Vec::with_capacity(runs.len());
    for dir in runs {
        if !super::dir::is_run_dir(dir) {
            return Err(Error::data(dir, "not a run directory (no recipe.toml)"));
        }
        let name = dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        let points = crate::train::metrics::series(&dir.join("metrics.jsonl"), "loss")?;
        losses.push(Series {
            name: name.clone(),
            points,
        });
        let summary = dir.join(super::dir::SUMMARY_FILE);
        let table = if summary.is_file() {
            serde_json::from_str::<Summary>(&crate::input::read_to_string(&summary)?)
                .map_err(|e| Error::data(&summary, e.to_string()))?
                .label_efficiency
        } else {
            None
        };
        loaded.push(Run { name, table });
    }
    let chart = Chart {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: losses,
        log_x: false,
    };
    crate::plot::save(&[chart], 900, picture)?;
    Ok(table(&loaded))
}

/// Rows: (method, label fraction) in order of first appearance; columns: runs.
fn table(runs: &[Run]) -> String {
    let same = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let cell = |run: &Run, method: &str, fraction: f64| -> Option<(f64, Option<Spread>)> {
        let t = run.table.as_ref()?;
        let col = t.label_fractions.iter().position(|&f| same(f, fraction))?;
        let row = t.rows.iter().find(|r| r.method == method)?;
        Some((
            row.test_accuracy[col]?,
            row.spread.get(col).copied().flatten(),
        ))
    };
    let mut rows: Vec<(String, f64)> = Vec::new();
    for t in runs.iter().filter_map(|r| r.table.as_ref()) {
        for r in &t.rows {
            for &f in &t.label_fractions {
                if !rows.iter().any(|(m, g)| *m == r.method && same(*g, f)) {
                    rows.push((r.method.clone(), f));
                }
            }
        }
    }
    let mut s = String::from("| method | labels |");
    for run in runs {
        s.push_str(&format!(" {} |", run.name));
    }
    s.push_str("\n|---|---:|");
    s.push_str(&"---:|".repeat(runs.len()));
    s.push('\n');
    let mut spread_shown = false;
    for (method, fraction) in &rows {
        s.push_str(&format!("| {method} | {} % |", fraction * 100.0));
        for run in runs {
            let (a, spread) = cell(run, method, *fraction).unzip();
            let spread = spread.flatten();
            spread_shown |= spread.is_some();
            s.push_str(&format!(" {} |", report::cell(a, spread)));
        }
        s.push('\n');
    }
    if rows.is_empty() {
        s.push_str("(no run has downstream results yet)\n");
    } else if spread_shown {
        s.push_str("\nMean ± standard deviation over the label draws of each cell.\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::report::ReportRow;

    #[test]
    fn cells_of_several_draws_carry_their_spread() {
        let run = |name: &str, acc: f64, spread: Option<Spread>| Run {
            name: name.into(),
            table: Some(Report {
                label_fractions: vec![0.1, 1.0],
                rows: vec![ReportRow {
                    method: "fine-tune (pretrained)".into(),
                    test_accuracy: vec![Some(acc), None],
                    spread: vec![spread, None],
                }],
            }),
        };
        let t = table(&[
            run(
                "a",
                0.484,
                Some(Spread {
                    std: 0.014,
                    draws: 5,
                }),
            ),
            run("b", 0.5, None),
        ]);
        assert!(
            t.contains("| fine-tune (pretrained) | 10 % | 48.4 ± 1.4 | 50.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| fine-tune (pretrained) | 100 % | – | – |"),
            "{t}"
        );
        assert!(t.contains("Mean ± standard deviation"), "{t}");
        let t = table(&[run("b", 0.5, None)]);
        assert!(!t.contains('±'), "{t}");
    }
}
