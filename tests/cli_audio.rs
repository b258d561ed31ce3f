//! `pretext export / forward / embed --audio` on Audio-MAE encoders through the real binary:
//! a tiny run on `data/words-sample` (made once per test process), its export in the layout
//! of `docs/audio-mae-export.md`, windowing of long files, the wav2vec2 fixture, and the
//! errors for wrong models, bad WAVs and damaged exports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use pretext::modality::audio::wav::{read_wav, write_wav_i16, Waveform};
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};

const RECIPE: &str = "recipes/audio-mae-words-sample.toml";
const DIM: usize = 32;

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn pretext(args: &[&str]) -> String {
    let (ok, out, err) = run_cli(args);
    assert!(ok, "pretext {args:?} failed: {out}{err}");
    out
}

fn pretext_fails(args: &[&str]) -> String {
    let (ok, out, err) = run_cli(args);
    assert!(!ok, "pretext {args:?} should fail: {out}{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
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

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A 2-step Audio-MAE run of a 32-wide, 1-block encoder, shared by the tests of this process.
fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_audio_run");
        let _ = std::fs::remove_dir_all(&dir);
        let sets = [
            format!("model.dim={DIM}"),
            "model.depth=1".into(),
            "model.heads=2".into(),
            "model.mlp_dim=64".into(),
            "objective.decoder.dim=16".into(),
            "objective.decoder.heads=2".into(),
            "train.steps=2".into(),
            "train.batch_size=8".into(),
            "train.schedule.warmup_steps=1".into(),
            "train.checkpoint_every=2".into(),
            "train.log_every=1".into(),
            "device=cpu".into(),
            "downstream=[]".into(),
        ];
        let overrides: Vec<Override> = sets
            .iter()
            .map(|s| Override::parse_set(s).unwrap())
            .collect();
        let loaded = recipe::load(Path::new(RECIPE), &overrides).unwrap();
        run::start(
            &loaded,
            &RunOptions {
                out: Some(dir.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        dir
    })
}

fn sample_wavs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/words-sample/test");
    ["down", "go", "yes"]
        .iter()
        .map(|w| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(w))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "wav"))
                .collect();
            files.sort();
            files.remove(0)
        })
        .collect()
}

fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn embedding(row: &serde_json::Value) -> Vec<f32> {
    row["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// `input_values` [2, len]: two sample clips, each cut or zero-padded to `len`.
fn inputs(path: &Path, len: usize) {
    let rows: Vec<f32> = sample_wavs()[..2]
        .iter()
        .flat_map(|p| {
            let mut x = read_wav(p).unwrap().samples;
            x.resize(len, 0.0);
            x
        })
        .collect();
    let t = Tensor::from_vec(rows, (2, len), &Device::Cpu).unwrap();
    pretext::tensor_io::write(path, &[("input_values".into(), t)], Default::default()).unwrap();
}

#[test]
fn export_writes_the_layout_and_loads_back_equal() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    let said = pretext(&["export", s(run), "--format", "hf", "--out", s(&export)]);
    assert!(said.contains("docs/audio-mae-export.md"), "{said}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "pretext-audio-mae");
    assert_eq!(config["encoder"]["dim"], DIM);
    assert_eq!(config["geometry"]["frames"], 96);
    let weights = read(&export.join("model.safetensors"));
    // 64 x 96 spectrogram in 8 x 8 patches: 8 x 12 = 96 patches of 64 values.
    assert_eq!(weights["patch_embed.weight"].dims(), &[DIM, 64]);
    assert_eq!(weights["cls_token"].dims(), &[1, 1, DIM]);
    assert_eq!(weights["pos_embed"].dims(), &[1, 97, DIM]);
    assert_eq!(
        weights["encoder.layers.0.attn.q.weight"].dims(),
        &[DIM, DIM]
    );
    assert_eq!(
        weights["encoder.layers.0.mlp.fc1.weight"].dims(),
        &[64, DIM]
    );
    assert_eq!(weights["encoder.norm.bias"].dims(), &[DIM]);
    assert!(weights.keys().all(|k| !k.starts_with("audio.")));
    // patch_embed (2), cls_token, pos_embed; 1 block x (4 norm + 8 attention + 4 MLP); final norm (2).
    assert_eq!(weights.len(), 4 + 16 + 2, "{:?}", weights.keys());

    // Longer than the 15200-sample clip (centre-cropped) and shorter (padded).
    for len in [20000, 9000] {
        let x = tmp.path().join(format!("x{len}.safetensors"));
        inputs(&x, len);
        let (a, b) = (
            tmp.path().join("a.safetensors"),
            tmp.path().join("b.safetensors"),
        );
        pretext(&[
            "forward",
            "--model",
            s(run),
            "--inputs",
            s(&x),
            "--out",
            s(&a),
        ]);
        pretext(&[
            "forward",
            "--model",
            s(&export),
            "--inputs",
            s(&x),
            "--out",
            s(&b),
        ]);
        let (a, b) = (read(&a), read(&b));
        assert_eq!(a["last_hidden_state"].dims(), &[2, 97, DIM]);
        assert_eq!(a["spectrogram"].dims(), &[2, 64, 96]);
        for k in ["last_hidden_state", "spectrogram"] {
            let d = max_abs(&a[k], &b[k]);
            assert!(d <= 1e-6, "{k}: run vs export differ by {d}");
        }
        // The spectrogram it reports (and the frame mask of padded rows), given back as
        // input, gives the same hidden states.
        assert_eq!(a.contains_key("frame_mask"), len < 15200, "{len}");
        let spec = tmp.path().join("spec.safetensors");
        let mut given = vec![("spectrogram".to_string(), a["spectrogram"].clone())];
        if let Some(m) = a.get("frame_mask") {
            assert_eq!(m.dims(), &[2, 96]);
            given.push(("frame_mask".to_string(), m.clone()));
        }
        pretext::tensor_io::write(&spec, &given, Default::default()).unwrap();
        let c = tmp.path().join("c.safetensors");
        pretext(&[
            "forward",
            "--model",
            s(&export),
            "--inputs",
            s(&spec),
            "--out",
            s(&c),
        ]);
        let d = max_abs(&read(&c)["last_hidden_state"], &a["last_hidden_state"]);
        assert!(d <= 1e-6, "spectrogram input differs by {d}");
    }

    // An export exports again to the same files.
    let again = tmp.path().join("again");
    pretext(&["export", s(&export), "--format", "hf", "--out", s(&again)]);
    let w2 = read(&again.join("model.safetensors"));
    assert_eq!(w2.len(), weights.len());
    for (k, v) in &weights {
        assert_eq!(max_abs(v, &w2[k]), 0.0, "{k}");
    }
}

#[test]
fn embed_audio_gives_one_row_per_file_and_averages_windows() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let wavs = sample_wavs();

    // A 3 s file: sample clips end to end (16-bit samples survive the WAV round trip).
    let mut long = Vec::new();
    for p in wavs.iter().cycle() {
        long.extend(read_wav(p).unwrap().samples);
        if long.len() >= 48_000 {
            break;
        }
    }
    long.truncate(48_000);
    let long_path = tmp.path().join("long.wav");
    let wave = |samples: &[f32]| Waveform {
        samples: samples.to_vec(),
        sample_rate: 16_000,
    };
    write_wav_i16(&long_path, &wave(&long)).unwrap();

    let mut args: Vec<&str> = vec!["embed", "--model", s(run), "--audio"];
    args.extend(wavs.iter().map(|p| s(p)));
    args.push(s(&long_path));
    let out = tmp.path().join("e.jsonl");
    args.extend(["--out", s(&out)]);
    pretext(&args);
    let rows = jsonl(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(rows.len(), 4);
    for (row, p) in rows.iter().zip(wavs.iter().chain([&long_path])) {
        assert_eq!(row["audio"], s(p));
        let e = embedding(row);
        assert_eq!(e.len(), DIM);
        assert!(e.iter().all(|v| v.is_finite()));
        let seconds = row["seconds"].as_f64().unwrap();
        let window = row["window_seconds"].as_f64().unwrap();
        assert!((window - 0.95).abs() < 1e-9, "{window}");
        let expected = (seconds / window).ceil().max(1.0) as u64;
        assert_eq!(row["windows"].as_u64().unwrap(), expected, "{row}");
    }
    assert_eq!(rows[3]["seconds"].as_f64().unwrap(), 3.0);
    assert_eq!(rows[3]["windows"], 4);
    assert!(rows[..3].iter().all(|r| r["windows"] == 1));
    assert_ne!(embedding(&rows[0]), embedding(&rows[1]));

    // The long file's embedding is the mean of its windows', embedded as separate files:
    // three of 15,200 samples, then the last 15,200 (ending at the end of the file).
    let mut args: Vec<&str> = vec!["embed", "--model", s(run), "--audio"];
    let mut windows: Vec<&[f32]> = long.chunks_exact(15_200).collect();
    windows.push(&long[long.len() - 15_200..]);
    let parts: Vec<PathBuf> = windows
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let p = tmp.path().join(format!("part{i}.wav"));
            write_wav_i16(&p, &wave(c)).unwrap();
            p
        })
        .collect();
    assert_eq!(parts.len(), 4);
    args.extend(parts.iter().map(|p| s(p)));
    let parts_rows = jsonl(&pretext(&args));
    assert_eq!(parts_rows.len(), 4);
    let mean: Vec<f32> = (0..DIM)
        .map(|j| parts_rows.iter().map(|r| embedding(r)[j]).sum::<f32>() / 4.0)
        .collect();
    let whole = embedding(&rows[3]);
    let d = mean
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "mean of windows differs by {d}");

    // --pooling cls works (Audio-MAE has a class token) and differs from the mean.
    let cls = jsonl(&pretext(&[
        "embed",
        "--model",
        s(run),
        "--audio",
        s(&wavs[0]),
        "--pooling",
        "cls",
    ]));
    assert_eq!(embedding(&cls[0]).len(), DIM);
    assert_ne!(embedding(&cls[0]), embedding(&rows[0]));

    // safetensors output: [N, D] with names and details in the metadata.
    let st = tmp.path().join("e.safetensors");
    pretext(&[
        "embed",
        "--model",
        s(run),
        "--audio",
        s(&wavs[0]),
        s(&long_path),
        "--out",
        s(&st),
    ]);
    assert_eq!(read(&st)["embeddings"].dims(), &[2, DIM]);
}

#[test]
fn embed_audio_runs_waveform_fixtures_and_refuses_cls_there() {
    let model = fixture("w2v2_stable");
    let wavs = sample_wavs();
    let rows = jsonl(&pretext(&[
        "embed",
        "--model",
        s(&model),
        "--audio",
        s(&wavs[0]),
        s(&wavs[1]),
    ]));
    assert_eq!(rows.len(), 2);
    let hidden = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(model.join("config.json")).unwrap(),
    )
    .unwrap()["hidden_size"]
        .as_u64()
        .unwrap() as usize;
    for r in &rows {
        let e = embedding(r);
        assert_eq!(e.len(), hidden);
        assert!(e.iter().all(|v| v.is_finite()));
        assert_eq!(r["windows"], 1);
    }
    let err = pretext_fails(&[
        "embed",
        "--model",
        s(&model),
        "--audio",
        s(&wavs[0]),
        "--pooling",
        "cls",
    ]);
    assert!(err.contains("no class token"), "{err}");
}

/// A stereo 8-bit WAV by hand: unsigned samples, left loud, right silent (128).
fn stereo_u8(path: &Path, rate: u32, frames: usize) {
    let data: Vec<u8> = (0..frames)
        .flat_map(|i| {
            let v = (128.0 + 100.0 * (i as f64 * 0.05).sin()).round() as u8;
            [v, 128]
        })
        .collect();
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend((36 + data.len() as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(1u16.to_le_bytes()); // PCM
    b.extend(2u16.to_le_bytes()); // channels
    b.extend(rate.to_le_bytes());
    b.extend((rate * 2).to_le_bytes()); // bytes per second
    b.extend(2u16.to_le_bytes()); // block align
    b.extend(8u16.to_le_bytes()); // bits
    b.extend(b"data");
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn embed_audio_errors_name_the_model_or_the_file() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let wav = sample_wavs().remove(0);

    for (model, kind) in [("vit_model", "image model"), ("bert_model", "text model")] {
        let err = pretext_fails(&["embed", "--model", s(&fixture(model)), "--audio", s(&wav)]);
        assert!(err.contains(kind) && err.contains("--"), "{err}");
    }

    let corrupt = tmp.path().join("corrupt.wav");
    std::fs::write(&corrupt, b"RIFF\x10\0\0\0WAVEnot really a wav file").unwrap();
    let err = pretext_fails(&["embed", "--model", s(run), "--audio", s(&wav), s(&corrupt)]);
    assert!(err.contains("corrupt.wav"), "{err}");

    let missing = tmp.path().join("missing.wav");
    let err = pretext_fails(&["embed", "--model", s(run), "--audio", s(&missing)]);
    assert!(err.contains("missing.wav"), "{err}");

    // Stereo, 8-bit, 8 kHz, 2 s: mixed down, resampled to 16 kHz, 3 windows of 0.95 s.
    let stereo = tmp.path().join("stereo8.wav");
    stereo_u8(&stereo, 8000, 16_000);
    let rows = jsonl(&pretext(&[
        "embed",
        "--model",
        s(run),
        "--audio",
        s(&stereo),
    ]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["seconds"].as_f64().unwrap(), 2.0);
    assert_eq!(rows[0]["windows"], 3);
    assert!(embedding(&rows[0]).iter().all(|v| v.is_finite()));
}

#[test]
fn damaged_exports_are_errors_naming_the_file_or_tensor() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    pretext(&["export", s(run), "--format", "hf", "--out", s(&export)]);
    let weights = export.join("model.safetensors");
    let wav = sample_wavs().remove(0);
    let embed = |dir: &Path| pretext_fails(&["embed", "--model", s(dir), "--audio", s(&wav)]);

    // A missing tensor.
    let mut tensors = read(&weights);
    tensors.remove("encoder.layers.0.mlp.fc2.bias");
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let missing = tmp.path().join("missing");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::copy(export.join("config.json"), missing.join("config.json")).unwrap();
    pretext::tensor_io::write(
        &missing.join("model.safetensors"),
        &list,
        Default::default(),
    )
    .unwrap();
    let err = embed(&missing);
    assert!(
        err.contains("missing tensor `encoder.layers.0.mlp.fc2.bias`"),
        "{err}"
    );

    // A pos_embed that is not the fixed table.
    let mut tensors = read(&weights);
    let p = tensors["pos_embed"].clone();
    tensors.insert("pos_embed".into(), (p + 0.5).unwrap());
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    pretext::tensor_io::write(
        &missing.join("model.safetensors"),
        &list,
        Default::default(),
    )
    .unwrap();
    let err = embed(&missing);
    assert!(err.contains("tensor `pos_embed` is not the fixed"), "{err}");

    // Without pos_embed (optional: recomputed), the same embeddings; an extra tensor is an error.
    let good = jsonl(&pretext(&[
        "embed",
        "--model",
        s(&export),
        "--audio",
        s(&wav),
    ]));
    let mut tensors = read(&weights);
    let pos = tensors.remove("pos_embed").unwrap();
    let list: Vec<(String, Tensor)> = tensors.clone().into_iter().collect();
    pretext::tensor_io::write(
        &missing.join("model.safetensors"),
        &list,
        Default::default(),
    )
    .unwrap();
    let without = jsonl(&pretext(&[
        "embed",
        "--model",
        s(&missing),
        "--audio",
        s(&wav),
    ]));
    assert_eq!(embedding(&without[0]), embedding(&good[0]));
    tensors.insert("decoder_pos_embed".into(), pos);
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    pretext::tensor_io::write(
        &missing.join("model.safetensors"),
        &list,
        Default::default(),
    )
    .unwrap();
    let err = embed(&missing);
    assert!(
        err.contains("unexpected tensor `decoder_pos_embed`"),
        "{err}"
    );

    // A truncated file.
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = embed(&export);
    assert!(err.contains("model.safetensors"), "{err}");
    let err = pretext_fails(&["export", s(&export), "--format", "hf", "--out", s(&missing)]);
    assert!(err.contains("model.safetensors"), "{err}");
}
