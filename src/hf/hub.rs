//! `hf:org/name[@rev]`: a model in the local Hugging Face cache (the layout
//! `huggingface_hub` writes: `models--org--name/{refs,snapshots,blobs}`), found through the
//! `hf-hub` crate.
//!
//! The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
//! pretext is built without a network client, so it reads the cache only — as if
//! `HF_HUB_OFFLINE=1` were always set; fetch a model first with
//! `huggingface-cli download org/name` (or `snapshot_download` in Python).

use std::path::PathBuf;

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

/// The snapshot directory holding `config.json` and `model.safetensors` for `r`.
pub fn snapshot_dir(r: &HubRef) -> Result<PathBuf> {
    let root = cache_dir();
    let repo = Repo::with_revision(r.repo.clone(), RepoType::Model, r.revision.clone());
    let repo_dir = root.join(repo.folder_name());
    // A commit hash names its snapshot directly; a branch or tag goes through refs/.
    let direct = repo_dir.join("snapshots").join(&r.revision);
    let found = if direct.join("config.json").is_file() {
        Some(direct)
    } else {
        Cache::new(root.clone())
            .repo(repo)
            .get("config.json")
            .and_then(|p| p.parent().map(PathBuf::from))
    };
    let offline = std::env::var("HF_HUB_OFFLINE").unwrap_or_default();
    found.ok_or_else(|| {
        Error::data(
            &repo_dir,
            format!(
                "hf:{}@{}: config.json is not in the local Hugging Face cache (looked for \
                 refs/{rev} or snapshots/{rev}; cache {}{}). pretext reads the cache only; \
                 fetch the model first, e.g. `huggingface-cli download {}`",
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
        )
    })
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
