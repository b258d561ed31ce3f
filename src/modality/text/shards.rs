//! The token cache: a training corpus tokenised once, as it is read, into binary shards that
//! later runs map into memory ([`memmap2`]) instead of reading and tokenising the corpus
//! again. Memory stays flat in the corpus size: tokenising holds a bounded batch of
//! documents, training reads a batch's blocks from the mapped shards ([`MappedBlocks`]).
//!
//! The shards hold the stream `pack::pack_blocks` cuts into blocks, before any cut, so one
//! cache serves every `max_len`: the documents' token ids without specials, the separator
//! between documents, the words numbered over the whole stream. A folder per cache:
//!
//! - `shard-NNNNN.ids`: the token ids, `u32` little-endian;
//! - `shard-NNNNN.words`: each token's word, `u32` little-endian, `u32::MAX` for none
//!   (a separator);
//! - `shard-NNNNN.docs`: where each document starts in the stream, `u64` little-endian;
//! - `manifest.json`: what the cache was made from ([`Key`]) and each shard's counts.
//!
//! The folder is named after a hash of its [`Key`]: the tokenizer (its JSON serialisation),
//! the input files' paths, sizes and modification times, the format and the limit. A changed
//! file or tokenizer gives a new folder; the old one stays until deleted. A cache is built in
//! a hidden staging folder and renamed into place when complete, so an interrupted run never
//! leaves a cache that looks complete; staging folders of processes no longer running are
//! removed by the next build.
//!
//! The cache root is `text-tokens/` in the data cache (`$PRETEXT_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/pretext`, else `~/.cache/pretext`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::corpus::Document;
pub use super::mapped::MappedBlocks;
use super::stream::{Corpus, FileId, Format};
use super::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// Bumped when the files' layout or the stream's rule changes, so old caches are not read.
pub const CACHE_VERSION: u32 = 1;
/// A shard is closed after the document that brings it to this many tokens (64 MiB of ids).
const SHARD_TOKENS: u64 = 1 << 24;
/// Documents are tokenised in batches of about this much text...
const BATCH_BYTES: usize = 8 << 20;
/// ...or this many documents.
const BATCH_DOCS: usize = 1024;
/// A token that belongs to no word.
const NO_WORD: u32 = u32::MAX;
const MANIFEST: &str = "manifest.json";
const STAGING: &str = ".building";

/// What a cache is made from; equal keys mean equal streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub version: u32,
    /// SHA-256 of the tokenizer's compact JSON.
    pub tokenizer_sha256: String,
    pub format: Format,
    pub limit: Option<usize>,
    pub inputs: Vec<FileId>,
}

impl Key {
    pub fn new(corpus: &Corpus, tok: &TextTokenizer) -> Result<Key> {
        let json = tok.inner().to_string(false).map_err(|e| {
            Error::data(
                "tokenizer",
                format!("cannot serialise the tokenizer to key the token cache: {e}"),
            )
        })?;
        Ok(Key {
            version: CACHE_VERSION,
            tokenizer_sha256: hex(&Sha256::digest(json.as_bytes())),
            format: corpus.format.clone(),
            limit: corpus.limit,
            inputs: corpus.identity()?,
        })
    }

    /// The cache folder's name: the first 16 bytes of the key's SHA-256, in hex.
    pub fn folder_name(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        hex(&Sha256::digest(json.as_bytes())[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardInfo {
    tokens: u64,
    documents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    key: Key,
    tokens: u64,
    documents: u64,
    words: u64,
    shards: Vec<ShardInfo>,
}

fn shard_file(dir: &Path, i: usize, ext: &str) -> PathBuf {
    dir.join(format!("shard-{i:05}.{ext}"))
}

/// The default cache root: `text-tokens/` in the data cache
/// ([`crate::modality::files::cache_root`]).
pub fn cache_root() -> PathBuf {
    crate::modality::files::cache_root().join("text-tokens")
}

/// A tokenised corpus, mapped: the stream of [`pack::pack_blocks`] before it is cut.
pub struct TokenStream {
    dir: PathBuf,
    manifest: Manifest,
    /// Each shard's first token in the stream, its ids and its words.
    shards: Vec<(u64, Mmap, Mmap)>,
    reused: bool,
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("dir", &self.dir)
            .field("tokens", &self.manifest.tokens)
            .field("documents", &self.manifest.documents)
            .field("reused", &self.reused)
            .finish()
    }
}

impl TokenStream {
    /// The cache of `corpus` under `tok` in `root`: reused when it exists, else built (the
    /// corpus read and tokenised one batch of documents at a time).
    pub fn open_or_build(root: &Path, corpus: &Corpus, tok: &TextTokenizer) -> Result<Self> {
        Self::open_or_build_sharded(root, corpus, tok, SHARD_TOKENS)
    }

    /// [`Self::open_or_build`], a new shard started after the document that brings the
    /// current one to `shard_tokens` tokens (tests make small shards).
    pub fn open_or_build_sharded(
        root: &Path,
        corpus: &Corpus,
        tok: &TextTokenizer,
        shard_tokens: u64,
    ) -> Result<Self> {
        let key = Key::new(corpus, tok)?;
        let dir = root.join(key.folder_name());
        if dir.join(MANIFEST).is_file() {
            match Self::open(&dir, &key) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    eprintln!(
                        "the token cache {} is unusable ({e}); rebuilding it",
                        dir.display()
                    );
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                }
            }
        }
        if dir.exists() && !dir.join(MANIFEST).is_file() {
            // Not made by a build (those rename complete folders into place): in the way.
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::create_dir_all(root).map_err(|e| {
            Error::data(
                root,
                format!(
                    "cannot create the token cache folder ({e}); set PRETEXT_CACHE_DIR to a \
                     writable folder"
                ),
            )
        })?;
        remove_stale_staging(root)?;
        // Unique per build, also between threads of one process (tests run in parallel).
        static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let staging = root.join(format!(
            ".{}-{}{STAGING}{}",
            key.folder_name(),
            BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::process::id()
        ));
        let built = build(&staging, corpus, tok, &key, shard_tokens).and_then(|()| {
            // A file changed while it was read: its cache would be keyed by what it was.
            if Key::new(corpus, tok)? != key {
                return Err(Error::data(
                    &corpus.files[0],
                    "the corpus changed while it was being tokenised; run again",
                ));
            }
            match std::fs::rename(&staging, &dir) {
                Ok(()) => Ok(()),
                // Another run built the same cache first: use theirs.
                Err(_) if dir.join(MANIFEST).is_file() => {
                    std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))
                }
                Err(e) => Err(Error::io(&dir, e)),
            }
        });
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let mut s = Self::open(&dir, &key)?;
        s.reused = false;
        Ok(s)
    }

    /// Maps a complete cache folder whose manifest has `key`.
    fn open(dir: &Path, key: &Key) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = crate::input::read_to_string(&path)?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::data(&path, format!("not a token cache manifest: {e}")))?;
        if &manifest.key != key {
            return Err(Error::data(
                &path,
                "made from other inputs than its folder name says; delete the folder",
            ));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut start = 0;
        for (i, info) in manifest.shards.iter().enumerate() {
            let ids = map_exact(&shard_file(dir, i, "ids"), info.tokens * 4)?;
            let words = map_exact(&shard_file(dir, i, "words"), info.tokens * 4)?;
            let docs = shard_file(dir, i, "docs");
            let len = crate::input::check_regular(&docs)?.len();
            if len != info.documents * 8 {
                return Err(size_error(&docs, info.documents * 8, len));
            }
            shards.push((start, ids, words));
            start += info.tokens;
        }
        if start != manifest.tokens {
            return Err(Error::data(
                &path,
                format!(
                    "its shards hold {start} tokens, it says {}",
                    manifest.tokens
                ),
            ));
        }
        Ok(TokenStream {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            reused: true,
        })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tokens in the stream (separators included).
    pub fn len(&self) -> u64 {
        self.manifest.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.tokens == 0
    }

    /// Documents that gave at least one token.
    pub fn documents(&self) -> u64 {
        self.manifest.documents
    }

    /// Whether the cache existed before (`false`: this call built it).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Appends the stream's tokens `range` (within `0..len()`) to `ids` and `words`.
    pub fn read(
        &self,
        range: std::ops::Range<u64>,
        ids: &mut Vec<u32>,
        words: &mut Vec<Option<u32>>,
    ) {
        // The first shard holding `range.start`, then on through the shards it spans.
        let first = self.shards.partition_point(|s| s.0 <= range.start);
        for (start, id_map, word_map) in &self.shards[first.saturating_sub(1)..] {
            if *start >= range.end {
                break;
            }
            let from = (range.start.max(*start) - start) as usize;
            let to = ((range.end - start) as usize).min(id_map.len() / 4);
            let u32s = |m: &[u8]| {
                m[from * 4..to * 4]
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<u32>>()
            };
            ids.extend(u32s(id_map));
            words.extend(
                u32s(word_map)
                    .into_iter()
                    .map(|w| (w != NO_WORD).then_some(w)),
            );
        }
    }
}

fn size_error(path: &Path, expected: u64, found: u64) -> Error {
    Error::data(
        path,
        format!("holds {found} bytes, its manifest says {expected}; the cache is damaged"),
    )
}

/// Maps a shard file that must hold exactly `bytes` bytes (an empty one is not mapped).
fn map_exact(path: &Path, bytes: u64) -> Result<Mmap> {
    let file = crate::input::open(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != bytes {
        return Err(size_error(path, bytes, len));
    }
    // SAFETY: the cache's files are written once, in a staging folder, and never modified
    // after the folder is renamed into place (a changed input gets a new folder). A file
    // truncated by hand while mapped would fault; that is the price of not reading it whole.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Removes the staging folders of builds whose process is no longer running.
fn remove_stale_staging(root: &Path) -> Result<()> {
    crate::tensor_io::remove_stale_dirs(root, STAGING, "an interrupted tokenisation")
}

/// Tokenises `corpus` into shards in `dir` (created), manifest last.
fn build(
    dir: &Path,
    corpus: &Corpus,
    tok: &TextTokenizer,
    key: &Key,
    shard_tokens: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut w = StreamWriter {
        dir: dir.to_path_buf(),
        sep: tok.sep_id(),
        shard_tokens: shard_tokens.max(1),
        open: None,
        shards: Vec::new(),
        tokens: 0,
        documents: 0,
        next_word: 0,
    };
    let mut batch: Vec<Document> = Vec::new();
    let mut bytes = 0;
    for doc in corpus.documents() {
        let doc = doc?;
        bytes += doc.text.len();
        batch.push(doc);
        if bytes >= BATCH_BYTES || batch.len() >= BATCH_DOCS {
            w.push(tok, &batch)?;
            batch.clear();
            bytes = 0;
        }
    }
    w.push(tok, &batch)?;
    w.close_shard()?;
    let manifest = Manifest {
        key: key.clone(),
        tokens: w.tokens,
        documents: w.documents,
        words: u64::from(w.next_word),
        shards: w.shards,
    };
    let json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::data(dir, format!("cannot write the manifest: {e}")))?;
    crate::tensor_io::write_atomic(&dir.join(MANIFEST), json.as_bytes())
}

/// The shard being written: its ids, words and document starts.
struct OpenShard {
    files: [(PathBuf, BufWriter<File>); 3],
    info: ShardInfo,
}

struct StreamWriter {
    dir: PathBuf,
    sep: u32,
    shard_tokens: u64,
    open: Option<OpenShard>,
    shards: Vec<ShardInfo>,
    tokens: u64,
    documents: u64,
    next_word: u32,
}

impl StreamWriter {
    /// Appends documents to the stream as `pack_blocks` does: a separator between
    /// documents, documents without tokens skipped, words numbered on from the last.
    fn push(&mut self, tok: &TextTokenizer, docs: &[Document]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let encoded = tok.encode_batch(docs, false)?;
        for (enc, doc) in encoded.iter().zip(docs).filter(|(e, _)| !e.is_empty()) {
            let too_many = || {
                Error::data(
                    &doc.origin.path,
                    "the corpus has more than 4 294 967 294 words, more than word ids \
                     can number; use `limit` or a smaller corpus",
                )
            };
            let needs_sep = self.tokens > 0;
            let dir = self.dir.clone();
            let shard = match &mut self.open {
                Some(s) => s,
                None => self
                    .open
                    .insert(OpenShard::create(&dir, self.shards.len())?),
            };
            if needs_sep {
                shard.put(self.sep, NO_WORD)?;
            }
            let start = self.tokens + u64::from(needs_sep);
            write(&mut shard.files[2], &start.to_le_bytes())?;
            shard.info.documents += 1;
            let mut max_word = None;
            for (&id, &w) in enc.ids.iter().zip(&enc.word_ids) {
                let word = match w {
                    Some(w) => self
                        .next_word
                        .checked_add(w)
                        .filter(|&g| g != NO_WORD)
                        .ok_or_else(too_many)?,
                    None => NO_WORD,
                };
                shard.put(id, word)?;
                max_word = max_word.max(w);
            }
            let added = enc.len() as u64 + u64::from(needs_sep);
            self.tokens += added;
            self.documents += 1;
            if let Some(m) = max_word {
                self.next_word = self
                    .next_word
                    .checked_add(m + 1)
                    .filter(|&g| g != NO_WORD)
                    .ok_or_else(too_many)?;
            }
            if self
                .open
                .as_ref()
                .is_some_and(|s| s.info.tokens >= self.shard_tokens)
            {
                self.close_shard()?;
            }
        }
        Ok(())
    }

    /// Flushes and syncs the open shard, if any.
    fn close_shard(&mut self) -> Result<()> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        for (path, f) in shard.files {
            let f = f
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        self.shards.push(shard.info);
        Ok(())
    }
}

fn write((path, f): &mut (PathBuf, BufWriter<File>), bytes: &[u8]) -> Result<()> {
    f.write_all(bytes).map_err(|e| Error::io(&*path, e))
}

impl OpenShard {
    fn create(dir: &Path, i: usize) -> Result<Self> {
        let file = |ext: &str| -> Result<(PathBuf, BufWriter<File>)> {
            let path = shard_file(dir, i, ext);
            let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            Ok((path, BufWriter::with_capacity(1 << 20, f)))
        };
        Ok(OpenShard {
            files: [file("ids")?, file("words")?, file("docs")?],
            info: ShardInfo {
                tokens: 0,
                documents: 0,
            },
        })
    }

    fn put(&mut self, id: u32, word: u32) -> Result<()> {
        write(&mut self.files[0], &id.to_le_bytes())?;
        write(&mut self.files[1], &word.to_le_bytes())?;
        self.info.tokens += 1;
        Ok(())
    }
}
