//! Training-step and inference throughput of pretext's MAE against the same model in PyTorch.
//!
//! ```text
//! cargo bench --bench step
//! ```
//!
//! Builds the quickstart-sized MAE (constants below; keep them in step with
//! `recipes/quickstart.toml` and `models/vit-mini.toml`) on real Fashion-MNIST images and times
//! (a) a training step: masking noise + forward + backward + AdamW update (`candle_nn::AdamW`
//! over every parameter, so this bench does not depend on pretext's own optimizer), and
//! (b) inference: the encoder on full, unmasked images.
//!
//! The PyTorch side is `benches/reference/bench_ref.py`, which times `pretext_ref.py` — the
//! same module the parity fixtures come from, so both sides provably run the same model. It
//! runs as a server (`--serve`) and the rounds alternate, Rust then PyTorch, so drifts in
//! machine load hit both sides alike. Both get the same thread count, the same fixed batch,
//! fresh noise every step, and the same protocol (warm-up, then `ROUNDS` rounds of N steps;
//! the median samples/s over rounds is reported). Peak memory is each process's high-water
//! resident set (Rust: `VmHWM`; Python: `ru_maxrss`), next to the resident set after start-up
//! (model and data loaded, before the first step) so the working memory can be compared.
//!
//! Not compared: candle has no "no grad" mode, so the Rust inference pass still records the
//! autograd graph (parameters are `Var`s); PyTorch's runs under `torch.no_grad()`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use pretext::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use pretext::modality::image::dataset::ImageDataset;
use pretext::modality::image::ImageGeometry;
use pretext::objective::mae::{Mae, MaeConfig};
use pretext::params::ParamStore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

// Keeping freed memory instead of unmapping every large buffer matters a lot here
// (DESIGN.md: "Performance notes"); the `pretext` binary makes the same choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// ---- The model and batch (recipes/quickstart.toml + models/vit-mini.toml) ----
const IMAGE_SIZE: usize = 28;
const CHANNELS: usize = 1;
const PATCH: usize = 4;
const ENC_DIM: usize = 128;
const ENC_DEPTH: usize = 4;
const ENC_HEADS: usize = 4;
const ENC_MLP: usize = 512;
const NORM: NormPosition = NormPosition::Pre;
const ACTIVATION: Activation = Activation::Gelu;
const NORM_EPS: f64 = 1e-6;
const QKV_BIAS: bool = true;
const DEC_DIM: usize = 64;
const DEC_DEPTH: usize = 2;
const DEC_HEADS: usize = 4;
const DEC_MLP: usize = 256;
const MASK_RATIO: f64 = 0.75;
const NORM_PIX_LOSS: bool = false;
const BATCH: usize = 128;
const LR: f64 = 1.5e-3;
const BETAS: (f64, f64) = (0.9, 0.95);
const WEIGHT_DECAY: f64 = 0.05;
const ADAM_EPS: f64 = 1e-8;
const SEED: u64 = 0;
const DATA: &str = "data/fashion-mnist-sample/train-images-idx3-ubyte.gz";
const MEAN: [f32; 1] = [0.2860];
const STD: [f32; 1] = [0.3530];

// ---- The timing protocol (both sides) ----
const TRAIN_WARMUP: usize = 3;
const TRAIN_STEPS_PER_ROUND: usize = 8;
const INFER_WARMUP: usize = 2;
const INFER_STEPS_PER_ROUND: usize = 8;
const ROUNDS: usize = 7;

fn encoder(dim: usize, depth: usize, heads: usize, mlp_dim: usize) -> EncoderConfig {
    EncoderConfig {
        dim,
        depth,
        heads,
        mlp_dim,
        norm: NORM,
        activation: ACTIVATION,
        norm_eps: NORM_EPS,
        qkv_bias: QKV_BIAS,
        dropout: 0.0,
        attention_dropout: 0.0,
    }
}

fn mae_config() -> MaeConfig {
    MaeConfig {
        geometry: ImageGeometry {
            size: IMAGE_SIZE,
            channels: CHANNELS,
            patch: PATCH,
        },
        encoder: encoder(ENC_DIM, ENC_DEPTH, ENC_HEADS, ENC_MLP),
        decoder: encoder(DEC_DIM, DEC_DEPTH, DEC_HEADS, DEC_MLP),
        mask_ratio: MASK_RATIO,
        norm_pix_loss: NORM_PIX_LOSS,
    }
}

/// The same settings for `bench_ref.py`, so the constants above are the only copy.
fn reference_config(cfg: &MaeConfig, data: &Path) -> Value {
    json!({
        "model": {
            "geometry": cfg.geometry,
            "encoder": cfg.encoder,
            "decoder": cfg.decoder,
            "mask_ratio": cfg.mask_ratio,
            "norm_pix_loss": cfg.norm_pix_loss,
        },
        "batch": BATCH,
        "data": data,
        "mean": MEAN,
        "std": STD,
        "optimizer": {
            "lr": LR, "beta1": BETAS.0, "beta2": BETAS.1, "eps": ADAM_EPS,
            "weight_decay": WEIGHT_DECAY,
        },
        "seed": SEED,
        "protocol": {
            "warmup": TRAIN_WARMUP, "rounds": ROUNDS, "train_steps": TRAIN_STEPS_PER_ROUND,
            "infer_warmup": INFER_WARMUP, "infer_steps": INFER_STEPS_PER_ROUND,
        },
    })
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

struct RustSide {
    mae: Mae,
    opt: AdamW,
    imgs: Tensor,
    rng: ChaCha8Rng,
    dev: Device,
}

impl RustSide {
    /// Runs `n` training steps; returns (seconds, last loss).
    fn train(&mut self, n: usize) -> (f64, f32) {
        let mut loss = f32::NAN;
        let t0 = Instant::now();
        for _ in 0..n {
            let noise = self
                .mae
                .sample_noise(BATCH, &mut self.rng, &self.dev)
                .expect("noise");
            let out = self
                .mae
                .forward(&self.imgs, &noise, &mut Mode::Train(&mut self.rng))
                .expect("forward");
            self.opt.backward_step(&out.loss).expect("backward + step");
            loss = out.loss.to_scalar::<f32>().expect("loss");
        }
        (t0.elapsed().as_secs_f64(), loss)
    }

    /// Runs `n` encoder passes on the full images; returns seconds.
    fn infer(&mut self, n: usize) -> f64 {
        let t0 = Instant::now();
        for _ in 0..n {
            let h = self
                .mae
                .vit
                .forward(&self.imgs, &mut Mode::Eval)
                .expect("inference");
            std::hint::black_box(h);
        }
        t0.elapsed().as_secs_f64()
    }
}

/// `bench_ref.py --serve`, answering one JSON line per command.
struct PySide {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: Value,
}

impl PySide {
    fn start(root: &Path, config: &Value, threads: usize) -> Result<PySide, String> {
        let script = root.join("benches/reference/bench_ref.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--serve")
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--config")
            .arg(config.to_string())
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut py = PySide {
            child,
            stdin,
            stdout,
            ready: Value::Null,
        };
        match py.read() {
            Ok(v) if v["ready"] == true => {
                py.ready = v;
                Ok(py)
            }
            Ok(v) => Err(format!("unexpected first answer {v}")),
            Err(e) => {
                let _ = py.child.wait();
                Err(format!(
                    "{} did not start ({e}); is PyTorch installed? (`python3 -c 'import torch'`)",
                    script.display()
                ))
            }
        }
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the reference process exited".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}"))
    }

    fn ask(&mut self, cmd: &str) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let v = self.read()?;
        if let Some(err) = v.get("error") {
            return Err(format!("reference: {err}"));
        }
        Ok(v)
    }

    fn seconds(&mut self, cmd: &str) -> Result<f64, String> {
        self.ask(cmd)?["seconds"]
            .as_f64()
            .ok_or_else(|| format!("no `seconds` in the answer to {cmd:?}"))
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn fmt_rates(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dev = Device::Cpu;
    let threads = candle_core::utils::get_num_threads();
    let cfg = mae_config();
    let data = root.join(DATA);

    // ---- Rust side: model, optimizer, one fixed batch of real images ----
    let store = ParamStore::new(SEED);
    let mae = Mae::new(&cfg, store.var_builder(&dev)).expect("build the MAE");
    let vars = store.vars().into_iter().map(|(_, v)| v).collect::<Vec<_>>();
    let opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: LR,
            beta1: BETAS.0,
            beta2: BETAS.1,
            eps: ADAM_EPS,
            weight_decay: WEIGHT_DECAY,
        },
    )
    .expect("AdamW");
    let dataset = ImageDataset::from_idx(&data, None)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", data.display()));
    assert!(
        dataset.len >= BATCH,
        "{} has fewer than {BATCH} images",
        data.display()
    );
    let indices: Vec<usize> = (0..BATCH).collect();
    let imgs = dataset
        .batch(&indices, &MEAN, &STD, &dev)
        .expect("image batch");
    let mut rust = RustSide {
        mae,
        opt,
        imgs,
        rng: ChaCha8Rng::seed_from_u64(SEED),
        dev,
    };
    let rust_baseline = proc_status_kib("VmRSS");

    // ---- PyTorch side ----
    let mut py = match PySide::start(&root, &reference_config(&cfg, &data), threads) {
        Ok(py) => Some(py),
        Err(e) => {
            eprintln!("warning: no PyTorch comparison: {e}\n         reporting the Rust side only");
            None
        }
    };
    fn py_failed(py: &mut Option<PySide>, e: String) {
        eprintln!("warning: the PyTorch side failed: {e}; reporting the Rust side only");
        if let Some(p) = py.take() {
            p.quit();
        }
    }

    println!(
        "MAE {IMAGE_SIZE}x{IMAGE_SIZE}x{CHANNELS}, patch {PATCH}; encoder {ENC_DIM}x{ENC_DEPTH} \
         (heads {ENC_HEADS}, mlp {ENC_MLP}); decoder {DEC_DIM}x{DEC_DEPTH} (heads {DEC_HEADS}, \
         mlp {DEC_MLP}); mask {MASK_RATIO}; batch {BATCH}; {} parameters; {threads} threads; \
         allocator mimalloc",
        store.num_params()
    );
    if let Some(p) = &py {
        println!(
            "reference: PyTorch {} ({} threads, {} parameters)",
            p.ready["torch"].as_str().unwrap_or("?"),
            p.ready["threads"],
            p.ready["params"]
        );
    }

    // ---- Training: warm-up, then alternating rounds ----
    let (mut rust_train, mut py_train) = (Vec::new(), Vec::new());
    let mut last_loss = (f32::NAN, f64::NAN);
    rust.train(TRAIN_WARMUP);
    if let Some(p) = py.as_mut() {
        if let Err(e) = p.seconds(&format!("train {TRAIN_WARMUP}")) {
            py_failed(&mut py, e);
        }
    }
    for round in 0..ROUNDS {
        let (s, loss) = rust.train(TRAIN_STEPS_PER_ROUND);
        rust_train.push((TRAIN_STEPS_PER_ROUND * BATCH) as f64 / s);
        last_loss.0 = loss;
        if let Some(p) = py.as_mut() {
            match p.ask(&format!("train {TRAIN_STEPS_PER_ROUND}")) {
                Ok(v) => {
                    let s = v["seconds"].as_f64().unwrap_or(f64::NAN);
                    py_train.push((TRAIN_STEPS_PER_ROUND * BATCH) as f64 / s);
                    last_loss.1 = v["loss"].as_f64().unwrap_or(f64::NAN);
                }
                Err(e) => py_failed(&mut py, e),
            }
        }
        eprintln!(
            "train round {}/{ROUNDS}: pretext {:.1} samples/s{}",
            round + 1,
            rust_train[round],
            py_train
                .get(round)
                .map_or(String::new(), |r| format!(", PyTorch {r:.1} samples/s"))
        );
    }

    // ---- Inference ----
    let (mut rust_infer, mut py_infer) = (Vec::new(), Vec::new());
    rust.infer(INFER_WARMUP);
    if let Some(p) = py.as_mut() {
        if let Err(e) = p.seconds(&format!("infer {INFER_WARMUP}")) {
            py_failed(&mut py, e);
        }
    }
    for _ in 0..ROUNDS {
        let s = rust.infer(INFER_STEPS_PER_ROUND);
        rust_infer.push((INFER_STEPS_PER_ROUND * BATCH) as f64 / s);
        if let Some(p) = py.as_mut() {
            match p.seconds(&format!("infer {INFER_STEPS_PER_ROUND}")) {
                Ok(s) => py_infer.push((INFER_STEPS_PER_ROUND * BATCH) as f64 / s),
                Err(e) => py_failed(&mut py, e),
            }
        }
    }

    // ---- Report ----
    let rust_peak = proc_status_kib("VmHWM");
    let py_stats = py.as_mut().and_then(|p| p.ask("stats").ok());
    if let Some(p) = py.take() {
        p.quit();
    }
    let have_py = py_stats.is_some() && py_train.len() == ROUNDS && py_infer.len() == ROUNDS;
    let kib = |v: &Option<Value>, k: &str| v.as_ref().and_then(|s| s[k].as_u64());

    println!();
    println!(
        "{:<26} {:>12} {:>12} {:>18}",
        "", "pretext", "PyTorch", "pretext/PyTorch"
    );
    let row = |label: &str, r: &[f64], p: &[f64]| {
        let (rm, pm) = (median(r.to_vec()), have_py.then(|| median(p.to_vec())));
        println!(
            "{label:<26} {rm:>12.1} {:>12} {:>18}",
            pm.map_or("-".into(), |v| format!("{v:.1}")),
            pm.map_or("-".into(), |v| format!("{:.2}x", rm / v)),
        );
    };
    row("train samples/s (median)", &rust_train, &py_train);
    row("infer samples/s (median)", &rust_infer, &py_infer);
    let mem_row = |label: &str, r: Option<u64>, p: Option<u64>| {
        println!(
            "{label:<26} {:>12} {:>12} {:>18}",
            mib(r),
            if have_py { mib(p) } else { "-".into() },
            match (r, p) {
                (Some(r), Some(p)) if have_py => format!("{:.2}x", r as f64 / p as f64),
                _ => "-".into(),
            }
        );
    };
    mem_row("peak RSS (MiB)", rust_peak, kib(&py_stats, "max_rss_kb"));
    mem_row(
        "RSS after start-up (MiB)",
        rust_baseline,
        kib(&py_stats, "baseline_rss_kb"),
    );
    println!();
    println!(
        "per round (samples/s): train pretext [{}] PyTorch [{}]; infer pretext [{}] PyTorch [{}]",
        fmt_rates(&rust_train),
        fmt_rates(&py_train),
        fmt_rates(&rust_infer),
        fmt_rates(&py_infer)
    );
    if have_py {
        println!(
            "last training loss: pretext {:.4}, PyTorch {:.4} (different initial weights; \
             same model and data)",
            last_loss.0, last_loss.1
        );
    } else {
        println!("last training loss: pretext {:.4}", last_loss.0);
    }
    println!(
        "protocol: {TRAIN_WARMUP} warm-up steps, then {ROUNDS} alternating rounds of \
         {TRAIN_STEPS_PER_ROUND} training steps / {INFER_STEPS_PER_ROUND} inference passes \
         (after {INFER_WARMUP} warm-up) per side"
    );
}
