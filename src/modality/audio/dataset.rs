//! PLACEHOLDER (replaced by the audio-io branch on merge).
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, PartialEq)]
pub struct AudioItem { pub path: PathBuf, pub label: Option<String>, pub split: Option<String> }
pub fn scan_folder(_root: &Path) -> crate::error::Result<Vec<AudioItem>> { todo!() }
pub fn read_manifest(_csv: &Path) -> crate::error::Result<Vec<AudioItem>> { todo!() }
pub fn class_names(_items: &[AudioItem]) -> Vec<String> { todo!() }
