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
