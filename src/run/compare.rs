//! `pretext report RUN [RUN…]`: several runs side by side — their training losses overlaid
//! in one picture, and their label-efficiency tables as one table, a column per run.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plot::{Chart, Series};

/// One run's name (its directory's) and table, if it has one.
struct Run {
    name: String,
    table: Option<serde_json::Value>,
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
            let v: serde_json::Value =
                serde_json::from_str(&crate::input::read_to_string(&summary)?)
                    .map_err(|e| Error::data(&summary, e.to_string()))?;
            v.get("label_efficiency").filter(|t| !t.is_null()).cloned()
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
    let mut rows: Vec<(String, f64)> = Vec::new();
    let cell = |run: &Run, method: &str, fraction: f64| -> Option<f64> {
        let t = run.table.as_ref()?;
        let fractions = t["label_fractions"].as_array()?;
        let col = fractions
            .iter()
            .position(|f| f.as_f64().is_some_and(|f| (f - fraction).abs() < 1e-12))?;
        t["rows"]
            .as_array()?
            .iter()
            .find(|r| r["method"] == method)?["test_accuracy"][col]
            .as_f64()
    };
    for run in runs {
        let Some(t) = &run.table else { continue };
        let fractions: Vec<f64> = t["label_fractions"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_f64()).collect())
            .unwrap_or_default();
        for r in t["rows"].as_array().into_iter().flatten() {
            let method = r["method"].as_str().unwrap_or_default().to_string();
            for &f in &fractions {
                if !rows
                    .iter()
                    .any(|(m, g)| *m == method && (g - f).abs() < 1e-12)
                {
                    rows.push((method.clone(), f));
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
