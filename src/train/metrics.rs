//! `metrics.jsonl`: one JSON object per logged step, appended and flushed as training runs.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending. Lines with a `step` beyond `resume_step` (written after
    /// the checkpoint a run resumes from) are dropped first, so the log has no duplicates.
    pub fn open(path: &Path, resume_step: Option<usize>) -> Result<Self> {
        if let (Some(step), true) = (resume_step, path.exists()) {
            let f = crate::input::open(path)?;
            let kept: Vec<String> = std::io::BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                // A line cut short by a kill does not parse: it goes too.
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                        v.get("step")
                            .and_then(|s| s.as_u64())
                            .is_none_or(|s| s as usize <= step)
                    })
                })
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            // Atomically: a kill while rewriting must not lose the history.
            crate::tensor_io::write_atomic(path, text.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn log(&mut self, record: &impl Serialize) -> Result<()> {
        let line =
            serde_json::to_string(record).map_err(|e| Error::data(&self.path, e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Where [`draw`] puts a run's (or a fine-tuning's) loss picture.
pub const LOSS_PICTURE: &str = "pictures/loss.png";

/// `(step, value)` of `key` in each line of the JSON-lines file `path` that has both
/// (none when the file is absent; lines that do not parse are skipped, as a cut last line is).
pub fn series(path: &Path, key: &str) -> Result<Vec<(f64, f64)>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = crate::input::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(key)?.as_f64()?)))
        .collect())
}

/// Draws `dir/pictures/loss.png` from `dir/metrics.jsonl`: the training loss, the held-out
/// loss and accuracy where `dir/eval.jsonl` has them (text runs), and the learning rate,
/// per step.
pub fn draw(dir: &Path) -> Result<()> {
    use crate::plot::{Chart, Series};
    let (log, eval) = (dir.join("metrics.jsonl"), dir.join("eval.jsonl"));
    let chart = |title: &str, y: &str, series: Vec<Series>| Chart {
        title: title.into(),
        x_label: "step".into(),
        y_label: y.into(),
        series,
        log_x: false,
    };
    let line = |name: &str, points| Series {
        name: name.into(),
        points,
    };
    let mut losses = vec![line("training", series(&log, "loss")?)];
    let held_out = series(&eval, "loss")?;
    if !held_out.is_empty() {
        losses.push(line("held-out", held_out));
    }
    let mut charts = vec![chart("loss", "loss", losses)];
    let accuracy = series(&eval, "accuracy")?;
    if !accuracy.is_empty() {
        charts.push(chart(
            "held-out masked-token accuracy",
            "accuracy",
            vec![line("", accuracy)],
        ));
    }
    charts.push(chart(
        "learning rate",
        "lr",
        vec![line("", series(&log, "lr")?)],
    ));
    crate::plot::save(&charts, 800, &dir.join(LOSS_PICTURE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_drops_later_steps_and_a_line_a_kill_cut_short() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"step\":1}\n{\"note\":\"kept\"}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4,\"lo",
        )
        .unwrap();
        let mut log = MetricsLog::open(&path, Some(2)).unwrap();
        log.log(&serde_json::json!({"step": 3})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"step\":1}\n{\"note\":\"kept\"}\n{\"step\":2}\n{\"step\":3}\n"
        );
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
