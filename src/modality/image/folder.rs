//! Image folders in torchvision's `ImageFolder` layout: `root/<class>/**/*.{png,jpg,jpeg}`,
//! classes numbered in sorted order of their directory names; or images directly in `root`
//! with no class directories, which gives an unlabelled data set.
//!
//! Only the index (sorted paths and labels) is built up front, so the listing is the same on
//! every machine and run; images are decoded when a batch needs them ([`decode`]), so a
//! folder need not fit in memory.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

use super::budget::Held;
use crate::error::{Error, Result};
use crate::modality::files::{files_under, sorted_entries};

/// File extensions read, compared case-insensitively. Other files are ignored.
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The files of a folder and their classes.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderIndex {
    /// Sorted: by class, then by path within the class.
    pub files: Vec<PathBuf>,
    /// `Some` when the folder has class directories: the class id of each file.
    pub labels: Option<Vec<u32>>,
    /// Class directory names, sorted; a label is an index into this list.
    pub classes: Vec<String>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Every image file under `dir`, recursively, in sorted order.
fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.extend(files_under(dir, &|_| false, &is_image)?);
    Ok(())
}

/// Lists the images of `root` (see the module documentation).
pub fn scan(root: &Path) -> Result<FolderIndex> {
    if !root.is_dir() {
        return Err(Error::data(root, "is not a directory"));
    }
    let entries = sorted_entries(root)?;
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let loose: Vec<PathBuf> = entries.iter().filter(|p| is_image(p)).cloned().collect();
    if class_dirs.is_empty() {
        if loose.is_empty() {
            return Err(Error::data(
                root,
                format!(
                    "no images ({}) and no class directories",
                    EXTENSIONS.join(", ")
                ),
            ));
        }
        return Ok(FolderIndex {
            files: loose,
            labels: None,
            classes: Vec::new(),
        });
    }
    if let Some(stray) = loose.first() {
        return Err(Error::data(
            stray,
            format!(
                "an image directly in {}, which also has class directories: put it in a class \
                 directory, or use a folder of loose images only (unlabelled)",
                root.display()
            ),
        ));
    }
    let mut index = FolderIndex {
        files: Vec::new(),
        labels: Some(Vec::new()),
        classes: Vec::new(),
    };
    for dir in class_dirs {
        let before = index.files.len();
        images_under(dir, &mut index.files)?;
        let found = index.files.len() - before;
        if found == 0 {
            return Err(Error::data(
                dir,
                format!("class directory has no images ({})", EXTENSIONS.join(", ")),
            ));
        }
        let label = index.classes.len() as u32;
        if let Some(labels) = index.labels.as_mut() {
            labels.extend(std::iter::repeat_n(label, found));
        }
        index.classes.push(
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
    }
    Ok(index)
}

/// The most pixels one image may declare (Pillow's `MAX_IMAGE_PIXELS`): a small file can
/// claim a huge canvas, and decoding allocates it before anything is resized.
pub const MAX_PIXELS: u64 = 89_478_485;

/// Decodes one file (format guessed from its bytes, not its name) at its own size, after
/// checking the size its header declares. The image holds its share of the decoding
/// budget ([`super::budget`]) until the returned `Held` is dropped: keep it while the
/// full-size image lives.
pub fn decode(path: &Path) -> Result<(DynamicImage, Held<'static>)> {
    let reader = ImageReader::new(std::io::BufReader::new(crate::input::open(path)?))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))?;
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(Error::data(
            path,
            format!("declares {w} x {h} pixels, more than the {MAX_PIXELS} an image may have (a decompression bomb, or a picture to shrink first)"),
        ));
    }
    // At most 16 bytes a pixel while decoding: RGBA at 16 bits, or the decoded image and
    // its conversion to the data set's channels.
    let bytes = pixels as u128 * 16;
    crate::limits::check(bytes, "decoding this image").map_err(|m| Error::data(path, m))?;
    let held = super::budget::decoding(bytes);
    let reader = ImageReader::new(std::io::BufReader::new(crate::input::open(path)?))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let image = reader
        .decode()
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))?;
    Ok((image, held))
}
