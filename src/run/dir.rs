//! Run directories: `recipe.toml` (resolved), `metrics.jsonl`, `checkpoints/`,
//! `pictures/`, `summary.json`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::recipe::{self, Recipe};

pub const RECIPE_FILE: &str = "recipe.toml";
pub const SUMMARY_FILE: &str = "summary.json";

/// Whether `path` is a run directory (holds a resolved recipe).
pub fn is_run_dir(path: &Path) -> bool {
    path.is_dir() && path.join(RECIPE_FILE).is_file()
}

/// Creates a new run directory holding its resolved recipe and what `fill` writes into it
/// (a tokenizer, a model description), complete or not at all: they are written into a
/// hidden staging directory beside it, which is then renamed into
/// place, so a process killed (or a disk that fills) half-way leaves no run directory that
/// could be neither resumed nor reused. `Target::Exactly` must not exist yet;
/// `Target::Numbered` appends `-2`, `-3`, … to the name while it is taken, so an earlier
/// run is never overwritten.
pub fn create(
    target: Target<'_>,
    r: &Recipe,
    source: &Path,
    fill: impl Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let (parent, name) = match target {
        Target::Exactly(out) => (
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            out.file_name().and_then(|n| n.to_str()).unwrap_or("run"),
        ),
        Target::Numbered(root, name) => (root, name),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    remove_stale_staging(parent)?;
    let staging = parent.join(format!(".{name}{STAGING}{}", std::process::id()));
    let attempt = |dir: &Path| -> Result<bool> {
        if dir.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        write_recipe_as(&staging, dir, r, source)?;
        fill(&staging)?;
        match std::fs::rename(&staging, dir) {
            Ok(()) => Ok(true),
            // Taken between the check and the rename (by a run started at the same time).
            Err(e) if dir.exists() && e.kind() != std::io::ErrorKind::PermissionDenied => Ok(false),
            Err(e) => Err(Error::io(dir, e)),
        }
    };
    let made = match target {
        Target::Exactly(out) => match attempt(out) {
            Ok(true) => Ok(out.to_path_buf()),
            Ok(false) => Err(Error::data(
                out,
                "already exists; a new run needs a new directory: choose another --out, \
                 or resume the run there with `pretext run DIR`",
            )),
            Err(e) => Err(e),
        },
        Target::Numbered(root, name) => (1..)
            .map(|n| match n {
                1 => root.join(name),
                _ => root.join(format!("{name}-{n}")),
            })
            .find_map(|dir| match attempt(&dir) {
                Ok(true) => Some(Ok(dir)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .expect("the names never run out"),
    };
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made
}

/// Where [`create`] makes a run directory.
pub enum Target<'a> {
    /// This path, which must not exist yet (`--out`).
    Exactly(&'a Path),
    /// Under this root, named after the recipe.
    Numbered(&'a Path, &'a str),
}

/// The marker in a staging directory's name: `.NAME.pretext-newPID`.
const STAGING: &str = ".pretext-new";

/// Removes staging directories in `parent` whose process is no longer running.
fn remove_stale_staging(parent: &Path) -> Result<()> {
    crate::tensor_io::remove_stale_dirs(parent, STAGING, "an interrupted start")
}

/// Removes the temporary files interrupted writes left anywhere in a run directory (its
/// checkpoints, pictures, downstream results); symbolic links are not followed.
pub fn remove_stale_temps(run_dir: &Path) -> Result<()> {
    crate::tensor_io::remove_stale_temps(run_dir)?;
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale_temps(&entry.path())?;
        }
    }
    Ok(())
}

/// The file a running `pretext run` holds locked inside its run directory.
pub const LOCK_FILE: &str = ".pretext-run.lock";

/// A run directory held by this process: while it lives, no other `pretext run` starts
/// or resumes the run (two processes training into one directory would interleave its
/// metrics log and overwrite each other's checkpoints). The operating system releases
/// the lock when the process ends, however it ends, so a killed run leaves nothing stale.
#[derive(Debug)]
pub struct Lock {
    _file: Option<std::fs::File>,
}

/// Locks `run_dir` for this process, or says which process holds it.
pub fn lock(run_dir: &Path) -> Result<Lock> {
    use std::io::{Read, Seek, Write};
    let path = run_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let who = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            return Err(Error::data(
                run_dir,
                format!(
                    "is in use: {who} is running it (it holds {LOCK_FILE}); wait for that run \
                     to finish or stop it, then resume with `pretext run {}`",
                    run_dir.display()
                ),
            ));
        }
        // A file system without locks (some network mounts): run, but say what is not
        // guarded.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!(
                "note: {} cannot be locked ({e}); nothing stops a second `pretext run` \
                 of this directory while this one runs",
                path.display()
            );
            return Ok(Lock { _file: None });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    // The holder's process id, for the message another process prints.
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(Lock { _file: Some(file) })
}

/// Writes the resolved recipe into the run directory.
pub fn write_recipe(dir: &Path, r: &Recipe, source: &Path) -> Result<()> {
    write_recipe_as(dir, dir, r, source)
}

/// Writes the resolved recipe into `dir`, naming `run_dir` as the directory to resume.
fn write_recipe_as(dir: &Path, run_dir: &Path, r: &Recipe, source: &Path) -> Result<()> {
    let text = format!(
        "# Resolved recipe, as it runs. Made from {}.\n# Resume or finish this run with:  pretext run {}\n\n{}",
        source.display(),
        run_dir.display(),
        recipe::to_toml(r)
    );
    crate::tensor_io::write_atomic(&dir.join(RECIPE_FILE), text.as_bytes())
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::data(path, e.to_string()))?;
    crate::tensor_io::write_atomic(path, json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        let text = std::fs::read_to_string("recipes/quickstart.toml").unwrap();
        crate::recipe::load_str(&text, Path::new("recipes/quickstart.toml"), &[])
            .unwrap()
            .recipe
    }

    #[test]
    fn a_run_directory_is_held_by_one_process_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock(tmp.path()).unwrap();
        let pid = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid, std::process::id().to_string());
        // A second holder (here another open file of this process, as another process
        // would be) is refused, with who holds it and what to do.
        let refused = lock(tmp.path()).unwrap_err().to_string();
        assert!(
            refused.contains("is in use")
                && refused.contains(&format!("process {pid}"))
                && refused.contains(&tmp.path().display().to_string()),
            "{refused}"
        );
        drop(held);
        let again = lock(tmp.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_run_directory_is_created_complete_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, src) = (recipe(), Path::new("recipes/quickstart.toml"));
        // A staging directory a killed start left behind is removed; a live one is not.
        let stale = tmp.path().join(format!(".old{STAGING}4194303"));
        let live = tmp
            .path()
            .join(format!(".other{STAGING}{}", std::process::id()));
        std::fs::create_dir_all(stale.join("x")).unwrap();
        std::fs::create_dir(&live).unwrap();

        // What `fill` fails to write leaves no run directory (and no staging one).
        let out = tmp.path().join("run");
        let failed = create(Target::Exactly(&out), &r, src, |_| {
            Err(Error::data("tokenizer.json", "no space left on device"))
        });
        assert!(failed.is_err());
        assert!(!out.exists());
        assert!(!stale.exists());
        assert!(live.exists());
        std::fs::remove_dir(&live).unwrap();

        let made = create(Target::Exactly(&out), &r, src, |d| {
            std::fs::write(d.join("config.json"), "{}").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(made, out);
        assert!(is_run_dir(&out) && out.join("config.json").is_file());
        let text = std::fs::read_to_string(out.join(RECIPE_FILE)).unwrap();
        assert!(
            text.contains(&format!("pretext run {}", out.display())),
            "{text}"
        );
        let again = create(Target::Exactly(&out), &r, src, |_| Ok(())).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");

        // Numbered: the next free name; nothing hidden is left beside them.
        let second = create(Target::Numbered(tmp.path(), "run"), &r, src, |_| Ok(())).unwrap();
        assert_eq!(second, tmp.path().join("run-2"));
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
