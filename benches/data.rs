//! How long the training step waits for data: a folder of JPEGs with MAE's augmentations,
//! loaded synchronously (decode + augment inside the step) and with the prefetching loader
//! (decode + augment on a worker thread, 2 batches ahead).
//!
//! ```text
//! cargo bench --bench data
//! ```
//!
//! Writes `FILES` RGB JPEGs of `SIDE x SIDE` pixels, about ImageNet's size (Fashion-MNIST
//! sample images, upscaled and tinted) into `target/bench-data/folder` once, then runs, for each mode, `WARMUP` steps and
//! `STEPS` timed training steps of an MAE (quickstart-sized encoder, 32x32x3 input, patch 4)
//! on batches of `BATCH`, with RandomResizedCrop(scale 0.2..1) + horizontal flip. Per step it
//! times the wait for the batch and the step itself (masking noise + forward + backward +
//! AdamW), and prints means and totals. Both modes see the same batches (the loader is
//! deterministic), so the compute is the same work.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use image::imageops::{self, FilterType};
use image::RgbImage;
use pretext::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use pretext::draws::Draws;
use pretext::modality::image::augment::{Augment, RandomResizedCrop};
use pretext::modality::image::batch::BatchMaker;
use pretext::modality::image::dataset::ImageDataset;
use pretext::modality::image::idx::read_idx_images;
use pretext::modality::image::ImageGeometry;
use pretext::objective::mae::{ImageMae, ImageMaeConfig};
use pretext::objective::masking::Masking;
use pretext::params::ParamStore;
use pretext::train::loader::{BatchShape, Loader};
use pretext::train::sampler::{Position, Sampler};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILES: usize = 512;
const SIDE: u32 = 384;
const SIZE: usize = 32;
const BATCH: usize = 64;
const WARMUP: usize = 2;
const STEPS: usize = 8;
const DEPTH: usize = 2;

fn encoder(dim: usize, depth: usize, heads: usize) -> EncoderConfig {
    EncoderConfig {
        dim,
        depth,
        heads,
        mlp_dim: 4 * dim,
        norm: NormPosition::Pre,
        activation: Activation::Gelu,
        norm_eps: 1e-6,
        qkv_bias: true,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    }
}

/// The JPEG folder (one class directory per tenth of the files), made once.
fn folder(root: &Path) -> PathBuf {
    let dir = root.join("target/bench-data/folder");
    let done = dir.join(".complete");
    if done.exists() {
        return dir;
    }
    let src = read_idx_images(&root.join("data/fashion-mnist-sample/train-images-idx3-ubyte.gz"))
        .expect("the committed Fashion-MNIST sample");
    for i in 0..FILES {
        let class = dir.join(format!("c{}", i % 10));
        std::fs::create_dir_all(&class).expect("bench folder");
        let px = src.image(i % src.n).expect("image");
        let rgb = RgbImage::from_fn(src.cols as u32, src.rows as u32, |x, y| {
            let v = px[y as usize * src.cols + x as usize] as u32;
            image::Rgb([v as u8, (v * 3 / 4) as u8, (255 - v / 2) as u8])
        });
        imageops::resize(&rgb, SIDE, SIDE, FilterType::Triangle)
            .save(class.join(format!("{i:05}.jpg")))
            .expect("write jpeg");
    }
    std::fs::write(&done, b"").expect("marker");
    dir
}

struct Timing {
    wait: Vec<f64>,
    step: Vec<f64>,
    loss: f32,
}

fn run(mut loader: Loader<Vec<f32>>, mae: &ImageMae, opt: &mut AdamW, dev: &Device) -> Timing {
    let mut t = Timing {
        wait: Vec::new(),
        step: Vec::new(),
        loss: f32::NAN,
    };
    for i in 0..WARMUP + STEPS {
        let t0 = Instant::now();
        let batch = loader.next_batch().expect("batch");
        let waited = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let imgs =
            candle_core::Tensor::from_vec(batch.data, (BATCH, 3, SIZE, SIZE), dev).expect("tensor");
        let draws = Draws::new(0, i as u64, 0, BATCH);
        let noise = mae.sample_noise(&draws, dev).expect("noise");
        let out = mae
            .forward(&imgs, &noise, &mut Mode::train(draws))
            .expect("forward");
        opt.backward_step(&out.loss).expect("step");
        t.loss = out.loss.to_scalar::<f32>().expect("loss");
        if i >= WARMUP {
            t.wait.push(waited);
            t.step.push(t1.elapsed().as_secs_f64());
        }
    }
    t
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let dir = folder(&root);
    let data = ImageDataset::from_folder(&dir, 3, SIZE).expect("folder");
    eprintln!(
        "folder: {} JPEGs {SIDE}x{SIDE} RGB in {} (ready in {:.1} s)",
        data.len,
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    let maker = BatchMaker {
        data,
        augment: Some(Augment {
            crop: Some(RandomResizedCrop {
                scale: [0.2, 1.0],
                ratio: [0.75, 4.0 / 3.0],
            }),
            hflip: 0.5,
            erase: None,
            seed: 0,
        }),
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    };
    let cfg = ImageMaeConfig {
        geometry: ImageGeometry {
            size: SIZE,
            channels: 3,
            patch: 4,
        },
        encoder: encoder(128, 4, 4),
        decoder: encoder(64, 2, 4),
        mask_ratio: 0.75,
        masking: Masking::Random,
        norm_pix_loss: false,
    };
    let threads = candle_core::utils::get_num_threads();
    println!(
        "MAE {SIZE}x{SIZE}x3 patch 4, encoder 128x4, decoder 64x2, batch {BATCH}; data: {} JPEGs \
         {SIDE}x{SIDE}, RandomResizedCrop(0.2..1) + hflip; {threads} threads; {WARMUP} warm-up + \
         {STEPS} timed steps per mode",
        maker.data.len
    );
    let mut results = Vec::new();
    for (name, prefetch) in [("synchronous", false), ("prefetch (2 ahead)", true)] {
        let store = ParamStore::new(0);
        let mae = ImageMae::new(&cfg, store.var_builder(&dev)).expect("MAE");
        let vars = store.vars().into_iter().map(|(_, v)| v).collect();
        let mut opt = AdamW::new(vars, ParamsAdamW::default()).expect("AdamW");
        let sampler = Sampler::new(maker.data.len, 0, Position::default());
        let loader = if prefetch {
            Loader::prefetching(maker.clone(), sampler, BatchShape::whole(BATCH), DEPTH)
                .expect("loader")
        } else {
            Loader::synchronous(maker.clone(), sampler, BatchShape::whole(BATCH))
        };
        let started = Instant::now();
        let t = run(loader, &mae, &mut opt, &dev);
        let wall = started.elapsed().as_secs_f64();
        results.push((name, t, wall));
    }
    println!();
    println!(
        "{:<20} {:>16} {:>16} {:>14} {:>12}",
        "", "data wait / step", "compute / step", "wait share", "samples/s"
    );
    for (name, t, _) in &results {
        let (w, s) = (mean(&t.wait), mean(&t.step));
        println!(
            "{name:<20} {:>13.1} ms {:>13.1} ms {:>13.1} % {:>12.1}",
            w * 1e3,
            s * 1e3,
            100.0 * w / (w + s),
            BATCH as f64 / (w + s)
        );
    }
    println!(
        "last losses (same batches, same init): {:.5} / {:.5}",
        results[0].1.loss, results[1].1.loss
    );
}
