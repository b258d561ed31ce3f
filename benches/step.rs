//! Training and inference throughput of pretext against PyTorch on the three workloads
//! `benches/recipes/{mae,mlm,audio-mae}.toml`, in one invocation, rounds alternating sides.
//!
//! ```text
//! cargo bench --bench step                          # all three workloads
//! cargo bench --bench step -- --workload mlm        # one (repeat the flag for several)
//! cargo bench --bench step -- --rounds 9 --steps 6  # a longer protocol
//! ```
//!
//! **What is timed on pretext's side is `pretext run` itself.** Each workload's recipe goes
//! through `pretext::run::start` exactly as the CLI sends it (recipe resolution, data
//! loading, tokenizer training, the prefetching loader, the model, pretext's AdamW with
//! its parameter groups, clipping, masking); only the loop is handed to this bench through
//! `RunOptions::driver`, which calls the same `Trainer::step` the loop calls. Inference is
//! the task's encoder over every token of a batch on detached weights
//! (`TrainTask::infer`).
//!
//! The PyTorch side (`benches/reference/bench_ref.py` over `workloads.py`) builds the same
//! architecture, batch shape and optimizer settings from a JSON config this bench derives
//! from the recipe, and runs as a server so the rounds alternate (pretext, then PyTorch):
//! a drift in machine load hits both sides alike. Both get the same thread count.
//!
//! Each workload runs in a child process of its own (this binary with `--child`), so the
//! memory figures are that workload's alone: peak resident set (`VmHWM`) and the resident
//! set after start-up (model and data loaded, before the first step); their difference is
//! the working memory. PyTorch reports `ru_maxrss` and `VmRSS` after start-up likewise.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pretext::error::Error;
use pretext::recipe::{Loaded, Recipe};
use pretext::run::RunOptions;
use pretext::train::{Driver, Trainer};
use serde_json::{json, Value};

// Keeping freed memory instead of unmapping every large buffer matters a lot here; the
// `pretext` binary makes the same choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKLOADS: [&str; 3] = ["mae", "mlm", "audio-mae"];

/// The timing protocol (both sides).
#[derive(Clone, Copy, Debug)]
struct Protocol {
    train_warmup: usize,
    train_steps: usize,
    infer_warmup: usize,
    infer_steps: usize,
    rounds: usize,
}

const DEFAULT_PROTOCOL: Protocol = Protocol {
    train_warmup: 3,
    train_steps: 4,
    infer_warmup: 2,
    infer_steps: 4,
    rounds: 7,
};

fn usage(msg: &str) -> ! {
    eprintln!(
        "error: {msg}\nusage: cargo bench --bench step -- [--workload {}]... [--rounds N] [--steps N]",
        WORKLOADS.join("|")
    );
    std::process::exit(2)
}

fn main() {
    // The same runtime settings as the `pretext` binary.
    pretext::device::tune_cpu_runtime();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&repo).expect("the repository root exists");
    let mut workloads = Vec::new();
    let mut child = false;
    let mut protocol = DEFAULT_PROTOCOL;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage(&format!("{what} takes a positive number")))
        };
        match a.as_str() {
            "--workload" => {
                let w = args
                    .next()
                    .unwrap_or_else(|| usage("--workload takes a name"));
                if !WORKLOADS.contains(&w.as_str()) {
                    usage(&format!("unknown workload `{w}`"));
                }
                workloads.push(w);
            }
            "--rounds" => protocol.rounds = number("--rounds"),
            "--steps" => {
                let n = number("--steps");
                protocol.train_steps = n;
                protocol.infer_steps = n;
            }
            "--child" => child = true,
            // cargo bench passes --bench; libtest-style filters are not used here.
            "--bench" => {}
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    if workloads.is_empty() {
        workloads = WORKLOADS.iter().map(|w| w.to_string()).collect();
    }
    if child {
        let [w] = workloads.as_slice() else {
            usage("--child runs exactly one workload")
        };
        match pretext::device::on_cpu_pool(|| measure(w, protocol)) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("error: workload {w}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    println!(
        "CPU: {}; {} threads per side; allocator mimalloc; protocol: {} warm-up steps, then {} alternating rounds of {} training steps / {} inference passes",
        cpu_model(),
        threads(),
        protocol.train_warmup,
        protocol.rounds,
        protocol.train_steps,
        protocol.infer_steps
    );
    let mut results = Vec::new();
    for w in &workloads {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut cmd = Command::new(exe);
        cmd.args(["--child", "--workload", w])
            .args(["--rounds", &protocol.rounds.to_string()])
            .args(["--steps", &protocol.train_steps.to_string()])
            .stderr(Stdio::inherit());
        let out = cmd.output().expect("run the bench child");
        let line = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(line.trim()) {
            Ok(v) if out.status.success() => results.push(v),
            _ => {
                eprintln!("workload {w} failed ({})", out.status);
                std::process::exit(1);
            }
        }
    }
    print_table(&results);
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn bench_err(msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("step bench: {msg}"))
}

/// The PyTorch server of `bench_ref.py`.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: Value,
}

impl Reference {
    fn start(config: &Value) -> pretext::error::Result<Self> {
        let script = Path::new("benches/reference/bench_ref.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--threads", &threads().to_string()])
            .args(["--config", &config.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| bench_err(format!("cannot start python3 {}: {e}", script.display())))?;
        let stdin = child.stdin.take().ok_or_else(|| bench_err("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| bench_err("no stdout"))?);
        let mut r = Self {
            child,
            stdin,
            stdout,
            ready: Value::Null,
        };
        r.ready = r.read()?;
        if r.ready["ready"] != json!(true) {
            return Err(bench_err(format!(
                "the PyTorch reference did not start (is torch installed? `python3 -m pip install torch numpy`): {}",
                r.ready
            )));
        }
        Ok(r)
    }

    fn read(&mut self) -> pretext::error::Result<Value> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| bench_err(format!("reading the PyTorch reference: {e}")))?;
        serde_json::from_str(&line)
            .map_err(|e| bench_err(format!("the PyTorch reference said {line:?}: {e}")))
    }

    fn ask(&mut self, cmd: &str) -> pretext::error::Result<Value> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| bench_err(format!("writing to the PyTorch reference: {e}")))?;
        let v = self.read()?;
        if let Some(e) = v.get("error") {
            return Err(bench_err(format!("the PyTorch reference: {e}")));
        }
        Ok(v)
    }

    /// Wall seconds of `n` steps of `what` (train | infer), and the reply.
    fn time(&mut self, what: &str, n: usize) -> pretext::error::Result<(f64, Value)> {
        let v = self.ask(&format!("{what} {n}"))?;
        Ok((v["seconds"].as_f64().unwrap_or(f64::NAN), v))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// The PyTorch config of a workload, from the recipe pretext runs.
fn reference_config(name: &str, r: &Recipe, run_dir: &Path) -> pretext::error::Result<Value> {
    let o = &r.train.optimizer;
    let encoder = r.model.encoder_config();
    let model = match name {
        "mae" => {
            let img = r
                .data
                .image
                .as_ref()
                .ok_or_else(|| bench_err("no data.image"))?;
            json!({
                "geometry": { "size": img.size, "channels": img.channels, "patch": img.patch },
                "encoder": encoder,
                "decoder": pretext::modality::image::run::pretrain::decoder_config(r)?,
                "mask_ratio": r.objective()?.mask_ratio(),
                "norm_pix_loss": r.objective()?.norm_pix_loss(),
            })
        }
        "audio-mae" => {
            let a = r
                .data
                .audio
                .as_ref()
                .ok_or_else(|| bench_err("no data.audio"))?;
            json!({
                "geometry": {
                    "mels": a.mel.n_mels, "frames": a.frames,
                    "patch_freq": a.patch_freq, "patch_time": a.patch_time,
                },
                "encoder": encoder,
                "decoder": pretext::modality::image::run::pretrain::decoder_config(r)?,
                "mask_ratio": r.objective()?.mask_ratio(),
                "norm_pix_loss": r.objective()?.norm_pix_loss(),
            })
        }
        "mlm" => {
            let t = r
                .data
                .text
                .as_ref()
                .ok_or_else(|| bench_err("no data.text"))?;
            let tok = run_dir.join("tokenizer.json");
            let vocab = tokenizers::Tokenizer::from_file(&tok)
                .map_err(|e| bench_err(format!("{}: {e}", tok.display())))?
                .get_vocab_size(true);
            json!({
                "encoder": encoder,
                "vocab_size": vocab,
                "max_len": t.max_len,
                "mask_ratio": r.objective()?.mask_ratio(),
            })
        }
        other => return Err(bench_err(format!("unknown workload {other}"))),
    };
    Ok(json!({
        "kind": name,
        "seed": r.seed,
        "batch": r.train.batch_size,
        "model": model,
        "optimizer": {
            "lr": o.lr, "beta1": o.betas[0], "beta2": o.betas[1], "eps": o.eps,
            "weight_decay": o.weight_decay,
        },
        "clip_grad_norm": r.train.clip_grad_norm,
    }))
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the alternating rounds on the trainer `pretext run` built.
fn drive(
    trainer: &mut Trainer,
    name: &str,
    loaded: &Loaded,
    run_dir: &Path,
    p: Protocol,
) -> pretext::error::Result<Value> {
    let startup_kib = proc_status_kib("VmRSS");
    let batch = trainer.samples_per_step();
    let mut py = Reference::start(&reference_config(name, &loaded.recipe, run_dir)?)?;
    eprintln!(
        "[{name}] PyTorch {} ({} threads), {} parameters",
        py.ready["torch"], py.ready["threads"], py.ready["params"]
    );

    let mut rust_loss = f32::NAN;
    for _ in 0..p.train_warmup {
        rust_loss = trainer.step()?.loss;
    }
    py.time("train", p.train_warmup)?;
    let (mut rust_train, mut py_train) = (Vec::new(), Vec::new());
    let mut py_loss = Value::Null;
    for round in 1..=p.rounds {
        let t0 = Instant::now();
        for _ in 0..p.train_steps {
            rust_loss = trainer.step()?.loss;
        }
        rust_train.push((p.train_steps * batch) as f64 / t0.elapsed().as_secs_f64());
        let (secs, v) = py.time("train", p.train_steps)?;
        py_train.push((p.train_steps * batch) as f64 / secs);
        py_loss = v["loss"].clone();
        eprintln!(
            "[{name}] train round {round}/{}: pretext {:.1} samples/s, PyTorch {:.1} samples/s",
            p.rounds,
            rust_train[round - 1],
            py_train[round - 1]
        );
    }

    let n = batch.min(trainer.task().num_examples());
    let idx: Vec<usize> = (0..n).collect();
    let infer = |trainer: &Trainer| -> pretext::error::Result<()> {
        let out = trainer
            .infer(&idx)?
            .ok_or_else(|| bench_err("the task has no inference pass"))?;
        // Force the computation and keep it from being optimised away.
        std::hint::black_box(out.dims());
        Ok(())
    };
    for _ in 0..p.infer_warmup {
        infer(trainer)?;
    }
    py.time("infer", p.infer_warmup)?;
    let (mut rust_infer, mut py_infer) = (Vec::new(), Vec::new());
    for _ in 0..p.rounds {
        let t0 = Instant::now();
        for _ in 0..p.infer_steps {
            infer(trainer)?;
        }
        rust_infer.push((p.infer_steps * n) as f64 / t0.elapsed().as_secs_f64());
        let (secs, _) = py.time("infer", p.infer_steps)?;
        py_infer.push((p.infer_steps * n) as f64 / secs);
    }
    let stats = py.ask("stats")?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(json!({
        "workload": name,
        "batch": batch,
        "pretext": {
            "train": median(&rust_train), "infer": median(&rust_infer),
            "peak_mib": mib(proc_status_kib("VmHWM")), "startup_mib": mib(startup_kib),
            "train_rounds": rust_train, "infer_rounds": rust_infer, "last_loss": rust_loss,
        },
        "pytorch": {
            "version": py.ready["torch"],
            "train": median(&py_train), "infer": median(&py_infer),
            "peak_mib": mib(stats["max_rss_kb"].as_u64().unwrap_or(0)),
            "startup_mib": mib(stats["baseline_rss_kb"].as_u64().unwrap_or(0)),
            "train_rounds": py_train, "infer_rounds": py_infer, "last_loss": py_loss,
        },
    }))
}

/// One workload, in this (child) process: `pretext run` on its recipe, driven by [`drive`].
fn measure(name: &str, p: Protocol) -> pretext::error::Result<Value> {
    let recipe = PathBuf::from(format!("benches/recipes/{name}.toml"));
    let loaded = pretext::recipe::load(&recipe, &[])?;
    let tmp = tempfile::tempdir().map_err(|e| bench_err(format!("temporary directory: {e}")))?;
    let run_dir = tmp.path().join("run");
    let result: Arc<Mutex<Option<pretext::error::Result<Value>>>> = Arc::new(Mutex::new(None));
    let driver = {
        let (result, loaded, run_dir, name) = (
            result.clone(),
            loaded.clone(),
            run_dir.clone(),
            name.to_string(),
        );
        Driver(Arc::new(move |trainer: &mut Trainer| {
            let r = drive(trainer, &name, &loaded, &run_dir, p);
            let failed = r.as_ref().err().map(|e| bench_err(e.to_string()));
            if let Ok(mut slot) = result.lock() {
                *slot = Some(r);
            }
            failed.map_or(Ok(()), Err)
        }))
    };
    let opts = RunOptions {
        out: Some(run_dir),
        skip_downstream: true,
        driver: Some(driver),
        ..Default::default()
    };
    pretext::run::start(&loaded, &opts)?;
    let taken = result.lock().ok().and_then(|mut s| s.take());
    taken.unwrap_or_else(|| Err(bench_err("the run never reached its training loop")))
}

fn print_table(results: &[Value]) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<10} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>13} {:>13} {:>6}",
        "workload",
        "batch",
        "train pt",
        "torch",
        "ratio",
        "infer pt",
        "torch",
        "ratio",
        "work MiB pt",
        "torch",
        "ratio"
    );
    for r in results {
        let (pt, th) = (&r["pretext"], &r["pytorch"]);
        let work = |s: &Value| f(&s["peak_mib"]) - f(&s["startup_mib"]);
        println!(
            "{:<10} {:>6} | {:>9.1} {:>9.1} {:>5.2}x | {:>9.1} {:>9.1} {:>5.2}x | {:>13.0} {:>13.0} {:>5.2}x",
            r["workload"].as_str().unwrap_or("?"),
            r["batch"],
            f(&pt["train"]),
            f(&th["train"]),
            f(&pt["train"]) / f(&th["train"]),
            f(&pt["infer"]),
            f(&th["infer"]),
            f(&pt["infer"]) / f(&th["infer"]),
            work(pt),
            work(th),
            work(pt) / work(th),
        );
    }
    println!();
    println!("samples/s are medians over rounds; work MiB = peak RSS - RSS after start-up.");
    for r in results {
        let (pt, th) = (&r["pretext"], &r["pytorch"]);
        println!(
            "{}: peak / start-up RSS MiB pretext {:.0} / {:.0}, PyTorch {} {:.0} / {:.0}; last loss pretext {:.4}, PyTorch {}",
            r["workload"].as_str().unwrap_or("?"),
            f(&pt["peak_mib"]),
            f(&pt["startup_mib"]),
            th["version"],
            f(&th["peak_mib"]),
            f(&th["startup_mib"]),
            f(&pt["last_loss"]),
            th["last_loss"],
        );
        println!(
            "  rounds train pretext {:?} PyTorch {:?}",
            rounded(&pt["train_rounds"]),
            rounded(&th["train_rounds"])
        );
        println!(
            "  rounds infer pretext {:?} PyTorch {:?}",
            rounded(&pt["infer_rounds"]),
            rounded(&th["infer_rounds"])
        );
    }
}

fn rounded(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_f64().unwrap_or(0.0).round() as i64)
                .collect()
        })
        .unwrap_or_default()
}
