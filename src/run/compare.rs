//! `pretext report RUN [RUN…]`: several runs side by side — their training losses overlaid
//! in one picture, and their label-efficiency tables as one table, a column per run.

use std::path::{Path, PathBuf};

use super::report::Report;
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
    let cell = |run: &Run, method: &str, fraction: f64| -> Option<f64> {
        let t = run.table.as_ref()?;
        let col = t.label_fractions.iter().position(|&f| same(f, fraction))?;
        t.rows.iter().find(|r| r.method == method)?.test_accuracy[col]
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
    for (method, fraction) in &rows {
        s.push_str(&format!("| {method} | {} % |", fraction * 100.0));
        for run in runs {
            match cell(run, method, *fraction) {
                Some(a) => s.push_str(&format!(" {:.1} |", a * 100.0)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    if rows.is_empty() {
        s.push_str("(no run has downstream results yet)\n");
    }
    s
}
