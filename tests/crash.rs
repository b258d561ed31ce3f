//! The crash test: a real `pretext run` is killed with SIGKILL at ten random moments —
//! every other one aimed inside a checkpoint write — and resumed each time. The finished
//! run must be bitwise equal to an uninterrupted one (weights, optimizer state, downstream
//! results), log every step exactly once, and leave no temporary file behind.
//!
//! The moments come from a seeded generator; `PRETEXT_CRASH_SEED=N` replays another draw.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pretext::train::checkpoint;
use rand::{Rng, SeedableRng};

const STEPS: usize = 600;
const KILLS: usize = 10;

/// `pretext run` on the recipe (a new run) or on the run directory (a resume); with
/// `pause`, every atomic write stops half-way for that long (`PRETEXT_WRITE_PAUSE_MS`), so
/// a kill can be aimed at a half-written checkpoint.
fn spawn(recipe: &Path, run_dir: &Path, pause: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    if run_dir.exists() {
        cmd.args(["run", run_dir.to_str().unwrap()]);
        // Killed before its first checkpoint: the run starts over, as its error says to.
        if checkpoint::list(&run_dir.join("checkpoints")).map_or(true, |l| l.is_empty()) {
            cmd.arg("--restart");
        }
    } else {
        cmd.args(["run", recipe.to_str().unwrap(), "--out"])
            .arg(run_dir);
    }
    if let Some(ms) = pause {
        cmd.env("PRETEXT_WRITE_PAUSE_MS", ms.to_string());
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A write in progress in `dir`: a `.NAME.tmpPID` file of process `pid`.
fn temp_of(dir: &Path, pid: u32) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(&format!(".tmp{pid}")))
        })
}

/// Every path under `dir` whose name marks an unfinished write or a set-aside file.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp") || name.contains(".pretext-new") || name.ends_with(".unreadable") {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(leftovers(&path));
        }
    }
    found
}

fn logged_steps(run_dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("metrics.jsonl line {l:?} is not JSON: {e}"));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

/// The run's summary, less what differs between any two runs (timings, its own path).
fn summary(run_dir: &Path) -> serde_json::Value {
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    strip_timings(&mut s);
    s.as_object_mut().unwrap().remove("run_dir");
    s
}

fn strip_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.contains("seconds") && !k.contains("per_s"));
            m.values_mut().for_each(strip_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_timings),
        _ => {}
    }
}

#[test]
fn ten_random_kills_leave_a_run_bitwise_equal_to_an_uninterrupted_one() {
    let seed: u64 = std::env::var("PRETEXT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::write_recipe(tmp.path(), &common::tiny_recipe(STEPS, 7));

    let straight = tmp.path().join("straight");
    let clock = Instant::now();
    let out = spawn(&recipe, &straight, None).wait_with_output().unwrap();
    // Random kills come within a fifteenth of a whole run, so the five of them (and the
    // five aimed at the next checkpoint write) cannot let the run finish, however fast
    // this machine is.
    let within = (clock.elapsed().as_millis() as u64 / 15).max(40);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run_dir = tmp.path().join("killed");
    let ckpts = run_dir.join("checkpoints");
    let (mut in_write, mut log) = (0, vec![]);
    for kill in 0..KILLS {
        let aimed = kill % 2 == 1;
        let mut child = spawn(&recipe, &run_dir, aimed.then_some(150));
        let start = Instant::now();
        let torn = if aimed {
            // Wait for this process's next checkpoint write to begin, then kill it there.
            loop {
                if let Some(t) = temp_of(&ckpts, child.id()) {
                    break Some(t);
                }
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "kill {kill} (seed {seed}): the run ended before a checkpoint write"
                );
                assert!(start.elapsed() < Duration::from_secs(120));
                std::thread::sleep(Duration::from_micros(500));
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(20..within)));
            None
        };
        let finished = child.try_wait().unwrap();
        assert!(
            finished.is_none(),
            "kill {kill} (seed {seed}): the run ended ({finished:?}) before it was killed: {}",
            String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr)
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let landed = torn.as_ref().is_some_and(|t| t.exists());
        in_write += landed as usize;
        let at = checkpoint::list(&ckpts).map_or(0, |l| l.last().map_or(0, |c| c.0));
        log.push(format!(
            "kill {kill} after {:?}{}: latest checkpoint step {at}",
            start.elapsed(),
            if landed {
                " inside a checkpoint write"
            } else {
                ""
            }
        ));
    }
    eprintln!("seed {seed}:\n{}", log.join("\n"));
    assert!(
        in_write >= 3,
        "only {in_write} of {} aimed kills landed inside a checkpoint write",
        KILLS / 2
    );

    let out = spawn(&recipe, &run_dir, None).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "final resume failed: {stderr}");

    let (a, b) = (
        common::final_weights(&straight),
        common::final_weights(&run_dir),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "tensor `{k}` differs after {KILLS} kills (seed {seed})"
        );
    }
    assert_eq!(
        logged_steps(&run_dir),
        (1..=STEPS as u64).collect::<Vec<_>>(),
        "every step is logged exactly once"
    );
    let (s, k) = (summary(&straight), summary(&run_dir));
    assert_eq!(k["steps"], STEPS);
    assert_eq!(s, k, "the summaries (less timings) agree");
    assert_eq!(
        leftovers(&run_dir),
        Vec::<PathBuf>::new(),
        "files left behind"
    );
    assert_eq!(
        leftovers(tmp.path()),
        Vec::<PathBuf>::new(),
        "files left behind"
    );
}

/// `pretext ARGS`, waited for; `limit_kib` caps the size of any file it writes (as a full
/// disk would stop it: writes fail with EFBIG instead of ENOSPC).
fn pretext(args: &[&str], limit_kib: Option<u64>) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_pretext");
    let mut cmd = match limit_kib {
        Some(kib) => {
            let mut c = Command::new("bash");
            // SIGXFSZ ignored: writes past the limit fail with an error instead of a signal.
            c.args([
                "-c",
                &format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""),
            ])
            .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).output().unwrap()
}

/// A small tmpfs mounted on `dir` (when this process may mount one), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system up with a ballast file, which is returned.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let ballast = self.0.join("ballast");
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_the_last_good_checkpoint_and_a_run_that_resumes_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 200;
    let recipe = common::write_recipe(tmp.path(), &common::tiny_recipe(steps, 7));
    let recipe = recipe.to_str().unwrap();
    let straight = tmp.path().join("straight");
    let out = pretext(&["run", recipe, "--out", straight.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real full disk where a tmpfs can be mounted (root); otherwise a file-size limit
    // makes the 190 KB checkpoint writes fail the same way.
    let disk = tmp.path().join("disk");
    let tmpfs = Tmpfs::mount(&disk, "4m");
    let run_dir = disk.join("run");
    let run = run_dir.to_str().unwrap();
    let out = pretext(&["run", recipe, "--out", run, "--stop-after", "100"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ckpts = run_dir.join("checkpoints");
    let good = checkpoint::list(&ckpts).unwrap();
    assert_eq!(good.last().unwrap().0, 98);

    let (ballast, limit) = match &tmpfs {
        Some(fs) => (Some(fs.fill()), None),
        None => (None, Some(150)),
    };
    let full = pretext(&["run", run], limit);
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(
        full.status.code(),
        Some(1),
        "a clean error, not a crash: {stderr}"
    );
    if tmpfs.is_some() {
        assert!(stderr.contains("free some space"), "{stderr}");
    }
    let cause = if tmpfs.is_some() {
        "No space left on device"
    } else {
        "File too large"
    };
    assert!(stderr.contains(cause) && stderr.contains(run), "{stderr}");
    // The last good checkpoint is intact and nothing half-written is left.
    assert_eq!(checkpoint::list(&ckpts).unwrap(), good);
    checkpoint::load(&good.last().unwrap().1, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        leftovers(&run_dir),
        Vec::<PathBuf>::new(),
        "files left behind"
    );

    // Space freed: the run resumes and finishes as if nothing had happened.
    if let Some(b) = ballast {
        std::fs::remove_file(b).unwrap();
    }
    let out = pretext(&["run", run], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (
        common::final_weights(&straight),
        common::final_weights(&run_dir),
    );
    for (k, v) in &a {
        assert!(v == &b[k], "tensor `{k}` differs after the disk filled up");
    }
    assert_eq!(
        logged_steps(&run_dir),
        (1..=steps as u64).collect::<Vec<_>>()
    );
    assert_eq!(summary(&straight), summary(&run_dir));
    eprintln!(
        "full disk simulated with {}",
        if tmpfs.is_some() {
            "a 4 MiB tmpfs"
        } else {
            "ulimit -f 150"
        }
    );
}
