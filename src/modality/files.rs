//! Listing data folders, shared by the modalities that read folders of files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Entries of `dir`, sorted by name (bytes), so the order does not depend on the file system.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// The files under `dir` for which `keep` holds, recursively and in sorted order (by path
/// component). Links to folders are followed, so a folder of links works, but a link back
/// to a folder that encloses it is an error naming it, not an endless walk. Entries for
/// which `skip` holds are passed over, folders included.
pub fn files_under(
    dir: &Path,
    skip: &dyn Fn(&Path) -> bool,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>> {
    fn walk(
        dir: &Path,
        ancestors: &mut Vec<PathBuf>,
        skip: &dyn Fn(&Path) -> bool,
        keep: &dyn Fn(&Path) -> bool,
        out: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        if ancestors.contains(&real) {
            return Err(Error::data(
                dir,
                format!(
                    "leads back to {}, which encloses it (a loop of links)",
                    real.display()
                ),
            ));
        }
        ancestors.push(real);
        for path in sorted_entries(dir)? {
            if skip(&path) {
                continue;
            }
            if path.is_dir() {
                walk(&path, ancestors, skip, keep, out)?;
            } else if keep(&path) {
                out.push(path);
            }
        }
        ancestors.pop();
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut Vec::new(), skip, keep, &mut out)?;
    Ok(out)
}

/// Where prepared training data is cached (text token shards, spectrograms), each kind in a
/// folder of its own below it: `$PRETEXT_CACHE_DIR`, else `$XDG_CACHE_HOME/pretext`, else
/// `~/.cache/pretext`, else `pretext-cache` in the temporary folder.
pub fn cache_root() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("PRETEXT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("pretext")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("pretext")))
        .unwrap_or_else(|| std::env::temp_dir().join("pretext-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_back_to_an_enclosing_folder_is_an_error_not_a_walk() {
        let dir = std::env::temp_dir().join(format!("pretext-loop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cls")).unwrap();
        std::fs::write(dir.join("cls/a.png"), b"x").unwrap();
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        assert_eq!(files_under(&dir, &none, &all).unwrap().len(), 1);
        std::os::unix::fs::symlink("..", dir.join("cls/up")).unwrap();
        let err = files_under(&dir, &none, &all).unwrap_err().to_string();
        assert!(err.contains("cls/up") && err.contains("loop"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
