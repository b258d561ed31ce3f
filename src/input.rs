//! Opening the files pretext reads: regular files only (a FIFO, a device or a socket could
//! block forever or never end), no larger than the allocation limit, with errors naming the
//! path.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

fn refuse(path: &Path, message: String) -> Error {
    Error::io(path, std::io::Error::other(message))
}

/// Fails unless `path` is a regular file (symbolic links followed).
pub fn check_regular(path: &Path) -> Result<()> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    crate::limits::regular_file(path).map_err(|m| refuse(path, m))
}

/// Opens a regular file for reading.
pub fn open(path: &Path) -> Result<File> {
    check_regular(path)?;
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular file whole, after checking its size against the allocation limit.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    check_regular(path)?;
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
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
