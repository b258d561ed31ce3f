//! `pretext export / forward / embed` through the real binary: Hugging Face directories,
//! the hub cache layout, pretext runs and saved classifiers, and their errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use pretext::backbone::{Activation, EncoderConfig, NormPosition};
use pretext::modality::image::{ClassifierSpec, ImageClassifier, ImageGeometry};
use pretext::params::ParamStore;
use pretext::recipe::Pooling;

fn pretext_env(args: &[&str], env: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr,
    )
}

fn pretext(args: &[&str]) -> String {
    let (ok, out) = pretext_env(args, &[]);
    assert!(ok, "pretext {args:?} failed: {out}");
    out
}

fn pretext_fails(args: &[&str]) -> String {
    let (ok, out) = pretext_env(args, &[]);
    assert!(!ok, "pretext {args:?} should fail: {out}");
    assert!(out.starts_with("error: "), "{out}");
    out
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    pretext::tensor_io::read(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn max_rel(a: &Tensor, e: &Tensor) -> f32 {
    assert_eq!(a.dims(), e.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    let e = e.to_dtype(DType::F32).unwrap();
    let d = (a - &e).unwrap().abs().unwrap().max_all().unwrap();
    let m = e.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

/// `pretext forward` on `inputs`; the outputs.
fn forward(model: &str, inputs: &Path, dir: &Path, tag: &str) -> BTreeMap<String, Tensor> {
    let out = dir.join(format!("{tag}.out.safetensors"));
    pretext(&[
        "forward",
        "--model",
        model,
        "--inputs",
        s(inputs),
        "--out",
        s(&out),
    ]);
    read(&out)
}

fn assert_same_outputs(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in a {
        assert!(max_rel(t, &b[k]) < 1e-6, "{k}");
    }
}

#[test]
fn forward_writes_transformers_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let io = fixture("vit_mae_norm_pix").join("io.safetensors");
    let out = forward(s(&fixture("vit_mae_norm_pix")), &io, tmp.path(), "mae");
    let expected = read(&io);
    assert_eq!(out["ids_restore"].dtype(), DType::I64);
    assert_eq!(out["mask"].dtype(), DType::F32);
    for key in ["last_hidden_state", "logits", "loss", "mask", "ids_restore"] {
        assert!(max_rel(&out[key], &expected[key]) < 1e-4, "{key}");
    }
    let cls = fixture("vit_classifier");
    let out = forward(s(&cls), &cls.join("io.safetensors"), tmp.path(), "cls");
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["last_hidden_state", "logits", "loss"]
    );
}

/// `--device cpu` gives what the default (`auto`, the CPU in a CPU-only build) gives; a
/// device the binary was not built for, or a misspelled one, is a clear error.
#[test]
fn forward_and_embed_honour_the_device_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cls = fixture("vit_classifier");
    let io = cls.join("io.safetensors");
    let auto = forward(s(&cls), &io, tmp.path(), "auto");
    let out = tmp.path().join("cpu.out.safetensors");
    pretext(&[
        "forward",
        "--model",
        s(&cls),
        "--inputs",
        s(&io),
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert_same_outputs(&auto, &read(&out));
    let err = pretext_fails(&[
        "forward",
        "--model",
        s(&cls),
        "--inputs",
        s(&io),
        "--out",
        s(&out),
        "--device",
        "gpu",
    ]);
    assert!(err.contains("unknown device `gpu`"), "{err}");
    if !cfg!(feature = "cuda") {
        let img = tmp.path().join("a.png");
        write_png(&img, 8, 8, [10, 200, 30]);
        let err = pretext_fails(&[
            "embed",
            "--model",
            s(&cls),
            "--image",
            s(&img),
            "--device",
            "cuda:0",
        ]);
        assert!(err.contains("without the `cuda` feature"), "{err}");
    }
}

#[test]
fn forward_input_errors_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in.safetensors");
    let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    pretext::tensor_io::write(&inputs, &[("pixels".into(), x.clone())], Default::default())
        .unwrap();
    let out = tmp.path().join("out.safetensors");
    let model = fixture("vit_model");
    let args = [
        "forward",
        "--model",
        s(&model),
        "--inputs",
        s(&inputs),
        "--out",
        s(&out),
    ];
    let err = pretext_fails(&args);
    assert!(
        err.contains("in.safetensors") && err.contains("`pixel_values`"),
        "{err}"
    );
    pretext::tensor_io::write(&inputs, &[("pixel_values".into(), x)], Default::default()).unwrap();
    let err = pretext_fails(&args);
    assert!(err.contains("expected images [B, 3, 16, 16]"), "{err}");
}

/// A Hugging Face cache (`$HF_HOME/hub`) holding fixture `case` as `org/name`, laid out as
/// huggingface_hub writes it: blobs, a snapshot of symlinks, refs/main.
fn hub_cache(home: &Path, case: &str, repo: &str, commit: &str) {
    let repo_dir = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    for (i, f) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = repo_dir.join("blobs").join(format!("blob{i}"));
        std::fs::copy(fixture(case).join(f), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snap.join(f)).unwrap();
    }
    std::fs::write(repo_dir.join("refs").join("main"), commit).unwrap();
}

#[test]
fn hf_sources_read_the_hub_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    hub_cache(&home, "vit_model", "tiny-org/vit-model", commit);
    let io = fixture("vit_model").join("io.safetensors");
    let expected = read(&io);
    let env = [
        ("HF_HOME", home.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    for src in [
        "hf:tiny-org/vit-model".to_string(),
        format!("hf:tiny-org/vit-model@{commit}"),
    ] {
        let out = tmp.path().join("out.safetensors");
        let (ok, msg) = pretext_env(
            &[
                "forward",
                "--model",
                &src,
                "--inputs",
                s(&io),
                "--out",
                s(&out),
            ],
            &env,
        );
        assert!(ok, "{src}: {msg}");
        let got = read(&out);
        assert!(max_rel(&got["pooler_output"], &expected["pooler_output"]) < 1e-4);
    }
    // HF_HUB_CACHE wins over HF_HOME.
    let out = tmp.path().join("out.safetensors");
    let (ok, msg) = pretext_env(
        &[
            "forward",
            "--model",
            "hf:tiny-org/vit-model",
            "--inputs",
            s(&io),
            "--out",
            s(&out),
        ],
        &[("HF_HUB_CACHE", &home.join("hub"))],
    );
    assert!(ok, "{msg}");
    // Not in the cache: says where it looked and how to fetch it.
    let (ok, msg) = pretext_env(
        &[
            "export",
            "hf:tiny-org/other@v2",
            "--format",
            "hf",
            "--out",
            s(&tmp.path().join("x")),
        ],
        &env,
    );
    assert!(!ok);
    assert!(msg.contains("models--tiny-org--other"), "{msg}");
    assert!(
        msg.contains("huggingface-cli download tiny-org/other"),
        "{msg}"
    );
    let (ok, msg) = pretext_env(&["export", "hf:", "--format", "hf", "--out", "x"], &env);
    assert!(!ok && msg.contains("expected hf:org/name"), "{msg}");
}

#[test]
fn export_of_hf_dirs_writes_the_save_pretrained_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["vit_model", "vit_classifier", "vit_mae_raw"] {
        let out = tmp.path().join(case);
        pretext(&[
            "export",
            s(&fixture(case)),
            "--format",
            "hf",
            "--out",
            s(&out),
        ]);
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
        // Same names as save_pretrained wrote, except the decoder layers, which export
        // writes as the hub does (decoder_layers.{i}).
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = read(p)
                .into_keys()
                .map(|k| k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&out.join("model.safetensors")),
            names(&fixture(case).join("model.safetensors")),
            "{case}"
        );
        // And it runs the same.
        let io = fixture(case).join("io.safetensors");
        let a = forward(s(&fixture(case)), &io, tmp.path(), "a");
        let b = forward(s(&out), &io, tmp.path(), "b");
        assert_same_outputs(&a, &b);
        let c = forward(s(&out.join("model.safetensors")), &io, tmp.path(), "c");
        assert_same_outputs(&a, &c);
    }
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("vit_classifier/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["architectures"][0], "ViTForImageClassification");
    assert_eq!(cfg["id2label"].as_object().unwrap().len(), 5);
    assert_eq!(cfg["hidden_act"], "gelu_new");
    assert_eq!(cfg["qkv_bias"], false);
}

/// A tiny MAE run on the committed sample (2 steps, no downstream).
fn tiny_run(dir: &Path) -> PathBuf {
    let text = common::tiny_recipe(2, 2);
    let text = &text[..text.find("[[downstream]]").unwrap()];
    let file = common::write_recipe(dir, text);
    let run = dir.join("run");
    pretext(&["run", s(&file), "--out", s(&run)]);
    run
}

#[test]
fn mae_run_exports_as_vit_mae_for_pretraining() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let hf = tmp.path().join("hf");
    pretext(&["export", s(&run), "--format", "hf", "--out", s(&hf)]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    for (k, v) in [
        ("architectures", serde_json::json!(["ViTMAEForPreTraining"])),
        ("model_type", "vit_mae".into()),
        ("hidden_size", 32.into()),
        ("num_hidden_layers", 1.into()),
        ("intermediate_size", 64.into()),
        ("decoder_hidden_size", 16.into()),
        ("decoder_intermediate_size", 64.into()),
        ("image_size", 28.into()),
        ("patch_size", 7.into()),
        ("num_channels", 1.into()),
        ("hidden_act", "gelu".into()),
        ("qkv_bias", true.into()),
        ("mask_ratio", 0.75.into()),
        ("norm_pix_loss", true.into()),
    ] {
        assert_eq!(cfg[k], v, "{k}");
    }
    let pre: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hf.join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pre["image_mean"], serde_json::json!([0.286]));
    // The run, its checkpoint file and the export compute the same thing.
    let inputs = tmp.path().join("in.safetensors");
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &dev).unwrap();
    let noise = Tensor::rand(0f32, 1.0, (2, 16), &dev).unwrap();
    pretext::tensor_io::write(
        &inputs,
        &[("pixel_values".into(), x), ("noise".into(), noise)],
        Default::default(),
    )
    .unwrap();
    let a = forward(s(&run), &inputs, tmp.path(), "run");
    let ckpt = run.join("checkpoints/step-0000002.safetensors");
    let b = forward(s(&ckpt), &inputs, tmp.path(), "ckpt");
    let c = forward(s(&hf), &inputs, tmp.path(), "hf");
    assert_same_outputs(&a, &b);
    assert_same_outputs(&a, &c);
    assert_eq!(
        a["mask"].sum_all().unwrap().to_scalar::<f32>().unwrap(),
        24.0
    );
}

#[test]
fn mae_run_that_vit_mae_cannot_represent_is_refused() {
    // Our decoder is always exact GELU; ViTMAEConfig has one hidden_act for both stacks.
    let tmp = tempfile::tempdir().unwrap();
    let text = common::tiny_recipe(2, 2);
    let text = text[..text.find("[[downstream]]").unwrap()]
        .replace("dropout = 0.1", "dropout = 0.1\nactivation = \"relu\"");
    let file = common::write_recipe(tmp.path(), &text);
    let run = tmp.path().join("run");
    pretext(&["run", s(&file), "--out", s(&run)]);
    let err = pretext_fails(&[
        "export",
        s(&run),
        "--format",
        "hf",
        "--out",
        s(&tmp.path().join("hf")),
    ]);
    assert!(
        err.contains("cannot export as ViTMAEForPreTraining"),
        "{err}"
    );
    assert!(err.contains("another activation"), "{err}");
    // It still runs.
    let inputs = tmp.path().join("in.safetensors");
    let x = Tensor::zeros((1, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    pretext::tensor_io::write(&inputs, &[("pixel_values".into(), x)], Default::default()).unwrap();
    let out = forward(s(&run), &inputs, tmp.path(), "relu");
    assert_eq!(out["noise"].dims(), [1, 16]);
}

#[test]
fn simmim_run_exports_its_encoder_as_vit_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    pretext(&[
        "run",
        "recipes/simmim-fashion-mnist-sample.toml",
        "--out",
        s(&run),
        "--set",
        "device=cpu",
        "--set",
        "train.steps=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.schedule.warmup_steps=1",
        "--set",
        "data.train.limit=16",
        "--set",
        "model.dim=32",
        "--set",
        "model.depth=1",
        "--set",
        "model.heads=2",
        "--set",
        "model.mlp_dim=64",
        "--set",
        "downstream=[]",
    ]);
    let hf = tmp.path().join("hf");
    let (ok, msg) = pretext_env(&["export", s(&run), "--format", "hf", "--out", s(&hf)], &[]);
    assert!(ok, "{msg}");
    assert!(
        msg.contains("(ViTModel)") && msg.contains("add_pooling_layer=False"),
        "{msg}"
    );
    let inputs = tmp.path().join("in.safetensors");
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    pretext::tensor_io::write(&inputs, &[("pixel_values".into(), x)], Default::default()).unwrap();
    let a = forward(s(&run), &inputs, tmp.path(), "run");
    let b = forward(s(&hf), &inputs, tmp.path(), "hf");
    assert_eq!(a.keys().collect::<Vec<_>>(), ["last_hidden_state"]);
    assert_same_outputs(&a, &b);
}

/// A saved classifier directory with random weights (the layout the downstream stage
/// writes: model.json + model.safetensors under pretext's names).
fn saved_classifier(dir: &Path, pooling: Pooling, norm: NormPosition) {
    let spec = ClassifierSpec::new(
        ImageGeometry {
            size: 12,
            channels: 3,
            patch: 4,
        },
        EncoderConfig {
            dim: 16,
            depth: 2,
            heads: 2,
            mlp_dim: 24,
            norm,
            activation: Activation::Gelu,
            norm_eps: 1e-6,
            qkv_bias: true,
            dropout: 0.0,
            attention_dropout: 0.0,
            drop_path: 0.0,
        },
        4,
        pooling,
        Vec::new(),
    );
    let params = ParamStore::new(11);
    ImageClassifier::new(&spec, params.var_builder(&Device::Cpu)).unwrap();
    let vars: Vec<(String, Tensor)> = params
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    pretext::tensor_io::write(&dir.join("model.safetensors"), &vars, Default::default()).unwrap();
    spec.write(dir).unwrap();
}

#[test]
fn saved_classifier_exports_as_vit_for_image_classification() {
    let tmp = tempfile::tempdir().unwrap();
    // scripts/check-hf.sh asks for one it can round-trip through transformers.
    let cls = match std::env::var_os("PRETEXT_HF_CLASSIFIER_OUT") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("classifier"),
    };
    saved_classifier(&cls, Pooling::Cls, NormPosition::Pre);
    let hf = tmp.path().join("hf");
    pretext(&["export", s(&cls), "--format", "hf", "--out", s(&hf)]);
    let inputs = tmp.path().join("in.safetensors");
    let x = Tensor::randn(0f32, 1.0, (3, 3, 12, 12), &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0i64, 3, 1], &Device::Cpu).unwrap();
    pretext::tensor_io::write(
        &inputs,
        &[("pixel_values".into(), x), ("labels".into(), labels)],
        Default::default(),
    )
    .unwrap();
    let a = forward(s(&cls), &inputs, tmp.path(), "cls");
    let b = forward(s(&hf), &inputs, tmp.path(), "hf");
    assert_same_outputs(&a, &b);
    let names: Vec<String> = read(&hf.join("model.safetensors")).into_keys().collect();
    assert!(names.contains(&"vit.embeddings.position_embeddings".to_string()));
    assert!(names.contains(&"classifier.weight".to_string()));

    // What transformers' ViT cannot represent is refused, saying why.
    let mean = tmp.path().join("mean");
    saved_classifier(&mean, Pooling::Mean, NormPosition::Pre);
    let err = pretext_fails(&["export", s(&mean), "--format", "hf", "--out", s(&hf)]);
    assert!(err.contains("mean of the patch tokens"), "{err}");
    let post = tmp.path().join("post");
    saved_classifier(&post, Pooling::Cls, NormPosition::Post);
    let err = pretext_fails(&["export", s(&post), "--format", "hf", "--out", s(&hf)]);
    assert!(err.contains("post-norm"), "{err}");
}

fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn embed_writes_one_pooled_embedding_per_image() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.png");
    let b = tmp.path().join("b.png");
    write_png(&a, 16, 16, [255, 0, 51]);
    write_png(&b, 30, 20, [10, 200, 90]);
    let model = fixture("vit_model");
    let st = tmp.path().join("emb.safetensors");
    pretext(&[
        "embed",
        "--model",
        s(&model),
        "--image",
        s(&a),
        s(&b),
        "--out",
        s(&st),
    ]);
    let e = read(&st)["embeddings"].clone();
    assert_eq!(e.dims(), [2, 16]);
    let bytes = std::fs::read(&st).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let images: Vec<String> =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["images"]).unwrap();
    assert_eq!(images, [s(&a), s(&b)]);

    // The first image needs no resizing: its embedding is the class token of
    // last_hidden_state for pixels (v / 255 - 0.5) / 0.5.
    let px: Vec<f32> = [255f32, 0.0, 51.0]
        .iter()
        .flat_map(|v| std::iter::repeat_n((v / 255.0 - 0.5) / 0.5, 256))
        .collect();
    let x = Tensor::from_vec(px, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let inputs = tmp.path().join("in.safetensors");
    pretext::tensor_io::write(&inputs, &[("pixel_values".into(), x)], Default::default()).unwrap();
    let h = forward(s(&model), &inputs, tmp.path(), "px")["last_hidden_state"].clone();
    let cls = h.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    assert!(max_rel(&e.narrow(0, 0, 1).unwrap(), &cls) < 1e-5);

    let jl = tmp.path().join("emb.jsonl");
    pretext(&[
        "embed",
        "--model",
        s(&model),
        "--image",
        s(&a),
        s(&b),
        "--out",
        s(&jl),
        "--pooling",
        "mean",
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["image"], s(&b));
    assert_eq!(lines[1]["embedding"].as_array().unwrap().len(), 16);
    let first = lines[0]["embedding"][0].as_f64().unwrap() as f32;
    let cls0 = e
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_ne!(first, cls0, "mean pooling gave the cls embedding");

    // A grey-scale model takes colour files (converted to luma), JPEG too.
    let jpg = tmp.path().join("c.jpg");
    image::RgbImage::from_pixel(8, 8, image::Rgb([90, 90, 90]))
        .save(&jpg)
        .unwrap();
    let grey = fixture("vit_mae_raw");
    let out = pretext(&["embed", "--model", s(&grey), "--image", s(&b), s(&jpg)]);
    assert_eq!(out.lines().count(), 2);
}

#[test]
fn undecodable_image_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.png");
    std::fs::write(&bad, b"not an image at all").unwrap();
    let err = pretext_fails(&[
        "embed",
        "--model",
        s(&fixture("vit_model")),
        "--image",
        s(&bad),
    ]);
    assert!(
        err.contains("broken.png") && err.contains("cannot decode"),
        "{err}"
    );
}

#[test]
fn unknown_sources_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let err = pretext_fails(&["export", s(tmp.path()), "--format", "hf", "--out", "x"]);
    assert!(err.contains("not a model"), "{err}");
    let f = tmp.path().join("loose.safetensors");
    std::fs::write(&f, b"x").unwrap();
    let err = pretext_fails(&["export", s(&f), "--format", "hf", "--out", "x"]);
    assert!(err.contains("inside a run directory"), "{err}");
}
