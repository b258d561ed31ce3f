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
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_none_or(|s| s as usize <= step)
                })
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
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
