//! Downloads `hf:org/name[@rev]` into the local Hugging Face cache, in the layout
//! `huggingface_hub` writes (`models--org--name/{blobs,snapshots/<commit>,refs/<rev>}`), so
//! [`super::hub`] and Python read what is fetched here.
//!
//! The transfer is `hf-hub`'s blocking client: it asks `$HF_ENDPOINT/{repo}/resolve/{commit}/{file}`
//! for the file's commit, ETag and size, downloads into `blobs/<etag>.part` (resuming a `.part`
//! left by an interrupted attempt with `Range: bytes=N-`), renames it to `blobs/<etag>` and links
//! `snapshots/<commit>/{file}` to it. On top of it this module
//!
//! - lists the repository once (`/api/models/{repo}/revision/{rev}?blobs=true`), which pins the
//!   commit, names the files to fetch ([`select`]) and gives each file's size;
//! - fetches only what pretext reads: the safetensors weights (sharded too: the index and the
//!   shards it names, [`shard_names`]), tokenizer files, `preprocessor_config.json`, and
//!   `config.json` *last*, so a snapshot with `config.json` is complete;
//! - checks each file's size against the listing and removes a file that does not match;
//! - writes `refs/<rev>` only once every file is in place.
//!
//! A transfer that breaks off (fewer bytes than `Content-Length`) fails in `ureq` before the
//! rename, so only the `.part` file is left, and the next attempt resumes it.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use super::hub::HubRef;
use crate::error::{Error, Result};

/// The hub `HF_ENDPOINT` replaces.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Written last: its presence in a snapshot means the download finished.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// Fetched when the repository has them: what the tokenizers and image/audio
/// preprocessors read.
pub const EXTRAS: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];
/// Weights pretext does not read (pickle and other framework formats).
const OTHER_WEIGHTS: [&str; 6] = [".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"];

/// `$HF_ENDPOINT` (without a trailing `/`), else the public hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

/// What the hub says a revision holds (`/api/models/{repo}/revision/{rev}?blobs=true`).
#[derive(Debug, Deserialize)]
struct Listing {
    /// The commit the revision names.
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    size: u64,
}

impl Listing {
    fn size(&self, file: &str) -> Option<u64> {
        let s = self.siblings.iter().find(|s| s.rfilename == file)?;
        s.size.or(s.lfs.as_ref().map(|l| l.size))
    }
}

/// The files of a repository (names as the hub lists them) to fetch, in order: the weights
/// (`model.safetensors`, or the shard index, whose shards follow it), the tokenizer and
/// preprocessor files present, `config.json` last. Refuses a repository without
/// `config.json` or without safetensors weights; `model` names it in the message.
pub fn select(model: &str, files: &[String]) -> Result<Vec<String>> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let err = |message: String| Error::Hub {
        model: model.into(),
        message,
    };
    if !has(CONFIG) {
        return Err(err(format!(
            "the repository has no {CONFIG}, so it is not a transformers model pretext can read \
             (files: {})",
            preview(files)
        )));
    }
    let weights = if has(WEIGHTS) {
        WEIGHTS
    } else if has(WEIGHTS_INDEX) {
        WEIGHTS_INDEX
    } else {
        let other: Vec<String> = files
            .iter()
            .filter(|f| OTHER_WEIGHTS.iter().any(|ext| f.ends_with(ext)))
            .cloned()
            .collect();
        return Err(err(if other.is_empty() {
            format!(
                "the repository has no {WEIGHTS} (or {WEIGHTS_INDEX}); files: {}",
                preview(files)
            )
        } else {
            format!(
                "the repository has weights only as {}; pretext reads only safetensors \
                 weights ({WEIGHTS}). Convert them (in Python: load the model with \
                 `from_pretrained` and `save_pretrained(dir, safe_serialization=True)`), then \
                 give that directory as the model",
                preview(&other)
            )
        }));
    };
    let mut out = vec![weights.to_string()];
    out.extend(EXTRAS.iter().filter(|f| has(f)).map(|f| f.to_string()));
    out.push(CONFIG.into());
    Ok(out)
}

fn preview(files: &[String]) -> String {
    let mut s = files.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if files.len() > 8 {
        s.push_str(&format!(", … ({} in all)", files.len()));
    }
    if s.is_empty() {
        s = "none".into();
    }
    s
}

/// The shard files a `model.safetensors.index.json` names (its `weight_map` values), each
/// once, in order. `path` names the index in errors.
pub fn shard_names(text: &str, path: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_str(text)
        .map_err(|e| Error::data(path, format!("not a safetensors shard index: {e}")))?;
    let mut shards: Vec<String> = index.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(Error::data(path, "`weight_map` names no shard files"));
    }
    // The names become paths in the cache: plain relative names only.
    let plain = |s: &str| {
        s.ends_with(".safetensors")
            && !s.starts_with('/')
            && !s.contains('\\')
            && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
    };
    if let Some(bad) = shards.iter().find(|s| !plain(s)) {
        return Err(Error::data(
            path,
            format!(
                "`weight_map` names `{bad}`, expected a .safetensors file name in the repository"
            ),
        ));
    }
    Ok(shards)
}

/// Downloads what [`select`] picks for `r` into the cache at `root`, then points
/// `refs/<rev>` at the commit.
pub fn snapshot(r: &HubRef, root: &Path) -> Result<()> {
    let model = format!("hf:{}@{}", r.repo, r.revision);
    let endpoint = endpoint();
    // The token file `huggingface-cli login` writes ($HF_HOME/token), unless HF_TOKEN is set.
    let mut builder = ApiBuilder::from_cache(Cache::new(root.to_path_buf()))
        .with_endpoint(endpoint.clone())
        .with_progress(true)
        .with_user_agent("pretext", env!("CARGO_PKG_VERSION"));
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| Error::Hub {
        model: model.clone(),
        message: format!("cannot set up the download client: {e}"),
    })?;
    let hub = Hub {
        model,
        endpoint,
        repo_dir: root.join(Repo::model(r.repo.clone()).folder_name()),
    };

    let listing = hub.list(&api.repo(Repo::with_revision(
        r.repo.clone(),
        RepoType::Model,
        r.revision.clone(),
    )))?;
    let names: Vec<String> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .collect();
    let files = select(&hub.model, &names)?;
    let sha = &listing.sha;
    let commit_ref = hub.repo_dir.join("refs").join(sha);
    let had_commit_ref = commit_ref.exists();
    let snap = hub.repo_dir.join("snapshots").join(sha);
    eprintln!(
        "{}: downloading into {} (commit {})",
        hub.model,
        snap.display(),
        sha
    );

    // Files are asked for at the commit, so a branch that moves meanwhile cannot mix two.
    let repo = api.repo(Repo::with_revision(
        r.repo.clone(),
        RepoType::Model,
        sha.clone(),
    ));
    for file in &files {
        hub.fetch(&repo, &snap, file, listing.size(file))?;
        if file == WEIGHTS_INDEX {
            let path = snap.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            for shard in shard_names(&text, &path)? {
                hub.fetch(&repo, &snap, &shard, listing.size(&shard))?;
            }
        }
    }

    // hf-hub records the commit it downloaded at as refs/<commit>, which Python does not
    // write; the revision asked for is the ref.
    if !had_commit_ref {
        let _ = std::fs::remove_file(&commit_ref);
    }
    if &r.revision != sha {
        let ref_path = hub.repo_dir.join("refs").join(&r.revision);
        if let Some(dir) = ref_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&ref_path, sha).map_err(|e| Error::io(&ref_path, e))?;
    }
    Ok(())
}

/// One repository on one hub, for requests and their messages.
struct Hub {
    /// `hf:org/name@rev`, naming the model in messages.
    model: String,
    endpoint: String,
    /// `<cache>/models--org--name`.
    repo_dir: PathBuf,
}

impl Hub {
    fn err(&self, message: String) -> Error {
        Error::Hub {
            model: self.model.clone(),
            message,
        }
    }

    /// The revision's commit and files.
    fn list(&self, repo: &ApiRepo) -> Result<Listing> {
        let request = repo.info_request().query("blobs", "true");
        let url = request.url().to_string();
        let response = request.call().map_err(|e| self.request_error(e, &url))?;
        let listing: Listing = response.into_json().map_err(|e| {
            self.err(format!(
                "{url} did not answer with the hub's repository listing ({e}); is HF_ENDPOINT \
                 ({}) a Hugging Face hub?",
                self.endpoint
            ))
        })?;
        let sha_ok =
            !listing.sha.is_empty() && listing.sha.chars().all(|c| c.is_ascii_alphanumeric());
        if !sha_ok {
            return Err(self.err(format!(
                "{url} names the commit `{}`, expected a commit hash",
                listing.sha
            )));
        }
        Ok(listing)
    }

    /// Downloads `file` into `snap` (unless an earlier attempt already did), and checks
    /// its size against the listing's.
    fn fetch(&self, repo: &ApiRepo, snap: &Path, file: &str, size: Option<u64>) -> Result<()> {
        let pointer = snap.join(file);
        if pointer.is_file() {
            return Ok(());
        }
        let path = repo
            .download(file)
            .map_err(|e| self.download_error(e, file, &repo.url(file)))?;
        if path != pointer {
            let _ = std::fs::remove_file(&path);
            return Err(self.err(format!(
                "{} answered {file} for another commit than the listing's ({}); try again, \
                 or name a commit: hf:org/name@COMMIT",
                self.endpoint,
                snap.display()
            )));
        }
        let got = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        match size {
            Some(expected) if got != expected => {
                // Neither the link nor its blob may look complete to a later run.
                if let Ok(blob) = std::fs::canonicalize(&path) {
                    let _ = std::fs::remove_file(blob);
                }
                let _ = std::fs::remove_file(&path);
                Err(self.err(format!(
                    "{file} arrived with {got} bytes, but the hub lists {expected}; the file was \
                     removed from the cache, try again"
                )))
            }
            _ => Ok(()),
        }
    }

    fn request_error(&self, e: ureq::Error, url: &str) -> Error {
        let (repo, revision) = self
            .model
            .trim_start_matches("hf:")
            .split_once('@')
            .unwrap_or((&self.model, "main"));
        match e {
            ureq::Error::Status(404, response) => {
                let code = response.header("x-error-code").unwrap_or_default();
                self.err(if code == "RevisionNotFound" {
                    format!(
                        "{} has no revision `{revision}` in the repository {repo} (HTTP 404 for \
                         {url}); name an existing branch, tag or commit",
                        self.endpoint
                    )
                } else {
                    format!(
                        "{} has no model repository {repo} (HTTP 404 for {url}); check the name \
                         (org/name, as in the model page's address)",
                        self.endpoint
                    )
                })
            }
            ureq::Error::Status(code @ (401 | 403), _) => {
                let token = if std::env::var("HF_TOKEN").is_ok_and(|t| !t.is_empty()) {
                    "the token in HF_TOKEN may not read it"
                } else {
                    "set HF_TOKEN to a token that may read it"
                };
                self.err(format!(
                    "{} refused access to {repo} (HTTP {code} for {url}): the repository is \
                     private, gated or does not exist; {token}",
                    self.endpoint
                ))
            }
            ureq::Error::Status(code, response) => {
                let body = response.into_string().unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                self.err(format!("{url} answered HTTP {code}: {body}"))
            }
            ureq::Error::Transport(t) => self.err(format!(
                "cannot reach {} ({t}), and the model is not in the local cache; check the \
                 network or HF_ENDPOINT, or fetch the model elsewhere into the cache and set \
                 HF_HUB_OFFLINE=1",
                self.endpoint
            )),
        }
    }

    fn download_error(&self, e: ApiError, file: &str, url: &str) -> Error {
        let blobs = self.repo_dir.join("blobs");
        match e {
            ApiError::RequestError(e) => self.request_error(*e, url),
            ApiError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.err(format!(
                    "the connection closed before all of {file} arrived ({e}); the part received \
                     is kept in {} (a .part file) and the next attempt resumes from it",
                    blobs.display()
                ))
            }
            ApiError::IoError(e) => self.err(format!(
                "downloading {file} from {url} failed: {e}; what arrived is kept in {} (a .part \
                 file) and the next attempt resumes from it",
                blobs.display()
            )),
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => self.err(format!(
                "{url} answered without a valid `{h}` header; is HF_ENDPOINT ({}) a Hugging Face \
                 hub?",
                self.endpoint
            )),
            ApiError::InvalidResume => self.err(format!(
                "a partial download of {file} in {} (a .part file) is longer than the file; \
                 delete the .part files there and try again",
                blobs.display()
            )),
            ApiError::LockAcquisition(lock) => self.err(format!(
                "another process is downloading {file} ({} is locked); wait for it to finish",
                lock.display()
            )),
            other => self.err(format!("downloading {file} from {url} failed: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_takes_weights_first_extras_present_and_config_last() {
        let files = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tf_model.h5",
            "tokenizer.json",
            "vocab.txt",
            "onnx/model.onnx",
        ]);
        assert_eq!(
            select("hf:a/b@main", &files).unwrap(),
            names(&[
                "model.safetensors",
                "tokenizer.json",
                "vocab.txt",
                "config.json"
            ])
        );
        let sharded = names(&[
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "preprocessor_config.json",
        ]);
        assert_eq!(
            select("hf:a/b@main", &sharded).unwrap(),
            names(&[
                "model.safetensors.index.json",
                "preprocessor_config.json",
                "config.json"
            ])
        );
    }

    #[test]
    fn select_refuses_pickle_only_and_configless_repos() {
        let e = select(
            "hf:org/old@main",
            &names(&["config.json", "pytorch_model.bin", "vocab.txt"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("hf:org/old@main: "), "{e}");
        assert!(e.contains("pytorch_model.bin"), "{e}");
        assert!(e.contains("only safetensors"), "{e}");
        assert!(e.contains("safe_serialization=True"), "{e}");
        let e = select("hf:org/x@main", &names(&["model.safetensors"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no config.json"), "{e}");
        let e = select("hf:org/x@main", &names(&["config.json"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no model.safetensors"), "{e}");
    }

    #[test]
    fn shard_names_lists_each_shard_once_and_rejects_paths_outside() {
        let index = r#"{"metadata": {"total_size": 10}, "weight_map": {
            "a.weight": "model-00002-of-00002.safetensors",
            "b.weight": "model-00001-of-00002.safetensors",
            "c.weight": "model-00002-of-00002.safetensors"}}"#;
        let p = Path::new("model.safetensors.index.json");
        assert_eq!(
            shard_names(index, p).unwrap(),
            names(&[
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ])
        );
        for bad in ["../../x.safetensors", "/etc/x.safetensors", "a.bin"] {
            let text = format!(r#"{{"weight_map": {{"w": "{bad}"}}}}"#);
            let e = shard_names(&text, p).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(shard_names(r#"{"weight_map": {}}"#, p).is_err());
        assert!(shard_names("[]", p)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors shard index"));
    }
}
