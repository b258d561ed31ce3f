//! What the hostile-input tests share: running the binary under a time and address-space
//! budget, and making the inputs that cannot live in git. (Included with
//! `mod hostile_support;`.)
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address space the binary may reserve (ulimit -v, KiB): far below what any of the
/// absurd sizes would allocate, far above what a normal check needs.
const ADDRESS_SPACE_KIB: u64 = 8 << 20;
const TIME_LIMIT: Duration = Duration::from_secs(60);

pub struct Outcome {
    pub code: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `pretext ARGS` under the budget; a run past the time limit is killed.
pub fn pretext(args: &[&str]) -> Outcome {
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("pretext {args:?} ran past {TIME_LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Outcome {
        code,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// The run failed cleanly, and its error contains every one of `names`.
pub fn refused(args: &[&str], names: &[&str]) -> String {
    let o = pretext(args);
    assert!(
        !o.stderr.contains("panicked") && o.code == Some(1),
        "pretext {args:?}: expected a clean error (exit 1), got {:?} after {:?}:\n{}",
        o.code,
        o.elapsed,
        o.stderr
    );
    assert!(o.stderr.contains("error:"), "{}", o.stderr);
    for n in names {
        assert!(
            o.stderr.contains(n),
            "pretext {args:?}: the error does not name `{n}`:\n{}",
            o.stderr
        );
    }
    o.stderr
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pretext-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn mkfifo(path: &Path) -> bool {
    Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A copy of the committed Hugging Face fixture `name` in `dir`.
pub fn fixture_copy(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(format!("tests/fixtures/hf/{name}")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}
