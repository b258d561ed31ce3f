//! Image folders, augmentations and the prefetching loader, on the committed folder
//! (`data/image-folder-sample`, made from the Fashion-MNIST sample by
//! `cargo run --example make_image_folder`).

use std::path::Path;

use pretext::modality::image::augment::{Augment, RandomErasing, RandomResizedCrop};
use pretext::modality::image::batch::BatchMaker;
use pretext::modality::image::dataset::ImageDataset;
use pretext::recipe;
use pretext::train::loader::{BatchShape, Loader, MakeBatch};
use pretext::train::sampler::{Position, Sampler};

const TRAIN: &str = "data/image-folder-sample/train";
const SAMPLE: &str = "data/fashion-mnist-sample/train-images-idx3-ubyte.gz";

fn augment() -> Augment {
    Augment {
        crop: Some(RandomResizedCrop {
            scale: [0.2, 1.0],
            ratio: [0.75, 4.0 / 3.0],
        }),
        hflip: 0.5,
        erase: None,
        seed: 7,
    }
}

fn maker(data: ImageDataset) -> BatchMaker {
    let c = data.channels;
    BatchMaker {
        data,
        augment: Some(augment()),
        mean: vec![0.5; c],
        std: vec![0.25; c],
    }
}

#[test]
fn folder_classes_are_sorted_directories_and_files_are_sorted() {
    let d = ImageDataset::from_folder(Path::new(TRAIN), 3, 32).unwrap();
    assert_eq!(d.len, 44);
    assert_eq!(d.classes, ["bag", "sneaker", "t-shirt", "trouser"]);
    let labels = d.labels.as_ref().unwrap();
    for c in 0..4u32 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), 11);
    }
    assert!(labels.windows(2).all(|w| w[0] <= w[1]));
    let files: Vec<&Path> = (0..d.len).map(|i| d.file(i).unwrap()).collect();
    assert!(files.windows(2).all(|w| w[0] < w[1]), "{files:?}");
    assert!(files[0].ends_with("bag/00023.png"), "{:?}", files[0]);
}

#[test]
fn png_pixels_equal_the_idx_images_they_were_made_from() {
    let folder = ImageDataset::from_folder(Path::new(TRAIN), 1, 28).unwrap();
    let idx = ImageDataset::from_idx(Path::new(SAMPLE), None).unwrap();
    let mut checked = 0;
    for i in 0..folder.len {
        let file = folder.file(i).unwrap();
        let name = file.file_stem().unwrap().to_str().unwrap();
        if let Ok(n) = name.parse::<usize>() {
            assert_eq!(
                folder.example(i, None).unwrap(),
                idx.example(n, None).unwrap(),
                "{}",
                file.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
}

#[test]
fn jpeg_of_another_size_is_converted_and_resized() {
    for (channels, size) in [(3, 32), (1, 16), (3, 28)] {
        let d = ImageDataset::from_folder(Path::new(TRAIN), channels, size).unwrap();
        let i = (0..d.len)
            .find(|&i| d.file(i).unwrap().extension().unwrap() == "jpg")
            .unwrap();
        let px = d.example(i, None).unwrap();
        assert_eq!(px.len(), channels * size * size);
        if channels == 3 {
            // The JPEG was tinted (r, 3/4 r, 1/2 r): red dominates where the garment is.
            let plane = size * size;
            let (r, b): (u64, u64) = (0..plane).fold((0, 0), |(r, b), k| {
                (r + px[k] as u64, b + px[2 * plane + k] as u64)
            });
            assert!(r > b + b / 2, "red {r}, blue {b}");
            // A greyscale PNG becomes three equal planes.
            let png = d.example(0, None).unwrap();
            assert_eq!(png[..plane], png[plane..2 * plane]);
            assert_eq!(png[..plane], png[2 * plane..]);
        }
    }
}

#[test]
fn undecodable_file_is_named_and_odd_layouts_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("a");
    std::fs::create_dir(&class).unwrap();
    std::fs::copy(format!("{TRAIN}/bag/00023.png"), class.join("good.png")).unwrap();
    std::fs::write(class.join("broken.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(class.join("notes.txt"), b"ignored").unwrap();
    let d = ImageDataset::from_folder(tmp.path(), 1, 28).unwrap();
    assert_eq!(d.len, 2, "the .txt file is not an image");
    let err = d
        .batch(&[0, 1], &[0.5], &[0.5], &candle_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.jpg") && err.contains("cannot decode"),
        "{err}"
    );

    // Loose images next to class directories: ambiguous, named.
    std::fs::copy(class.join("good.png"), tmp.path().join("stray.png")).unwrap();
    let err = ImageDataset::from_folder(tmp.path(), 1, 28)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stray.png"), "{err}");

    // Loose images only: unlabelled.
    let loose = tmp.path().join("a");
    std::fs::remove_file(loose.join("broken.jpg")).unwrap();
    let d = ImageDataset::from_folder(&loose, 3, 20).unwrap();
    assert_eq!((d.len, d.labels.is_none()), (1, true));

    let err = ImageDataset::from_folder(&tmp.path().join("nope"), 1, 28)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn augmentation_is_a_function_of_seed_epoch_and_index_only() {
    let d = ImageDataset::from_folder(Path::new(TRAIN), 3, 32).unwrap();
    let m = maker(d.clone());
    let idx: Vec<usize> = vec![5, 0, 43, 17, 5];
    let epochs = vec![0, 0, 0, 0, 1];
    let a = m.make(&idx, &epochs).unwrap();
    // One thread or many, same values.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    assert_eq!(a, pool.install(|| m.make(&idx, &epochs).unwrap()));
    // An example's values do not depend on its batch-mates or position in the batch.
    let per = 3 * 32 * 32;
    let alone = m.make(&[43], &[0]).unwrap();
    assert_eq!(alone[..], a[2 * per..3 * per]);
    // Another epoch draws another crop; no augmentation is the plain resize.
    assert_ne!(a[..per], a[4 * per..]);
    let plain = d.normalised(&[5], None, &[0.5; 3], &[0.25; 3]).unwrap();
    assert_ne!(plain[..], a[..per]);
    // In-memory IDX data is augmented the same way.
    let idx_data = ImageDataset::from_idx(Path::new(SAMPLE), None).unwrap();
    let m = maker(idx_data);
    let x = m.make(&[1, 2], &[3, 3]).unwrap();
    assert_eq!(x, m.make(&[1, 2], &[3, 3]).unwrap());
    assert_ne!(x, m.make(&[1, 2], &[4, 4]).unwrap());
}

#[test]
fn random_erasing_puts_noise_in_one_box_per_erased_image_repeatably() {
    let d = ImageDataset::from_idx(Path::new(SAMPLE), None).unwrap();
    let (mean, std) = ([0.2860f32], [0.3530f32]);
    let erase_only = Augment {
        erase: Some(RandomErasing {
            prob: 0.5,
            ..Default::default()
        }),
        seed: 7, // augment()'s, so the erasing streams below are the same
        ..Default::default()
    };
    let n = 200;
    let idx: Vec<usize> = (0..n).collect();
    let epochs = vec![0; n];
    let plain = d.normalised(&idx, None, &mean, &std).unwrap();
    let erased = d
        .normalised(&idx, Some((&erase_only, &epochs)), &mean, &std)
        .unwrap();
    assert_eq!(
        erased,
        d.normalised(&idx, Some((&erase_only, &epochs)), &mean, &std)
            .unwrap()
    );
    let per = 28 * 28;
    let mut touched = 0;
    for k in 0..n {
        let (p, e) = (
            &plain[k * per..(k + 1) * per],
            &erased[k * per..(k + 1) * per],
        );
        let changed: Vec<usize> = (0..per).filter(|&j| p[j] != e[j]).collect();
        if changed.is_empty() {
            continue;
        }
        touched += 1;
        // The changed pixels lie in one box smaller than the image (noise can, rarely, equal
        // the pixel, so the box is the changed pixels' bounding box or larger).
        let (rows, cols): (Vec<usize>, Vec<usize>) =
            changed.iter().map(|j| (j / 28, j % 28)).unzip();
        let h = rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1;
        let w = cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1;
        assert!(h < 28 && w < 28, "image {k}: a {h} x {w} box");
        assert!(
            changed.len() * 10 >= h * w * 9,
            "image {k}: {} of {h} x {w}",
            changed.len()
        );
    }
    // About half the images (some draws of large boxes fail their ten tries).
    assert!((70..=115).contains(&touched), "{touched} of {n} erased");
    // Erasing comes after the crop and flip, from its own stream: the crop is unchanged.
    let crop_only = augment();
    let both = Augment {
        erase: erase_only.erase,
        ..crop_only
    };
    let a = d
        .normalised(&idx, Some((&crop_only, &epochs)), &mean, &std)
        .unwrap();
    let b = d
        .normalised(&idx, Some((&both, &epochs)), &mean, &std)
        .unwrap();
    let same = (0..n)
        .filter(|&k| a[k * per..(k + 1) * per] == b[k * per..(k + 1) * per])
        .count();
    assert_eq!(
        same,
        n - touched,
        "the same images are erased with or without a crop"
    );
}

#[test]
fn prefetched_batches_equal_synchronous_ones_from_any_position() {
    let d = ImageDataset::from_folder(Path::new(TRAIN), 3, 32).unwrap();
    let start = Position {
        epoch: 1,
        index: 30,
    };
    let sampler = Sampler::new(d.len, 4, start);
    let shape = BatchShape::whole(16);
    let mut sync = Loader::synchronous(maker(d.clone()), sampler.clone(), shape);
    let mut pre = Loader::prefetching(maker(d.clone()), sampler.clone(), shape, 2).unwrap();
    let mut loop_sampler = sampler.clone();
    let mut batches = Vec::new();
    // 8 batches of 16 from index 30 of 44 cross three epoch boundaries.
    for _ in 0..8 {
        let (a, b) = (sync.next_batch().unwrap(), pre.next_batch().unwrap());
        assert_eq!(a, b);
        let (indices, epochs) = loop_sampler.next_batch_with_epochs(16);
        assert_eq!((&a.indices, &a.epochs), (&indices, &epochs));
        batches.push(a);
    }
    assert!(batches.last().unwrap().epochs.contains(&4));
    // A loader restarted from the sampler's position after three batches continues exactly.
    let mut s = sampler.clone();
    for _ in 0..3 {
        s.next_batch(16);
    }
    let mut resumed =
        Loader::prefetching(maker(d), Sampler::new(44, 4, s.position()), shape, 2).unwrap();
    for b in &batches[3..] {
        assert_eq!(&resumed.next_batch().unwrap(), b);
    }
    drop(pre); // joins the worker, blocked or not
}

fn load(text: &str) -> String {
    recipe::load_str(text, Path::new("f.toml"), &[])
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn folder_and_augment_keys_are_checked_with_suggestions() {
    let text = std::fs::read_to_string("recipes/mae-image-folder.toml").unwrap();
    assert_eq!(load(&text), "");
    let err = load(&text.replace("root = \"data/image-folder-sample/train\"", "rot = \"x\""));
    assert!(
        err.contains("data.train.rot") && err.contains("`data.train.root`"),
        "{err}"
    );
    let err = load(&text.replace("hflip = 0.5", "hflp = 0.5"));
    assert!(err.contains("did you mean `data.augment.hflip`"), "{err}");
    let err = load(&text.replace("hflip = 0.5", "hflip = 1.5"));
    assert!(err.contains("data.augment.hflip"), "{err}");
    let erasing = "hflip = 0.5\nrandom_erasing = { prob = 0.25 }";
    assert_eq!(load(&text.replace("hflip = 0.5", erasing)), "");
    for (bad, key) in [
        ("{ prob = 1.5 }", "random_erasing.prob"),
        (
            "{ prob = 0.25, scale = [0.5, 1.0] }",
            "random_erasing.scale",
        ),
        (
            "{ prob = 0.25, ratio = [0.0, 1.0] }",
            "random_erasing.ratio",
        ),
        ("{ prob = 0.25, mode = \"pixel\" }", "random_erasing.mode"),
    ] {
        let err = load(&text.replace(
            "hflip = 0.5",
            &format!("hflip = 0.5\nrandom_erasing = {bad}"),
        ));
        assert!(err.contains(key), "{bad}: {err}");
    }
    let err = load(&text.replace("scale = [0.2, 1.0]", "scale = [0.9, 0.2]"));
    assert!(err.contains("random_resized_crop.scale"), "{err}");
    let err = load(&text.replace(
        "root = \"data/image-folder-sample/train\"",
        "root = \"d\", images = \"x.gz\"",
    ));
    assert!(
        err.contains("data.train.images") && err.contains("folder"),
        "{err}"
    );
    // A key of another format: an unknown key, with the format and the keys it takes.
    let err = load(&text.replace("format = \"folder\", root", "format = \"idx\", root"));
    assert!(
        err.contains(".root` for format = \"idx\"") && err.contains("images, labels, limit"),
        "{err}"
    );
    // A key the format needs: named, with the file.
    let err = load(&text.replace(
        "format = \"folder\", root = \"data/image-folder-sample/train\"",
        "format = \"folder\"",
    ));
    assert!(
        err.contains("f.toml") && err.contains("`data.train.root`: required"),
        "{err}"
    );
    let err = load(&text.replace("channels = 3", "channels = 2"));
    assert!(err.contains("data.image.channels"), "{err}");
}
