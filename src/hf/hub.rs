//! `hf:org/name[@rev]`: a model in the local Hugging Face cache (the layout
//! `huggingface_hub` writes: `models--org--name/{refs,snapshots,blobs}`), found through the
//! `hf-hub` crate, and downloaded there first ([`super::download`]) when it is missing and
//! `HF_HUB_OFFLINE` is not set.
//!
//! The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// A model on the hub, at a revision (branch, tag or commit; default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub revision: String,
}

impl HubRef {
    /// Parses `hf:org/name[@rev]`; `None` when `s` does not start with `hf:`.
    pub fn parse(s: &str) -> Option<Result<Self>> {
        let rest = s.strip_prefix("hf:")?;
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (rest, "main"),
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let ok = matches!(repo.split('/').collect::<Vec<_>>().as_slice(),
            [name] | [_, name] if valid(name))
            && repo.split('/').all(valid)
            && !revision.is_empty();
        Some(if ok {
            Ok(Self {
                repo: repo.into(),
                revision: revision.into(),
            })
        } else {
            Err(Error::Usage(format!(
                "`{s}`: expected hf:org/name or hf:org/name@revision"
            )))
        })
    }
}

/// The hub cache directory, honouring `HF_HUB_CACHE` and `HF_HOME`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => Cache::from_env().path().clone(),
    }
}

/// Whether `HF_HUB_OFFLINE` forbids the network (`1`, `true`, `yes`, `on`, as in
/// `huggingface_hub`).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The snapshot directory holding `config.json` and the weights for `r`: from the cache,
/// else downloaded into it ([`super::download`]) unless `HF_HUB_OFFLINE` is set.
///
/// A model already in the cache is used as it is, without asking the hub whether a branch
/// has moved; name a commit (`@rev`) to pin one.
pub fn snapshot_dir(r: &HubRef) -> Result<PathBuf> {
    let root = cache_dir();
    if let Some(dir) = cached_snapshot(&root, r) {
        return Ok(dir);
    }
    if !offline() {
        super::download::snapshot(r, &root)?;
        if let Some(dir) = cached_snapshot(&root, r) {
            return Ok(dir);
        }
    }
    let repo_dir = root.join(Repo::model(r.repo.clone()).folder_name());
    let offline = std::env::var("HF_HUB_OFFLINE").unwrap_or_default();
    Err(Error::data(
        &repo_dir,
        format!(
            "hf:{}@{}: config.json is not in the local Hugging Face cache (looked for \
             refs/{rev} or snapshots/{rev}; cache {}{}). Unset HF_HUB_OFFLINE to download it, \
             or fetch it first, e.g. `huggingface-cli download {}`",
            r.repo,
            r.revision,
            root.display(),
            if offline.is_empty() {
                String::new()
            } else {
                format!(", HF_HUB_OFFLINE={offline}")
            },
            r.repo,
            rev = r.revision,
        ),
    ))
}

/// The snapshot of `r` in the cache at `root`, when it holds `config.json` and weights
/// (`model.safetensors`, a shard index, or a `pytorch_model.bin` the reader then refuses
/// by name). A commit names its snapshot directly; a branch or tag goes through `refs/`.
fn cached_snapshot(root: &Path, r: &HubRef) -> Option<PathBuf> {
    let repo = Repo::with_revision(r.repo.clone(), RepoType::Model, r.revision.clone());
    let direct = root
        .join(repo.folder_name())
        .join("snapshots")
        .join(&r.revision);
    let dir = if direct.join("config.json").is_file() {
        direct
    } else {
        Cache::new(root.to_path_buf())
            .repo(repo)
            .get("config.json")?
            .parent()?
            .to_path_buf()
    };
    let weights = [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ];
    weights.iter().any(|w| dir.join(w).is_file()).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repo_and_revision() {
        let r = HubRef::parse("hf:google/vit-base-patch16-224")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("google/vit-base-patch16-224", "main")
        );
        let r = HubRef::parse("hf:facebook/vit-mae-base@v1.0")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("facebook/vit-mae-base", "v1.0")
        );
        assert!(HubRef::parse("runs/quickstart").is_none());
        for bad in ["hf:", "hf:a/b/c", "hf:a/b@", "hf:/b", "hf:a b/c"] {
            assert!(HubRef::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
