//! `hf:org/name[@rev]` downloads, through the real binary, from a loopback stand-in for the
//! Hugging Face hub (hand-written HTTP/1.1 on 127.0.0.1) that serves the committed tiny BERT
//! (`tests/fixtures/hf/bert_model`). The binary is pointed at it with `HF_ENDPOINT` and at a
//! temporary cache with `HF_HOME`.
//!
//! The stand-in answers what the hub answers and the client reads:
//! `GET /api/models/{repo}/revision/{rev}` (the commit and the `siblings` with sizes) and
//! `GET /{repo}/resolve/{rev}/{file}` (`X-Repo-Commit`, `ETag`, `Content-Range` for `Range`
//! requests, `X-Error-Code` on a 404), and records every request it sees.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "org/tiny-bert";
const MODEL: &str = "hf:org/tiny-bert";

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf/bert_model")
        .join(file)
}

/// What a repository serves: file name → bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// The tiny BERT, plus files the download must leave alone.
fn tiny_bert() -> Files {
    let mut files = Files::new();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        files.insert(f.into(), std::fs::read(fixture(f)).unwrap());
    }
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    files.insert("pytorch_model.bin".into(), vec![7; 100]);
    files
}

fn bin_only() -> Files {
    let mut files = Files::new();
    files.insert(
        "config.json".into(),
        std::fs::read(fixture("config.json")).unwrap(),
    );
    files.insert("pytorch_model.bin".into(), vec![7; 100]);
    files
}

/// A request as the stand-in saw it (header names in lower case).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
}

struct State {
    repos: BTreeMap<String, Files>,
    seen: Mutex<Vec<Seen>>,
    /// The next body transfer of this file stops after this many bytes (headers promise
    /// the whole length), then the connection closes. Taken once.
    break_once: Mutex<Option<(String, usize)>>,
}

/// The loopback hub; stops (and joins its thread) when dropped.
struct Hub {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    fn start(repos: &[(&str, Files)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            repos: repos
                .iter()
                .map(|(n, f)| (n.to_string(), f.clone()))
                .collect(),
            seen: Mutex::new(Vec::new()),
            break_once: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Hub {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn break_next(&self, file: &str, after: usize) {
        *self.state.break_once.lock().unwrap() = Some((file.into(), after));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The `Range` headers of the requests for `file`'s bytes.
    fn ranges(&self, file: &str) -> Vec<String> {
        let suffix = format!("/{file}");
        self.seen()
            .iter()
            .filter(|s| s.path.contains("/resolve/") && s.path.ends_with(&suffix))
            .map(|s| s.headers.get("range").cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn not_found(conn: &mut TcpStream, code: &str) {
    let body = format!("{{\"error\": \"{code}\"}}");
    respond(
        conn,
        "404 Not Found",
        &[("X-Error-Code", code.into())],
        body.as_bytes(),
    );
}

/// A stable stand-in for the hub's ETag (a content hash).
fn etag(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

fn serve(mut conn: TcpStream, state: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
    });
    let path = path.split('?').next().unwrap_or_default();
    let revision_ok = |rev: &str| rev == "main" || rev == SHA;

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let (repo, rev) = rest.split_once("/revision/").unwrap_or((rest, "main"));
        let Some(files) = state.repos.get(repo) else {
            return not_found(&mut conn, "RepoNotFound");
        };
        if !revision_ok(rev) {
            return not_found(&mut conn, "RevisionNotFound");
        }
        let siblings: Vec<_> = files
            .iter()
            .map(|(f, b)| serde_json::json!({"rfilename": f, "size": b.len()}))
            .collect();
        let body = serde_json::json!({"id": repo, "sha": SHA, "siblings": siblings});
        return respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }
    let Some((repo, rest)) = path[1..].split_once("/resolve/") else {
        return not_found(&mut conn, "EntryNotFound");
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(files) = state.repos.get(repo) else {
        return not_found(&mut conn, "RepoNotFound");
    };
    if !revision_ok(rev) {
        return not_found(&mut conn, "RevisionNotFound");
    }
    let Some(bytes) = files.get(file) else {
        return not_found(&mut conn, "EntryNotFound");
    };
    let len = bytes.len();
    let mut out = vec![
        ("X-Repo-Commit", SHA.to_string()),
        ("ETag", format!("\"{}\"", etag(bytes))),
    ];
    let (status, start, end) = match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let start: usize = a.parse().unwrap();
            let end = if b.is_empty() {
                len - 1
            } else {
                b.parse::<usize>().unwrap().min(len - 1)
            };
            if start >= len {
                return respond(&mut conn, "416 Range Not Satisfiable", &[], b"");
            }
            out.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
            ("206 Partial Content", start, end)
        }
        None => ("200 OK", 0, len - 1),
    };
    let body = &bytes[start..=end];
    // The metadata request (bytes=0-0) is never broken off.
    let cut = if body.len() > 1 {
        let mut b = state.break_once.lock().unwrap();
        if b.as_ref().is_some_and(|(f, _)| f == file) {
            b.take().map(|(_, n)| n.min(body.len()))
        } else {
            None
        }
    } else {
        None
    };
    match cut {
        Some(n) => {
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (k, v) in &out {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body[..n]);
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        None => respond(&mut conn, status, &out, body),
    }
}

/// `pretext ARGS` with only the hub variables given (no proxies, tokens or caches from the
/// environment): (success, stdout, stderr).
fn pretext(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(args);
    for var in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn embed(model: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    pretext(
        &[
            "embed",
            "--model",
            model,
            "--text",
            "the cat sat on the mat",
        ],
        env,
    )
}

/// The embedding of the committed folder, the reference for the downloaded copy.
fn local_embedding() -> String {
    let dir = fixture("");
    let (ok, out, err) = embed(dir.to_str().unwrap(), &[]);
    assert!(ok, "{err}");
    out
}

/// A temporary `HF_HOME` and the repository's folder in its cache.
fn home() -> (tempfile::TempDir, String, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let repo_dir = home.join("hub/models--org--tiny-bert");
    (tmp, home.to_str().unwrap().to_string(), repo_dir)
}

/// The files directly in `dir` (name → bytes), none when it does not exist.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn download_embeds_like_the_local_folder_and_is_reused_offline() {
    let (_tmp, home, repo_dir) = home();
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    let (ok, out, err) = embed(MODEL, &env);
    assert!(ok, "{err}");
    assert_eq!(out, local_embedding());
    assert!(err.contains("downloading into"), "{err}");

    // The layout huggingface_hub writes: refs/main, snapshot links into blobs/.
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        SHA
    );
    assert_eq!(
        std::fs::read_dir(repo_dir.join("refs")).unwrap().count(),
        1,
        "only refs/main"
    );
    let snap = repo_dir.join("snapshots").join(SHA);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let link = std::fs::read_link(snap.join(f)).unwrap();
        assert!(link.starts_with("../../blobs"), "{f} -> {link:?}");
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(fixture(f)).unwrap()
        );
    }
    // Only what pretext reads was fetched.
    let mut names: Vec<_> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    let seen = hub.seen();
    assert!(seen.iter().all(|s| !s.path.ends_with("pytorch_model.bin")
        && !s.path.ends_with("README.md")
        && !s.headers.contains_key("authorization")));
    assert!(seen[0]
        .path
        .starts_with("/api/models/org/tiny-bert/revision/main"));

    // In the cache: used without asking the hub.
    let asked = hub.seen().len();
    let (ok, again, err) = embed(MODEL, &env);
    assert!(ok && again == out, "{err}");
    assert_eq!(hub.seen().len(), asked, "a cached model needs no request");

    // With the hub gone and HF_HUB_OFFLINE=1, the same command works; so does the commit.
    drop(hub);
    let offline = [
        ("HF_HOME", home.as_str()),
        ("HF_ENDPOINT", ep.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let (ok, again, err) = embed(MODEL, &offline);
    assert!(ok && again == out, "{err}");
    let (ok, again, err) = embed(&format!("{MODEL}@{SHA}"), &offline);
    assert!(ok && again == out, "{err}");
    // Not in the cache and offline: the cache reader's error, and no download attempted.
    let (ok, _, err) = embed("hf:org/other", &offline);
    assert!(!ok, "{err}");
    assert!(
        err.contains("not in the local Hugging Face cache") && err.contains("HF_HUB_OFFLINE=1"),
        "{err}"
    );
}

#[test]
fn missing_repo_or_revision_is_a_clear_error() {
    let (_tmp, home, repo_dir) = home();
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    let (ok, _, err) = embed("hf:org/missing", &env);
    assert!(!ok);
    assert!(err.starts_with("error: hf:org/missing@main: "), "{err}");
    assert!(
        err.contains("no model repository org/missing") && err.contains("HTTP 404"),
        "{err}"
    );
    let (ok, _, err) = embed("hf:org/tiny-bert@v9", &env);
    assert!(!ok);
    assert!(
        err.contains("no revision `v9` in the repository org/tiny-bert"),
        "{err}"
    );
    assert!(!repo_dir.join("snapshots").exists());
}

#[test]
fn a_truncated_transfer_leaves_nothing_complete_looking_and_a_retry_succeeds() {
    let (_tmp, home, repo_dir) = home();
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    // The weights arrive whole; the tokenizer (fetched after them) breaks off.
    hub.break_next("tokenizer.json", 1000);
    let (ok, _, err) = embed(MODEL, &env);
    assert!(!ok);
    assert!(
        err.contains("hf:org/tiny-bert@main: the connection closed before all of tokenizer.json"),
        "{err}"
    );
    let snap = repo_dir.join("snapshots").join(SHA);
    assert!(snap.join("model.safetensors").is_file());
    assert!(!snap.join("tokenizer.json").exists());
    assert!(!snap.join("config.json").exists());
    assert!(!repo_dir.join("refs/main").exists());
    // Every blob that looks complete is a whole file; the cut one is only a .part.
    let whole: Vec<Vec<u8>> = tiny_bert().into_values().collect();
    for (name, bytes) in files_in(&repo_dir.join("blobs")) {
        if name.ends_with(".part") {
            assert_eq!(bytes.len(), 1000, "{name}");
        } else if !name.ends_with(".lock") {
            assert!(whole.contains(&bytes), "{name} is not a whole file");
        }
    }
    // The cache reader does not take the partial snapshot for the model.
    let offline = [("HF_HOME", home.as_str()), ("HF_HUB_OFFLINE", "1")];
    let (ok, _, err) = embed(MODEL, &offline);
    assert!(
        !ok && err.contains("not in the local Hugging Face cache"),
        "{err}"
    );

    // A healthy hub: the retry completes the snapshot.
    drop(hub);
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    let (ok, out, err) = embed(MODEL, &env);
    assert!(ok, "{err}");
    assert_eq!(out, local_embedding());
    assert!(
        hub.ranges("model.safetensors").is_empty(),
        "finished files are not fetched again"
    );
    assert!(!files_in(&repo_dir.join("blobs"))
        .keys()
        .any(|n| n.ends_with(".part")));
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let (_tmp, home, repo_dir) = home();
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    let cut = 30_000;
    hub.break_next("model.safetensors", cut);
    let (ok, _, err) = embed(MODEL, &env);
    assert!(!ok, "{err}");
    assert!(err.contains("the next attempt resumes from it"), "{err}");
    let parts: Vec<_> = files_in(&repo_dir.join("blobs"))
        .into_iter()
        .filter(|(n, _)| n.ends_with(".part"))
        .collect();
    assert_eq!(parts.len(), 1);
    let weights = std::fs::read(fixture("model.safetensors")).unwrap();
    assert_eq!(parts[0].1, weights[..cut]);

    let (ok, out, err) = embed(MODEL, &env);
    assert!(ok, "{err}");
    assert_eq!(out, local_embedding());
    // The metadata probe, the first transfer, the probe again, then the rest from byte `cut`.
    assert_eq!(
        hub.ranges("model.safetensors"),
        [
            "bytes=0-0",
            "bytes=0-",
            "bytes=0-0",
            &format!("bytes={cut}-")
        ]
    );
    let snap = repo_dir.join("snapshots").join(SHA);
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn pickle_only_repos_are_refused_by_name() {
    let (_tmp, home, _) = home();
    let hub = Hub::start(&[("org/bin-only", bin_only())]);
    let ep = hub.endpoint();
    let env = [("HF_HOME", home.as_str()), ("HF_ENDPOINT", ep.as_str())];
    let (ok, _, err) = embed("hf:org/bin-only", &env);
    assert!(!ok);
    for part in [
        "hf:org/bin-only@main",
        "pytorch_model.bin",
        "pretext reads only safetensors weights",
        "Convert them",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(
        hub.seen().iter().all(|s| !s.path.contains("/resolve/")),
        "nothing is downloaded"
    );
}

#[test]
fn hf_token_is_sent_as_a_bearer_token() {
    let (_tmp, home, _) = home();
    let hub = Hub::start(&[(REPO, tiny_bert())]);
    let ep = hub.endpoint();
    let env = [
        ("HF_HOME", home.as_str()),
        ("HF_ENDPOINT", ep.as_str()),
        ("HF_TOKEN", "hf_test_secret"),
    ];
    let (ok, _, err) = embed(MODEL, &env);
    assert!(ok, "{err}");
    let seen = hub.seen();
    assert!(seen.len() > 3);
    for s in seen {
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some("Bearer hf_test_secret"),
            "{}",
            s.path
        );
    }
}
