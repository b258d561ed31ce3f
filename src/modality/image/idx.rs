//! Reader for the IDX format of MNIST / Fashion-MNIST (`*-idx3-ubyte` images, `*-idx1-ubyte`
//! labels), gzip-compressed or raw. Compression is detected by the gzip magic bytes `1f 8b`, not by
//! the file name.
//!
//! An IDX file is a big-endian header — the magic `0x0000_TTDD` (TT = element type, 0x08 for
//! unsigned bytes; DD = number of dimensions) followed by one `u32` per dimension — and then the
//! elements, row-major. Only unsigned-byte images (magic `0x00000803`) and labels (`0x00000801`)
//! are read here.
//!
//! Bad input never panics: every problem comes back as [`Error::Data`] saying what was wrong
//! (or [`Error::Io`] when the file cannot be opened or read). Memory is bounded by the data
//! actually present, so a header that claims absurd sizes costs nothing.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use crate::error::{Error, Result};

const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_LABELS: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Upper bound on the buffer reserved up front for decompressed data; beyond it the buffer grows
/// only as real bytes arrive.
const MAX_PREALLOC: usize = 64 << 20;

/// Images as u8, row-major [n, rows, cols]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i` (`rows * cols` bytes), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.rows * self.cols;
        if i >= self.n {
            return None;
        }
        self.pixels.get(i * size..(i + 1) * size)
    }
}

/// Read an IDX3 unsigned-byte image file (`*-idx3-ubyte[.gz]`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, MAGIC_IMAGES, "images")?;
    Ok(IdxImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Read an IDX1 unsigned-byte label file (`*-idx1-ubyte[.gz]`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let (_dims, labels) = read_idx(path, MAGIC_LABELS, "labels")?;
    Ok(labels)
}

/// Where the bytes come from, so read errors can be told apart: a failure inside the gzip
/// decoder means a corrupt or truncated stream, a failure reading a raw file is an I/O error.
enum Source {
    Raw(BufReader<File>),
    Gzip(MultiGzDecoder<BufReader<File>>),
}

impl Source {
    fn is_gzip(&self) -> bool {
        matches!(self, Source::Gzip(_))
    }

    fn reader(&mut self) -> &mut dyn Read {
        match self {
            Source::Raw(r) => r,
            Source::Gzip(r) => r,
        }
    }
}

fn read_error(path: &Path, gzip: bool, e: std::io::Error) -> Error {
    if gzip {
        Error::data(
            path,
            format!(
                "corrupt or truncated gzip stream (file starts with the gzip magic 1f 8b): {e}"
            ),
        )
    } else {
        Error::io(path, e)
    }
}

/// Read into `buf` until it is full or the input ends; returns the number of bytes read.
fn read_full(src: &mut Source, path: &Path, buf: &mut [u8]) -> Result<usize> {
    let gzip = src.is_gzip();
    let mut filled = 0;
    while filled < buf.len() {
        match src.reader().read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, gzip, e)),
        }
    }
    Ok(filled)
}

fn describe_magic(magic: u32) -> &'static str {
    match magic {
        MAGIC_IMAGES => " (an IDX image file)",
        MAGIC_LABELS => " (an IDX label file)",
        _ => "",
    }
}

/// Read an unsigned-byte IDX file whose magic must be `expected_magic`; returns its dimensions
/// and its data (exactly the product of the dimensions, in bytes).
fn read_idx(path: &Path, expected_magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = crate::input::open(path)?;
    let file_len = file.metadata().map(|m| m.len()).ok();
    let mut buffered = BufReader::new(file);
    // fill_buf returns at least 2 bytes unless the file is shorter than that (a regular file
    // read returns as much as asked for until EOF; BufReader's buffer is 8 KiB).
    let head = buffered.fill_buf().map_err(|e| Error::io(path, e))?;
    let gzip = head.starts_with(&GZIP_MAGIC);
    let mut src = if gzip {
        Source::Gzip(MultiGzDecoder::new(buffered))
    } else {
        Source::Raw(buffered)
    };
    let kind = if gzip { "decompressed " } else { "" };

    // Magic number.
    let mut magic_bytes = [0u8; 4];
    let got = read_full(&mut src, path, &mut magic_bytes)?;
    if got < 4 {
        return Err(Error::data(
            path,
            format!(
                "truncated file: {kind}data is {got} bytes, too short for an IDX header \
                 (expected magic number 0x{expected_magic:08x})"
            ),
        ));
    }
    let magic = u32::from_be_bytes(magic_bytes);
    if magic != expected_magic {
        let known = describe_magic(magic);
        let hint = if gzip || !known.is_empty() {
            ""
        } else {
            " (the file is not gzip-compressed either)"
        };
        return Err(Error::data(
            path,
            format!(
                "bad magic number: expected 0x{expected_magic:08x} (IDX {what}, unsigned bytes), \
                 found 0x{magic:08x}{known}{hint}"
            ),
        ));
    }

    // Dimensions.
    let ndim = (expected_magic & 0xff) as usize;
    let mut dim_bytes = vec![0u8; 4 * ndim];
    let got = read_full(&mut src, path, &mut dim_bytes)?;
    if got < dim_bytes.len() {
        return Err(Error::data(
            path,
            format!(
                "truncated file: the IDX header needs {} bytes of dimensions after the magic \
                 number, found {got}",
                dim_bytes.len()
            ),
        ));
    }
    let dims_u32: Vec<u32> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let dims_text = dims_u32
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" × ");
    // u64 cannot overflow for up to two u32 factors; checked for the third.
    let expected_len: Option<u64> = dims_u32
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)));

    // Data: read at most expected + 1 bytes, so trailing garbage is noticed without reading it
    // all, and reserve no more than the file could hold.
    let limit = expected_len.map_or(u64::MAX, |n| n.saturating_add(1));
    // A raw file cannot hold more than its length; for gzip, guess a few times the compressed
    // length (bounded) and let the buffer grow with the bytes that actually arrive.
    let prealloc = match (expected_len, file_len) {
        (Some(n), Some(len)) if !gzip => n.min(len),
        (Some(n), Some(len)) => n.min(len.saturating_mul(8)).min(MAX_PREALLOC as u64),
        _ => 0,
    };
    let mut data = Vec::with_capacity(usize::try_from(prealloc).unwrap_or(0));
    src.reader()
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, gzip, e))?;
    let found = data.len() as u64;

    match expected_len {
        Some(n) if found == n => {}
        Some(n) if found < n => {
            return Err(Error::data(
                path,
                format!(
                    "truncated file: the header promises {dims_text} {what}, i.e. {n} bytes of \
                     {}data, found {found}",
                    if ndim == 3 { "pixel " } else { "" }
                ),
            ));
        }
        Some(n) => {
            // More data than promised. In a gzip stream that may be garbage from a damaged
            // deflate block: finish the stream (into a sink, no memory) so the CRC check can
            // report corruption before calling it trailing data.
            if gzip {
                std::io::copy(src.reader(), &mut std::io::sink())
                    .map_err(|e| read_error(path, gzip, e))?;
            }
            return Err(Error::data(
                path,
                format!(
                    "the header promises {dims_text} {what}, i.e. {n} bytes of data, but the \
                     {kind}file holds more (trailing bytes after the data)"
                ),
            ));
        }
        None => {
            return Err(Error::data(
                path,
                format!(
                    "absurd IDX header: {dims_text} {what} does not fit in 64 bits; found only \
                     {found} bytes of data"
                ),
            ));
        }
    }

    let dims = dims_u32
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| Error::data(path, format!("IDX dimensions {dims_text} too large")))?;
    Ok((dims, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A file of the Fashion-MNIST sample shipped in the repository.
    fn sample(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/fashion-mnist-sample")
            .join(name)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        let mut h = magic.to_be_bytes().to_vec();
        for d in dims {
            h.extend_from_slice(&d.to_be_bytes());
        }
        h
    }

    fn data_message(err: Error) -> String {
        match err {
            Error::Data { message, .. } => message,
            other => panic!("expected Error::Data, got {other:?}"),
        }
    }

    #[test]
    fn reads_sample_train() {
        let images = read_idx_images(&sample("train-images-idx3-ubyte.gz")).unwrap();
        assert_eq!((images.n, images.rows, images.cols), (2000, 28, 28));
        assert_eq!(images.pixels.len(), 2000 * 28 * 28);
        // Values computed with python's gzip module on the same files.
        let first: u64 = images.image(0).unwrap().iter().map(|&p| p as u64).sum();
        assert_eq!(first, 76247);
        let all: u64 = images.pixels.iter().map(|&p| p as u64).sum();
        assert_eq!(all, 113_529_887);
        assert_eq!(
            &images.image(0).unwrap()[14 * 28 + 12..14 * 28 + 16],
            &[0xed, 0xe2, 0xd9, 0xdf]
        );
        assert!(images.image(2000).is_none());

        let labels = read_idx_labels(&sample("train-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels.len(), 2000);
        assert_eq!(&labels[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
        assert_eq!(labels.iter().map(|&l| l as u64).sum::<u64>(), 9002);
        assert!(labels.iter().all(|&l| l < 10));
    }

    #[test]
    fn reads_sample_test() {
        let images = read_idx_images(&sample("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!((images.n, images.rows, images.cols), (500, 28, 28));
        let all: u64 = images.pixels.iter().map(|&p| p as u64).sum();
        assert_eq!(all, 29_494_551);

        let labels = read_idx_labels(&sample("t10k-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels.len(), 500);
        assert_eq!(&labels[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        assert_eq!(labels.iter().map(|&l| l as u64).sum::<u64>(), 2138);
    }

    #[test]
    fn raw_and_gzip_give_the_same_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = Vec::new();
        MultiGzDecoder::new(BufReader::new(
            File::open(sample("t10k-images-idx3-ubyte.gz")).unwrap(),
        ))
        .read_to_end(&mut raw)
        .unwrap();
        let p = write(dir.path(), "t10k-images-idx3-ubyte", &raw);
        let from_raw = read_idx_images(&p).unwrap();
        let from_gz = read_idx_images(&sample("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(from_raw, from_gz);
        // Detection is by content, not by name: gzip data under a name without .gz works too.
        let p = write(dir.path(), "labels.bin", &gzip(&header(MAGIC_LABELS, &[3])));
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..2], &GZIP_MAGIC);
        let err = read_idx_labels(&p).unwrap_err();
        assert!(data_message(err).contains("truncated"));
    }

    #[test]
    fn small_synthetic_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header(MAGIC_IMAGES, &[2, 2, 3]);
        bytes.extend(0u8..12);
        let img = read_idx_images(&write(dir.path(), "a.gz", &gzip(&bytes))).unwrap();
        assert_eq!((img.n, img.rows, img.cols), (2, 2, 3));
        assert_eq!(img.image(1).unwrap(), &[6, 7, 8, 9, 10, 11]);

        let empty = read_idx_labels(&write(dir.path(), "e", &header(MAGIC_LABELS, &[0]))).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header(MAGIC_IMAGES, &[10, 28, 28]);
        bytes.resize(bytes.len() + 9 * 784 + 5, 7u8);
        for (name, content) in [("t.raw", bytes.clone()), ("t.gz", gzip(&bytes))] {
            let err = read_idx_images(&write(dir.path(), name, &content)).unwrap_err();
            let msg = data_message(err);
            assert!(msg.contains("truncated"), "{msg}");
            assert!(msg.contains("7840 bytes of pixel data"), "{msg}");
            assert!(msg.contains("found 7061"), "{msg}");
        }
        // Labels cut short.
        let mut bytes = header(MAGIC_LABELS, &[5]);
        bytes.extend([1, 2, 3]);
        let msg = data_message(read_idx_labels(&write(dir.path(), "l", &bytes)).unwrap_err());
        assert!(msg.contains("5 bytes") && msg.contains("found 3"), "{msg}");
        // Header itself cut short.
        for content in [vec![], vec![0, 0, 8], header(MAGIC_IMAGES, &[10, 28])] {
            let msg = data_message(read_idx_images(&write(dir.path(), "h", &content)).unwrap_err());
            assert!(msg.contains("truncated"), "{msg}");
        }
    }

    #[test]
    fn truncated_gzip_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = std::fs::read(sample("t10k-labels-idx1-ubyte.gz")).unwrap();
        let p = write(dir.path(), "cut.gz", &full[..full.len() / 2]);
        let msg = data_message(read_idx_labels(&p).unwrap_err());
        assert!(msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bad.gz",
            &[0x1f, 0x8b, 0x08, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        );
        let msg = data_message(read_idx_images(&p).unwrap_err());
        assert!(msg.contains("gzip"), "{msg}");
        // Damaged deflate data in the middle of a valid-looking stream.
        let mut g = std::fs::read(sample("t10k-labels-idx1-ubyte.gz")).unwrap();
        let mid = g.len() / 2;
        for b in &mut g[mid..mid + 16] {
            *b ^= 0xff;
        }
        let p = write(dir.path(), "flipped.gz", &g);
        let msg = data_message(read_idx_labels(&p).unwrap_err());
        assert!(msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn wrong_magic_is_an_error() {
        // A label file read as images.
        let err = read_idx_images(&sample("t10k-labels-idx1-ubyte.gz")).unwrap_err();
        let msg = data_message(err);
        assert!(msg.contains("bad magic number"), "{msg}");
        assert!(msg.contains("expected 0x00000803"), "{msg}");
        assert!(msg.contains("found 0x00000801"), "{msg}");
        // An image file read as labels.
        let msg = data_message(read_idx_labels(&sample("t10k-images-idx3-ubyte.gz")).unwrap_err());
        assert!(
            msg.contains("expected 0x00000801") && msg.contains("found 0x00000803"),
            "{msg}"
        );
        // Something that is neither gzip nor IDX.
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x.png", b"\x89PNG\r\n\x1a\n0000000000000000");
        let msg = data_message(read_idx_images(&p).unwrap_err());
        assert!(
            msg.contains("found 0x89504e47") && msg.contains("not gzip"),
            "{msg}"
        );
    }

    #[test]
    fn absurd_header_does_not_allocate_or_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header(MAGIC_IMAGES, &[u32::MAX, u32::MAX, u32::MAX]);
        bytes.extend([0u8; 100]);
        let msg = data_message(read_idx_images(&write(dir.path(), "a", &bytes)).unwrap_err());
        assert!(msg.contains("found only 100 bytes"), "{msg}");

        let mut bytes = header(MAGIC_IMAGES, &[u32::MAX, 65536, 65536]);
        bytes.extend([0u8; 100]);
        for (name, content) in [("b", bytes.clone()), ("b.gz", gzip(&bytes))] {
            let msg =
                data_message(read_idx_images(&write(dir.path(), name, &content)).unwrap_err());
            assert!(
                msg.contains("truncated") && msg.contains("found 100"),
                "{msg}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header(MAGIC_LABELS, &[3]);
        bytes.extend([1, 2, 3, 4]);
        let msg = data_message(read_idx_labels(&write(dir.path(), "t", &bytes)).unwrap_err());
        assert!(msg.contains("trailing"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "pretext-idx-does-not-exist-{}-{nanos}",
            std::process::id()
        ));
        match read_idx_images(&p).unwrap_err() {
            Error::Io { path, source } => {
                assert_eq!(path, p);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        assert!(matches!(read_idx_labels(&p), Err(Error::Io { .. })));
    }
}
