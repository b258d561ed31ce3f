//! Opening the files pretext reads: regular files only (a FIFO, a device or a socket could
//! block forever or never end), no larger than the allocation limit, with errors naming the
//! path.

use std::fs::{File, Metadata};
use std::path::Path;

use crate::error::{Error, Result};

fn refuse(path: &Path, message: String) -> Error {
    Error::io(path, std::io::Error::other(message))
}

/// What `path` is when it is not a plain file (a FIFO, device, socket or folder), for an
/// error that names the path and, where a recipe names it, the key.
pub fn regular_file(path: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    file_kind(&meta)
}

fn file_kind(meta: &Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(format!("is {kind}; pretext reads regular files only"))
}

/// Fails unless `path` is a regular file (symbolic links followed); its metadata.
pub fn check_regular(path: &Path) -> Result<Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    file_kind(&meta).map_err(|m| refuse(path, m))?;
    Ok(meta)
}

/// Opens a regular file for reading.
pub fn open(path: &Path) -> Result<File> {
    check_regular(path)?;
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular file whole, after checking its size against the allocation limit.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let len = check_regular(path)?.len();
    crate::limits::check(len as u128, "reading this file").map_err(|m| refuse(path, m))?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|e| {
        refuse(
            path,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_not_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("pretext-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe");
        let _ = std::fs::remove_file(&fifo);
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let err = regular_file(&fifo).unwrap_err();
            assert!(err.contains("FIFO"), "{err}");
        }
        assert!(regular_file(&dir).unwrap_err().contains("folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
