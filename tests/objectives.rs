//! SimMIM and the mask generators: exact counts, block shape, MAE noise equivalence,
//! mask-token semantics, the loss falling on real data, and bitwise resumption of a run
//! that uses every new piece (image folder, augmentations, prefetching, block masks, SimMIM).

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use pretext::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use pretext::draws::Draws;
use pretext::modality::image::patch::patchify;
use pretext::modality::image::ImageGeometry;
use pretext::objective::mae::{ImageMae, ImageMaeConfig};
use pretext::objective::masking::{block_mask, GridMasker, Masking};
use pretext::objective::simmim::{SimMim, SimMimConfig};
use pretext::params::ParamStore;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn encoder(dim: usize) -> EncoderConfig {
    EncoderConfig {
        dim,
        depth: 1,
        heads: 2,
        mlp_dim: 2 * dim,
        norm: NormPosition::Pre,
        activation: Activation::Gelu,
        norm_eps: 1e-6,
        qkv_bias: true,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    }
}

const GEOMETRY: ImageGeometry = ImageGeometry {
    size: 28,
    channels: 1,
    patch: 4,
};

/// Fraction of masked patches with a masked 4-neighbour.
fn neighbourly(mask: &[bool], grid: usize) -> f64 {
    let masked: Vec<usize> = (0..mask.len()).filter(|&c| mask[c]).collect();
    let near = masked
        .iter()
        .filter(|&&c| {
            let (i, j) = (c / grid, c % grid);
            (i > 0 && mask[c - grid])
                || (i + 1 < grid && mask[c + grid])
                || (j > 0 && mask[c - 1])
                || (j + 1 < grid && mask[c + 1])
        })
        .count();
    near as f64 / masked.len().max(1) as f64
}

#[test]
fn block_masks_have_the_exact_count_and_come_in_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for grid in [7, 14] {
        for ratio in [0.1, 0.3, 0.4, 0.6, 0.75, 0.9] {
            let g = GridMasker::image(grid, ratio, Masking::Block).unwrap();
            let (mut block, mut random) = (0.0, 0.0);
            for trial in 0..50 {
                let m = block_mask(grid, grid, g.num_masked(), &mut rng);
                assert_eq!(m.iter().filter(|&&b| b).count(), g.num_masked());
                block += neighbourly(&m, grid) / 50.0;
                let r = GridMasker::image(grid, ratio, Masking::Random)
                    .unwrap()
                    .mask(&Draws::new(0, trial, 0, 1), &Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(r.iter().filter(|&&v| v == 1.0).count(), g.num_masked());
                random +=
                    neighbourly(&r.iter().map(|&v| v == 1.0).collect::<Vec<_>>(), grid) / 50.0;
            }
            // Blocks of >= 4 patches: nearly every masked patch touches another (BEiT may
            // place a lone 1x1 block when only one patch is still missing).
            assert!(block > 0.9, "grid {grid} ratio {ratio}: {block}");
            if ratio <= 0.4 {
                assert!(
                    random < block - 0.1,
                    "grid {grid} ratio {ratio}: {random} vs {block}"
                );
            }
        }
    }
    // Seeded: the same RNG state gives the same mask.
    let a = block_mask(14, 14, 79, &mut ChaCha8Rng::seed_from_u64(9));
    assert_eq!(a, block_mask(14, 14, 79, &mut ChaCha8Rng::seed_from_u64(9)));
}

#[test]
fn block_noise_makes_mae_remove_exactly_the_block_mask() {
    let store = ParamStore::new(1);
    let mae = ImageMae::new(
        &ImageMaeConfig {
            geometry: GEOMETRY,
            encoder: encoder(16),
            decoder: encoder(8),
            mask_ratio: 0.6,
            masking: Masking::Block,
            norm_pix_loss: false,
        },
        store.var_builder(&Device::Cpu),
    )
    .unwrap();
    let noise = mae
        .sample_noise(&Draws::new(2, 0, 0, 6), &Device::Cpu)
        .unwrap();
    let x = Tensor::zeros((6, 49, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let (kept, mask, _) = mae.random_masking(&x, &noise).unwrap();
    assert_eq!(kept.dim(1).unwrap(), mae.len_keep());
    let blocks = noise
        .ge(1.0)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    assert_eq!(
        mask.to_vec2::<f32>().unwrap(),
        blocks.to_vec2::<f32>().unwrap()
    );
}

fn tiny_simmim(norm_pix_loss: bool) -> (ParamStore, SimMim) {
    let store = ParamStore::new(4);
    let sim = SimMim::new(
        &SimMimConfig {
            geometry: GEOMETRY,
            encoder: encoder(16),
            mask_ratio: 0.6,
            masking: Masking::Block,
            norm_pix_loss,
        },
        store.var_builder(&Device::Cpu),
    )
    .unwrap();
    (store, sim)
}

#[test]
fn simmim_hides_masked_patches_and_scores_only_them() {
    let dev = Device::Cpu;
    let (store, sim) = tiny_simmim(false);
    let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"mask_token".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("vit.encoder.")));
    let mask = GridMasker::image(7, 0.6, Masking::Block)
        .unwrap()
        .mask(&Draws::new(3, 0, 0, 2), &dev)
        .unwrap();
    let imgs = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &dev).unwrap();
    // Changing the pixels of removed patches changes nothing the encoder sees.
    let pixel_mask = pretext::modality::image::patch::unpatchify(
        &mask.unsqueeze(2).unwrap().repeat((1, 1, 16)).unwrap(),
        4,
        1,
    )
    .unwrap();
    let noise = Tensor::randn(0f32, 5.0, (2, 1, 28, 28), &dev).unwrap();
    let other = (&imgs + (noise * &pixel_mask).unwrap()).unwrap();
    let h1 = sim.forward_encoder(&imgs, &mask, &mut Mode::Eval).unwrap();
    let h2 = sim.forward_encoder(&other, &mask, &mut Mode::Eval).unwrap();
    let diff = (h1 - h2).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // The loss is the mean absolute error over the pixels of removed patches.
    let out = sim.forward(&imgs, &mask, &mut Mode::Eval).unwrap();
    let pred = out.pred.to_vec3::<f32>().unwrap();
    let target = patchify(&imgs, 4).unwrap().to_vec3::<f32>().unwrap();
    let m = mask.to_vec2::<f32>().unwrap();
    let (mut sum, mut n) = (0f64, 0usize);
    for b in 0..2 {
        for l in 0..49 {
            if m[b][l] == 1.0 {
                for k in 0..16 {
                    sum += (pred[b][l][k] - target[b][l][k]).abs() as f64;
                    n += 1;
                }
            }
        }
    }
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (loss - sum / n as f64).abs() < 1e-5,
        "{loss} vs {}",
        sum / n as f64
    );
    // Every parameter gets a gradient.
    let grads = out.loss.backward().unwrap();
    for (name, var) in store.vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm.is_finite() && norm > 0.0, "{name}: {norm}");
    }
}

fn simmim_recipe(steps: usize, checkpoint_every: usize) -> String {
    common::tiny_recipe(steps, checkpoint_every)
        .replace(
            "kind = \"mae\"",
            "kind = \"simmim\"\nmasking = \"block\"\nnorm_pix_loss = false",
        )
        .replace("mask_ratio = 0.75", "mask_ratio = 0.6")
        .replace("decoder = { dim = 16, depth = 1, heads = 2 }\n", "")
}

fn losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn simmim_loss_falls_on_the_fashion_mnist_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &simmim_recipe(40, 40));
    let loaded = recipe::load(
        &file,
        &[
            Override::Unset("downstream".into()),
            Override::Set("model.dropout".into(), "0.0".into()),
            Override::Set("train.optimizer.lr".into(), "3e-3".into()),
        ],
    )
    .unwrap();
    let out = tmp.path().join("run");
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let l = losses(&out);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.8 * first, "loss {first:.4} -> {last:.4}: {l:?}");
    assert!(out
        .join("pictures/reconstruction-step-0000040.png")
        .is_file());
}

#[test]
fn folder_augmented_block_simmim_run_resumes_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let text = simmim_recipe(6, 3)
        .replace(
            r#"train = { format = "idx", images = "data/fashion-mnist-sample/train-images-idx3-ubyte.gz", labels = "data/fashion-mnist-sample/train-labels-idx1-ubyte.gz", limit = 64 }"#,
            r#"train = { format = "folder", root = "data/image-folder-sample/train" }"#,
        )
        .replace(
            r#"test = { format = "idx", images = "data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz", labels = "data/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz", limit = 40 }"#,
            r#"test = { format = "folder", root = "data/image-folder-sample/test" }"#,
        )
        .replace(
            "image = { size = 28, channels = 1, patch = 7, mean = [0.2860], std = [0.3530] }",
            "image = { size = 28, channels = 3, patch = 7, mean = [0.3, 0.3, 0.3], std = [0.3, 0.3, 0.3] }\naugment = { random_resized_crop = { scale = [0.3, 1.0] }, hflip = 0.5 }",
        );
    assert!(text.contains("format = \"folder\"") && text.contains("augment"));
    let file = common::write_recipe(tmp.path(), &text);
    let loaded = recipe::load(&file, &[Override::Unset("downstream".into())]).unwrap();
    let straight = tmp.path().join("straight");
    run::start(
        &loaded,
        &RunOptions {
            out: Some(straight.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let resumed = tmp.path().join("resumed");
    run::start(
        &loaded,
        &RunOptions {
            out: Some(resumed.clone()),
            stop_after: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    run::resume(&resumed, &[], &RunOptions::default()).unwrap();
    let weights = |dir: &Path| {
        let path = checkpoint::latest(&dir.join("checkpoints"))
            .unwrap()
            .unwrap();
        let c = checkpoint::load(&path, &Device::Cpu).unwrap();
        c.model
            .iter()
            .map(|(k, t)| {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (k.clone(), v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (weights(&straight), weights(&resumed));
    assert!(a.contains_key("mask_token"));
    assert!(a == b, "weights differ after resumption");
    assert_eq!(losses(&straight), losses(&resumed));
}
