//! Shared helpers for integration tests: a tiny recipe on the committed Fashion-MNIST
//! sample. (Included with `mod common;`.)
#![allow(dead_code)]

use pretext::train::checkpoint;
use std::path::{Path, PathBuf};

/// A recipe small enough to train in seconds: 64 sample images, a 1-block encoder,
/// dropout on (so resumption must restore the RNG too).
pub fn tiny_recipe(steps: usize, checkpoint_every: usize) -> String {
    format!(
        r#"
name = "tiny"
seed = 3
device = "cpu"

[model]
dim = 32
depth = 1
heads = 2
mlp_dim = 64
dropout = 0.1

[data]
modality = "image"
train = {{ format = "idx", images = "data/fashion-mnist-sample/train-images-idx3-ubyte.gz", labels = "data/fashion-mnist-sample/train-labels-idx1-ubyte.gz", limit = 64 }}
test = {{ format = "idx", images = "data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz", labels = "data/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz", limit = 40 }}
image = {{ size = 28, channels = 1, patch = 7, mean = [0.2860], std = [0.3530] }}

[objective]
kind = "mae"
mask_ratio = 0.75
decoder = {{ dim = 16, depth = 1, heads = 2 }}

[train]
steps = {steps}
batch_size = 16
grad_accum = 2
optimizer = {{ kind = "adamw", lr = 1e-3 }}
schedule = {{ kind = "cosine", warmup_steps = 2 }}
clip_grad_norm = 1.0
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2
log_every = 1

[[downstream]]
head = "linear-probe"
pooling = "cls"
label_fractions = [0.5, 1.0]
epochs = 5
"#
    )
}

/// Writes `text` as a recipe file in `dir`.
pub fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `pretext run RECIPE --out RUN_DIR` (output discarded).
pub fn spawn_run(recipe: &Path, run_dir: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (at most 2 minutes) for the first checkpoint in `ckpts`.
pub fn wait_for_first_checkpoint(ckpts: &Path) {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    while checkpoint::list(ckpts).map(|l| l.len()).unwrap_or(0) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint within 2 minutes in {}",
            ckpts.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (at most 2 minutes) for the first checkpoint in `ckpts`, then kills `child` with
/// SIGKILL (no chance to clean up) and returns the step of the latest checkpoint left.
pub fn kill_after_first_checkpoint(mut child: std::process::Child, ckpts: &Path) -> usize {
    wait_for_first_checkpoint(ckpts);
    child.kill().unwrap();
    child.wait().unwrap();
    checkpoint::list(ckpts).unwrap().last().unwrap().0
}

/// Every tensor (model and optimizer state) of the latest checkpoint in `run_dir`, as bits.
pub fn final_weights(run_dir: &Path) -> std::collections::BTreeMap<String, Vec<u32>> {
    let path = pretext::train::checkpoint::latest(&run_dir.join("checkpoints"))
        .unwrap()
        .unwrap();
    let c = pretext::train::checkpoint::load(&path, &candle_core::Device::Cpu).unwrap();
    c.model
        .iter()
        .chain(c.optim.iter())
        .map(|(k, t)| {
            let bits = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|f| f.to_bits())
                .collect();
            (k.clone(), bits)
        })
        .collect()
}

/// Asserts that the latest checkpoints of two runs hold the same tensors, bit for bit.
pub fn assert_same_final_weights(straight: &Path, resumed: &Path) {
    let (a, b) = (final_weights(straight), final_weights(resumed));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "tensor `{k}` differs after resumption");
    }
}

/// `--set` overrides that shrink `recipes/audio-mae-words-sample.toml` to a two-step run on
/// the CPU (heads still to be chosen with a `downstream=` override).
pub const TINY_AUDIO: [&str; 11] = [
    "device=\"cpu\"",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.mlp_dim=64",
    "objective.decoder.dim=16",
    "objective.decoder.heads=2",
    "train.steps=2",
    "train.batch_size=8",
    "train.checkpoint_every=2",
    "train.schedule.warmup_steps=1",
];

/// The same for `recipes/mlm-shakespeare-sample.toml` (a 600-token WordPiece vocabulary,
/// 32-token sequences).
pub const TINY_TEXT: [&str; 10] = [
    "device=\"cpu\"",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.mlp_dim=64",
    "data.text.max_len=32",
    "data.text.tokenizer.vocab_size=600",
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.schedule.warmup_steps=1",
];

/// `pretext run RECIPE --out OUT` with `--set` for each of `sets`, as arguments.
pub fn run_args<'a>(recipe: &'a str, out: &'a str, sets: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", recipe, "--out", out];
    for s in sets {
        args.extend(["--set", s]);
    }
    args
}

/// `pretext forward --model MODEL` on `inputs` (written as `dir/in.safetensors`): its
/// outputs, which must be written.
pub fn forward(
    model: &Path,
    inputs: &std::collections::HashMap<&str, candle_core::Tensor>,
    dir: &Path,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    let (i, o) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    candle_core::safetensors::save(inputs, &i).unwrap();
    let args = [
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--inputs",
        i.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pretext {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    candle_core::safetensors::load(&o, &candle_core::Device::Cpu).unwrap()
}

/// The committed Hugging Face fixtures.
pub fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

/// The Hugging Face fixtures: `PRETEXT_HF_FIXTURES` (regenerated by scripts/check-hf.sh),
/// else the committed ones.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("PRETEXT_HF_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => committed(),
    }
}

/// The tensors of a safetensors file.
pub fn read(path: &Path) -> std::collections::BTreeMap<String, candle_core::Tensor> {
    pretext::tensor_io::read(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors
}

/// max|a - b| (tensors of the same shape, in f32).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let d = (a.to_dtype(candle_core::DType::F32).unwrap()
        - b.to_dtype(candle_core::DType::F32).unwrap())
    .unwrap();
    d.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max|actual - expected| / max|expected|.
pub fn rel_err(actual: &candle_core::Tensor, expected: &candle_core::Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let a = actual.to_dtype(candle_core::DType::F32).unwrap();
    let e = expected.to_dtype(candle_core::DType::F32).unwrap();
    let diff = (a - &e).unwrap().abs().unwrap().max_all().unwrap();
    let scale = e.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
}
