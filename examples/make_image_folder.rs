//! Writes `data/image-folder-sample/`, the committed image folder the tests and
//! `recipes/simmim-image-folder.toml` use, from the committed Fashion-MNIST sample.
//!
//! ```text
//! cargo run --example make_image_folder
//! ```
//!
//! Layout (torchvision `ImageFolder`): `{train,test}/<class>/NNNNN.png` — 28x28 greyscale PNGs,
//! the first 10 (train) or 4 (test) images of four classes — plus, in each train class, one RGB
//! JPEG of another size (48 high, 36 wide, tinted so the channels differ) made from the next
//! image of the class, to exercise channel conversion and resizing. Deterministic: the same
//! input gives the same bytes.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage};
use pretext::modality::image::idx::{read_idx_images, read_idx_labels};

/// Fashion-MNIST label ids and the directory names used for them.
const CLASSES: &[(u8, &str)] = &[(0, "t-shirt"), (1, "trouser"), (7, "sneaker"), (8, "bag")];

fn write_split(src: &Path, prefix: &str, out: &Path, per_class: usize, jpegs: bool) {
    let images = read_idx_images(&src.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
    let labels = read_idx_labels(&src.join(format!("{prefix}-labels-idx1-ubyte.gz"))).unwrap();
    for &(label, name) in CLASSES {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let picks: Vec<usize> = (0..images.n)
            .filter(|&i| labels[i] == label)
            .take(per_class + 1)
            .collect();
        let gray = |i: usize| {
            GrayImage::from_raw(
                images.cols as u32,
                images.rows as u32,
                images.image(i).unwrap().to_vec(),
            )
            .unwrap()
        };
        for &i in &picks[..per_class] {
            gray(i).save(dir.join(format!("{i:05}.png"))).unwrap();
        }
        if jpegs {
            let i = picks[per_class];
            let g = gray(i);
            let rgb = RgbImage::from_fn(g.width(), g.height(), |x, y| {
                let v = g.get_pixel(x, y).0[0] as u32;
                image::Rgb([v as u8, (v * 3 / 4) as u8, (v / 2) as u8])
            });
            let big = imageops::resize(&rgb, 36, 48, FilterType::Triangle);
            big.save(dir.join(format!("{i:05}-rgb.jpg"))).unwrap();
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("data/fashion-mnist-sample");
    let out = root.join("data/image-folder-sample");
    write_split(&src, "train", &out.join("train"), 10, true);
    write_split(&src, "t10k", &out.join("test"), 4, false);
    println!("wrote {}", out.display());
}
