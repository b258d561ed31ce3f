//! The on-disk spectrogram cache behind [`super::clips::ClipSet::load`]: a split's log-mel
//! spectrograms are computed once, streamed to one binary file (a bounded number of clips in
//! memory at a time, each chunk featurised in parallel) and memory-mapped, so a training set
//! costs page cache, not heap, whatever its size.
//!
//! # Where and under what name
//! `audio/` in the data cache: `$PRETEXT_CACHE_DIR/audio`, else `$XDG_CACHE_HOME/pretext/audio`, else
//! `~/.cache/pretext/audio`, else `<temp dir>/pretext-cache/audio` ([`default_dir`]). A file
//! is named `spec-<key>.f32`, the key hashing [`FORMAT_VERSION`], the crate version, the mel
//! settings, the frame count and every input file's absolute path, size and modification
//! time ([`key`]): a changed file or setting makes a new cache, an unchanged split reuses
//! its cache without reading a WAV. Old caches are not removed; deleting the folder is safe.
//!
//! # File layout
//! A 64-byte header, then `f32` values `[N, n_mels, frames]` row-major in the writing
//! machine's byte order:
//!
//! | bytes  | field                                                      |
//! |--------|------------------------------------------------------------|
//! | 0..8   | magic `PXSPEC\0\0`                                         |
//! | 8..12  | format version (u32 LE), [`FORMAT_VERSION`]                |
//! | 12..16 | byte-order mark: `0x01020304` as a native u32               |
//! | 16..40 | N, n_mels, frames (u64 LE each)                            |
//! | 40..64 | zero                                                       |
//!
//! After the values, `N` u32 (little-endian): each clip's length in samples, at most the
//! clip length the spectrograms were cut to. Frames past it are padding, which the
//! encoder's padding mask leaves out ([`super::clips::AudioFeatures::frame_mask`]).
//!
//! A cache is written to a temporary file in the same folder and renamed into place once
//! complete, so a killed run never leaves a file that looks complete. A file whose header
//! or length does not match is an error naming it and saying to delete it (it is not
//! silently recomputed: a damaged cache file means something else is wrong with the disk).

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use memmap2::Mmap;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::dataset::AudioItem;
use super::mel::MelConfig;
use crate::error::{Error, Result};

/// Bump when the file layout or the spectrogram computation changes: old caches are then
/// ignored (a new key), not misread.
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"PXSPEC\0\0";
const HEADER: usize = 64;
const BYTE_ORDER: u32 = 0x0102_0304;
/// Clips featurised (in parallel) and held at a time while a cache is written.
pub const CHUNK: usize = 256;
/// Temporary files older than this are left over from killed runs and removed.
const STALE: Duration = Duration::from_secs(3600);

/// A memory-mapped cache file: `clips` spectrograms of `clip_size` values each, and their
/// lengths.
#[derive(Debug, Clone)]
pub struct Mapped {
    map: Arc<Mmap>,
    /// The cache file.
    pub path: PathBuf,
    /// Whether the file was already there (nothing was computed).
    pub reused: bool,
    clips: usize,
    /// Clips in the file (`clips` until [`Mapped::truncate`]).
    stored: usize,
    clip_size: usize,
}

impl Mapped {
    /// Every value, `[clips * clip_size]`.
    pub fn values(&self) -> &[f32] {
        let bytes = &self.map[HEADER..];
        // SAFETY: every bit pattern is a valid f32; `align_to` puts any misaligned bytes in
        // the prefix, which is empty since the map is page-aligned and HEADER is a multiple
        // of 4 (checked below).
        let (prefix, values, _) = unsafe { bytes.align_to::<f32>() };
        assert!(
            prefix.is_empty(),
            "spectrogram cache map is not 4-byte aligned"
        );
        &values[..self.clips * self.clip_size]
    }

    /// Each clip's length in samples (what of it is not padding).
    pub fn lengths(&self) -> Vec<u32> {
        let start = HEADER + 4 * self.stored * self.clip_size;
        self.map[start..start + 4 * self.clips]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Calls `f` on every value in order, a block at a time, read from the file rather than
    /// through the map: a pass over everything (normalisation statistics) then leaves the
    /// process's resident memory as it was (pages of the map, once touched, count in it).
    pub fn for_each_block(&self, mut f: impl FnMut(&[f32])) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(HEADER as u64)).map_err(io)?;
        let mut left = self.clips * self.clip_size * 4;
        let mut bytes = vec![0u8; left.min(1 << 22)];
        let mut values = Vec::with_capacity(bytes.len() / 4);
        while left > 0 {
            let block = &mut bytes[..left.min(1 << 22)];
            file.read_exact(block).map_err(io)?;
            values.clear();
            values.extend(
                block
                    .chunks_exact(4)
                    .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            );
            f(&values);
            left -= block.len();
        }
        Ok(())
    }

    /// Keeps the first `n` clips (the file is untouched).
    pub fn truncate(&mut self, n: usize) {
        self.clips = self.clips.min(n);
    }
}

/// The folder caches go in when the caller names none: `audio/` in the data cache
/// ([`crate::modality::files::cache_root`]).
pub fn default_dir() -> PathBuf {
    crate::modality::files::cache_root().join("audio")
}

/// A key hasher: SHA-256, each field length-prefixed so that ("ab", "c") and ("a", "bc")
/// differ; the first 16 bytes, as 32 hex digits.
struct KeyHash(Sha256);

impl KeyHash {
    fn new() -> Self {
        KeyHash(Sha256::new())
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn hex(self) -> String {
        self.0.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The cache key of `items` featurised with `mel` into `frames` frames: reads each file's
/// metadata (an error names a file that cannot be read), not its contents.
pub fn key(
    mel: &MelConfig,
    frames: usize,
    trim_db: Option<f64>,
    items: &[AudioItem],
) -> Result<String> {
    let mut h = KeyHash::new();
    h.u64(FORMAT_VERSION as u64);
    h.bytes(env!("CARGO_PKG_VERSION").as_bytes());
    let mel_json = serde_json::to_string(mel)
        .map_err(|e| Error::Usage(format!("data.audio.mel: cannot serialise: {e}")))?;
    h.bytes(mel_json.as_bytes());
    h.u64(frames as u64);
    if let Some(db) = trim_db {
        h.bytes(b"trim");
        h.u64(db.to_bits());
    }
    h.u64(items.len() as u64);
    for item in items {
        let meta = fs::metadata(&item.path).map_err(|e| Error::io(&item.path, e))?;
        let path = std::path::absolute(&item.path).unwrap_or_else(|_| item.path.clone());
        h.bytes(path.as_os_str().as_encoded_bytes());
        h.u64(meta.len());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        h.u64(mtime.as_secs());
        h.u64(mtime.subsec_nanos() as u64);
    }
    Ok(h.hex())
}

/// The spectrograms of `items` (`n_mels * frames` values each, and the clip's length in
/// samples, made by `compute`) from the cache in `dir`, computed and written there first
/// when missing. Says on stderr which.
pub fn load_or_build<F>(
    dir: &Path,
    items: &[AudioItem],
    mel: &MelConfig,
    frames: usize,
    trim_db: Option<f64>,
    compute: F,
) -> Result<Mapped>
where
    F: Fn(&AudioItem) -> Result<(Vec<f32>, u32)> + Sync,
{
    let shape = [items.len(), mel.n_mels, frames];
    let name = format!("spec-{}.f32", key(mel, frames, trim_db, items)?);
    let path = dir.join(&name);
    if path.is_file() {
        let m = open(&path, shape, true)?;
        eprintln!(
            "reusing spectrogram cache {} ({} clips)",
            path.display(),
            items.len()
        );
        return Ok(m);
    }
    fs::create_dir_all(dir).map_err(|e| {
        Error::data(
            dir,
            format!(
                "cannot create the spectrogram cache folder ({e}); set PRETEXT_CACHE_DIR to a \
                 writable folder"
            ),
        )
    })?;
    remove_stale_temps(dir, &name);
    eprintln!(
        "computing the spectrograms of {} clips into {}",
        items.len(),
        path.display()
    );
    let tmp = dir.join(format!(
        "{name}.partial-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let written = write(&tmp, items, shape, &compute);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&path, e)
    })?;
    open(&path, shape, false)
}

/// Writes the header and every clip's values to `tmp`, `CHUNK` clips at a time.
fn write<F>(tmp: &Path, items: &[AudioItem], shape: [usize; 3], compute: &F) -> Result<()>
where
    F: Fn(&AudioItem) -> Result<(Vec<f32>, u32)> + Sync,
{
    let io = |e| Error::io(tmp, e);
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&header(shape)).map_err(io)?;
    let size = shape[1] * shape[2];
    let mut bytes = Vec::with_capacity(size * 4);
    let mut lengths = Vec::with_capacity(items.len() * 4);
    for chunk in items.chunks(CHUNK) {
        let specs: Vec<(Vec<f32>, u32)> = chunk.par_iter().map(compute).collect::<Result<_>>()?;
        for ((spec, len), item) in specs.iter().zip(chunk) {
            lengths.extend(len.to_le_bytes());
            if spec.len() != size {
                return Err(Error::data(
                    &item.path,
                    format!(
                        "spectrogram has {} values, expected {size} (n_mels x frames)",
                        spec.len()
                    ),
                ));
            }
            bytes.clear();
            bytes.extend(spec.iter().flat_map(|v| v.to_ne_bytes()));
            w.write_all(&bytes).map_err(io)?;
        }
    }
    w.write_all(&lengths).map_err(io)?;
    let file = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(io)
}

fn header([n, n_mels, frames]: [usize; 3]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&BYTE_ORDER.to_ne_bytes());
    for (i, v) in [n, n_mels, frames].into_iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&(v as u64).to_le_bytes());
    }
    h
}

/// Maps the cache file `path`, checking its header and length against `shape`.
fn open(path: &Path, shape: [usize; 3], reused: bool) -> Result<Mapped> {
    let bad = |what: String| {
        Error::data(
            path,
            format!(
                "damaged spectrogram cache: {what}; delete this file and run again (the \
                 spectrograms are then recomputed)"
            ),
        )
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: a cache file is written once under a temporary name and renamed into place; it
    // is never modified afterwards (another program truncating it while mapped would fault).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    if map.len() < HEADER || &map[0..8] != MAGIC {
        return Err(bad(
            "it does not start with a pretext spectrogram header".into()
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(map[i..i + 4].try_into().unwrap_or_default());
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this pretext reads {FORMAT_VERSION}"
        )));
    }
    if u32::from_ne_bytes(map[12..16].try_into().unwrap_or_default()) != BYTE_ORDER {
        return Err(bad("written on a machine of the other byte order".into()));
    }
    let u64_at = |i: usize| u64::from_le_bytes(map[i..i + 8].try_into().unwrap_or_default());
    let found = [u64_at(16), u64_at(24), u64_at(32)];
    if found != shape.map(|v| v as u64) {
        return Err(bad(format!(
            "the header says [N, n_mels, frames] = {found:?}, expected {shape:?}"
        )));
    }
    let want = shape
        .iter()
        .try_fold(4u64, |a, &v| a.checked_mul(v as u64))
        .and_then(|v| v.checked_add(HEADER as u64 + 4 * shape[0] as u64));
    if want != Some(map.len() as u64) {
        return Err(bad(format!(
            "{} bytes, the header's shape {shape:?} needs {}",
            map.len(),
            want.map_or("more than 2^64".into(), |w| w.to_string())
        )));
    }
    let m = Mapped {
        map: Arc::new(map),
        path: path.to_path_buf(),
        reused,
        clips: shape[0],
        stored: shape[0],
        clip_size: shape[1] * shape[2],
    };
    // The alignment `values` relies on, checked once here rather than found there.
    if m.map.as_ptr().align_offset(4) != 0 {
        return Err(bad("the map is not 4-byte aligned".into()));
    }
    Ok(m)
}

/// Removes temporary files of the cache `name` left by killed runs (older than [`STALE`];
/// younger ones may belong to a run writing now). Best effort.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.partial-");
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if stale && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &Path) -> AudioItem {
        AudioItem {
            path: path.to_path_buf(),
            label: None,
            split: None,
        }
    }

    #[test]
    fn written_values_map_back_bitwise_and_damage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mel = MelConfig {
            n_mels: 3,
            ..MelConfig::default()
        };
        let items: Vec<AudioItem> = (0..CHUNK + 5)
            .map(|i| {
                let p = dir.path().join(format!("{i}.wav"));
                fs::write(&p, [i as u8]).unwrap();
                item(&p)
            })
            .collect();
        let value = |it: &AudioItem| -> Result<(Vec<f32>, u32)> {
            let i: f32 = it
                .path
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let v = (0..6).map(|j| (i * 7.0 + j as f32).sin() * 1e3).collect();
            Ok((v, i as u32 * 3))
        };
        let want: Vec<f32> = items.iter().flat_map(|i| value(i).unwrap().0).collect();
        let cache = dir.path().join("cache");
        let m = load_or_build(&cache, &items, &mel, 2, None, value).unwrap();
        assert!(!m.reused);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(m.values()), bits(&want));
        let lengths: Vec<u32> = (0..items.len() as u32).map(|i| i * 3).collect();
        assert_eq!(m.lengths(), lengths);
        let again = load_or_build(&cache, &items, &mel, 2, None, |_| panic!("recomputed")).unwrap();
        assert!(again.reused);
        assert_eq!(again.path, m.path);
        // Nothing but the cache is left in the folder.
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
        drop((m, again));

        // A truncated file (something other than pretext cut it short) is an error that
        // names it and says to delete it.
        let path = fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = fs::metadata(&path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 4).unwrap();
        drop(f);
        let e = load_or_build(&cache, &items, &mel, 2, None, value)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("delete this file"), "{e}");
    }

    #[test]
    fn a_failing_clip_leaves_no_cache_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        fs::write(&p, b"x").unwrap();
        let cache = dir.path().join("cache");
        let e = load_or_build(&cache, &[item(&p)], &MelConfig::default(), 2, None, |it| {
            Err(Error::data(&it.path, "not a WAV file"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("a.wav"), "{e}");
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 0);
    }

    #[test]
    fn the_key_follows_settings_and_file_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        fs::write(&p, b"x").unwrap();
        let items = [item(&p)];
        let mel = MelConfig::default();
        let k = key(&mel, 96, None, &items).unwrap();
        assert_eq!(k.len(), 32);
        assert_eq!(key(&mel, 96, None, &items).unwrap(), k);
        assert_ne!(key(&mel, 97, None, &items).unwrap(), k);
        let other = MelConfig {
            n_mels: mel.n_mels + 1,
            ..mel.clone()
        };
        assert_ne!(key(&other, 96, None, &items).unwrap(), k);
        fs::write(&p, b"xy").unwrap();
        assert_ne!(key(&mel, 96, None, &items).unwrap(), k);
        let missing = key(&mel, 96, None, &[item(&dir.path().join("gone.wav"))]).unwrap_err();
        assert!(missing.to_string().contains("gone.wav"), "{missing}");
    }
}
