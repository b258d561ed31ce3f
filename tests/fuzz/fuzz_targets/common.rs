//! What every target shares: the readers take files, so each input is written to one
//! (in a directory of its own per process, in memory where `/dev/shm` exists), and the
//! allocation limit is set low enough that libFuzzer's memory limit (2 GiB) catches any
//! reader that allocates what a header claims before checking it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// This process's scratch directory, made once; the allocation limit is set then too.
pub fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::set_var("PRETEXT_MAX_ALLOC", "512M");
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("pretext-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

/// Writes `data` to `name` in the scratch directory and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writing the input");
    path
}

/// Every error must name the file it came from (its display contains `name`).
pub fn names(e: &impl std::fmt::Display, name: &str) {
    let text = e.to_string();
    assert!(text.contains(name), "an error that does not name `{name}`: {text}");
}
