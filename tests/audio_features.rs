//! Audio input and features against references (fast tier).
//!
//! * Parity: the committed clips in `tests/fixtures/audio/` are read with `read_wav` and their
//!   features compared with torchaudio's (`scripts/make_mel_fixture.py`; torchaudio run in
//!   float64, the mel filterbank included). `PRETEXT_MEL_FIXTURE=<dir or .safetensors>`
//!   points at another fixture (`scripts/check-mel.sh` makes one from different clips).
//!   Tolerances: mel power relative to the largest value, `max|a-e| / max|e| < 1e-4`; log-mel
//!   and Kaldi log fbank (`torchaudio.compliance.kaldi.fbank`) absolute, `< 1e-4` (on a log
//!   scale an absolute error is a relative error of the underlying energy, and quiet bands
//!   matter as much as loud ones).
//! * Formats: every hound integer / float format reads back the written signal, stereo is
//!   mixed down to the mean, and broken files give an error naming the file, never a panic.
//! * Data sets: class folders and CSV manifests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pretext::modality::audio::dataset::{class_names, read_manifest, scan_folder, AudioItem};
use pretext::modality::audio::fbank::{fbank, FbankConfig};
use pretext::modality::audio::mel::{MelConfig, MelSpectrogram};
use pretext::modality::audio::wav::{read_wav, write_wav_i16, Waveform};

struct Fixture {
    dir: PathBuf,
    bytes: Vec<u8>,
    meta: serde_json::Value,
}

fn fixture() -> Fixture {
    let path = match std::env::var_os("PRETEXT_MEL_FIXTURE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio"),
    };
    let file = if path.is_dir() {
        path.join("mel_fixture.safetensors")
    } else {
        path
    };
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let meta: serde_json::Value = serde_json::from_str(&meta["fixture"]).unwrap();
    eprintln!(
        "fixture {} (torchaudio {})",
        file.display(),
        meta["torchaudio"]
    );
    Fixture {
        dir: file.parent().unwrap().to_path_buf(),
        bytes,
        meta,
    }
}

impl Fixture {
    fn tensor(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let data = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (data, t.shape().to_vec())
    }

    fn clips(&self) -> Vec<serde_json::Value> {
        self.meta["clips"].as_array().unwrap().clone()
    }

    fn samples(&self, clip: &serde_json::Value) -> Vec<f32> {
        let w = read_wav(&self.dir.join(clip["wav"].as_str().unwrap())).unwrap();
        assert_eq!(w.sample_rate as u64, clip["sample_rate"].as_u64().unwrap());
        assert_eq!(w.samples.len() as u64, clip["samples"].as_u64().unwrap());
        w.samples
    }
}

fn rel_err(a: &[f32], e: &[f32]) -> f64 {
    assert_eq!(a.len(), e.len());
    let max_e = e.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let max_d = a
        .iter()
        .zip(e)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    max_d / max_e
}

fn abs_err(a: &[f32], e: &[f32]) -> f64 {
    assert_eq!(a.len(), e.len());
    a.iter()
        .zip(e)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

#[test]
fn mel_matches_torchaudio() {
    let fx = fixture();
    let mut checked = 0;
    for clip in fx.clips() {
        let x = fx.samples(&clip);
        let name = clip["name"].as_str().unwrap();
        for cfg_name in clip["mel"].as_array().unwrap() {
            let cfg_name = cfg_name.as_str().unwrap();
            let cfg: MelConfig = serde_json::from_value(fx.meta["mel"][cfg_name].clone()).unwrap();
            let mel = MelSpectrogram::new(&cfg).unwrap();
            let (want_p, shape) = fx.tensor(&format!("{name}/{cfg_name}/mel_power"));
            let (want_l, _) = fx.tensor(&format!("{name}/{cfg_name}/log_mel"));
            assert_eq!(
                shape,
                vec![cfg.n_mels, mel.frames(x.len())],
                "{name}/{cfg_name}"
            );
            let p = mel.try_mel_power(&x).unwrap();
            let l = mel.try_log_mel(&x).unwrap();
            let (ep, el) = (rel_err(&p, &want_p), abs_err(&l, &want_l));
            eprintln!("{name}/{cfg_name}: mel power rel {ep:.2e}, log-mel abs {el:.2e}");
            assert!(
                ep < 1e-4,
                "{name}/{cfg_name}: mel power relative error {ep}"
            );
            assert!(el < 1e-4, "{name}/{cfg_name}: log-mel abs error {el}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "fixture has {checked} mel comparisons");
}

#[test]
fn fbank_matches_torchaudio_kaldi() {
    let fx = fixture();
    let mut checked = 0;
    for clip in fx.clips() {
        let x = fx.samples(&clip);
        let name = clip["name"].as_str().unwrap();
        for cfg_name in clip["fbank"].as_array().unwrap() {
            let cfg_name = cfg_name.as_str().unwrap();
            let cfg: FbankConfig =
                serde_json::from_value(fx.meta["fbank"][cfg_name].clone()).unwrap();
            let (want, shape) = fx.tensor(&format!("{name}/{cfg_name}/fbank"));
            assert_eq!(shape, vec![cfg.frames(x.len()), cfg.num_mel_bins]);
            let got = fbank(&x, &cfg).unwrap();
            assert!(cfg.use_log_fbank, "fixture configs are log fbanks");
            let e = abs_err(&got, &want);
            eprintln!("{name}/{cfg_name}: log fbank abs {e:.2e}");
            assert!(e < 1e-4, "{name}/{cfg_name}: log fbank abs error {e}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "fixture has {checked} fbank comparisons");
}

#[test]
fn committed_clips_read_back_as_written() {
    // The fixture's clips are int16: read_wav must give exactly k / 32768.
    let fx = fixture();
    for clip in fx.clips() {
        let x = fx.samples(&clip);
        assert!(x
            .iter()
            .all(|&s| (s * 32768.0).fract() == 0.0 && s.abs() <= 1.0));
    }
}

// ---- formats ----

fn test_signal(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.8 * (i as f64 * 0.05).sin() * (1.0 - i as f64 / n as f64))
        .collect()
}

fn write_int(path: &Path, bits: u16, channels: &[Vec<f64>]) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: 16000,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let scale = (1i64 << (bits - 1)) as f64;
    for i in 0..channels[0].len() {
        for ch in channels {
            let v = (ch[i] * scale).round().clamp(-scale, scale - 1.0) as i32;
            if bits == 8 {
                w.write_sample(v as i8).unwrap();
            } else {
                w.write_sample(v).unwrap();
            }
        }
    }
    w.finalize().unwrap();
}

#[test]
fn integer_and_float_formats_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let x = test_signal(500);
    for bits in [8u16, 16, 24, 32] {
        let p = dir.path().join(format!("i{bits}.wav"));
        write_int(&p, bits, std::slice::from_ref(&x));
        let w = read_wav(&p).unwrap();
        assert_eq!(w.sample_rate, 16000);
        let q = 1.0 / (1u64 << (bits - 1)) as f64;
        let err = w
            .samples
            .iter()
            .zip(&x)
            .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        assert!(err <= q / 2.0 + 1e-7, "{bits}-bit: error {err}, step {q}");
    }
    // 8-bit WAV is unsigned: check the raw bytes are offset by 128 and scaled by 1/128.
    let p = dir.path().join("i8.wav");
    let bytes = std::fs::read(&p).unwrap();
    let data = &bytes[bytes.len() - 500..];
    let w = read_wav(&p).unwrap();
    for (&b, &s) in data.iter().zip(&w.samples) {
        assert_eq!(s, (b as f32 - 128.0) / 128.0);
    }
    // 32-bit float is exact.
    let p = dir.path().join("f32.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22050,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    for &v in &x {
        w.write_sample(v as f32).unwrap();
    }
    w.finalize().unwrap();
    let r = read_wav(&p).unwrap();
    assert_eq!(r.sample_rate, 22050);
    assert_eq!(r.samples, x.iter().map(|&v| v as f32).collect::<Vec<_>>());
    // i16 extremes: -32768 -> -1, 32767 -> 32767/32768, as soundfile / torchaudio.
    let p = dir.path().join("ext.wav");
    let w = Waveform {
        samples: vec![-1.0, 32767.0 / 32768.0, 0.0],
        sample_rate: 8000,
    };
    write_wav_i16(&p, &w).unwrap();
    assert_eq!(read_wav(&p).unwrap(), w);
}

#[test]
fn stereo_is_mixed_down_to_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let l = test_signal(300);
    let r: Vec<f64> = l.iter().map(|v| -0.5 * v + 0.1).collect();
    let p = dir.path().join("stereo.wav");
    write_int(&p, 16, &[l.clone(), r.clone()]);
    let w = read_wav(&p).unwrap();
    assert_eq!(w.samples.len(), 300);
    for i in 0..300 {
        let ql = (l[i] * 32768.0).round() / 32768.0;
        let qr = (r[i] * 32768.0).round() / 32768.0;
        assert!((w.samples[i] as f64 - (ql + qr) / 2.0).abs() < 1e-7);
    }
}

fn assert_err_names(path: &Path, what: &str) {
    let e = read_wav(path).expect_err(what).to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(name), "{what}: `{e}` does not name {name}");
    eprintln!("{what}: {e}");
}

#[test]
fn broken_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.wav");
    write_wav_i16(
        &good,
        &Waveform {
            samples: test_signal(1000).iter().map(|&v| v as f32).collect(),
            sample_rate: 16000,
        },
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();

    std::fs::write(d.join("text.wav"), b"hello, I am not a wave file at all").unwrap();
    assert_err_names(&d.join("text.wav"), "not a WAV");
    std::fs::write(d.join("empty_file.wav"), b"").unwrap();
    assert_err_names(&d.join("empty_file.wav"), "zero-byte file");
    for cut in [10, 30, 44, 45, 1000, bytes.len() - 1] {
        let p = d.join(format!("truncated_{cut}.wav"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert_err_names(&p, "truncated");
    }
    // A header with no samples.
    let p = d.join("no_samples.wav");
    write_wav_i16(
        &p,
        &Waveform {
            samples: vec![],
            sample_rate: 16000,
        },
    )
    .unwrap();
    assert_err_names(&p, "empty");
    // Zero channels: patch the fmt chunk.
    let mut zero = bytes.clone();
    zero[22] = 0;
    zero[23] = 0;
    std::fs::write(d.join("zero_channels.wav"), &zero).unwrap();
    assert_err_names(&d.join("zero_channels.wav"), "zero channels");
    // 64-bit float (format tag 3, 64 bits): unsupported.
    let mut f64_wav = Vec::new();
    f64_wav.extend_from_slice(b"RIFF");
    f64_wav.extend_from_slice(&(36u32 + 16).to_le_bytes());
    f64_wav.extend_from_slice(b"WAVEfmt ");
    f64_wav.extend_from_slice(&16u32.to_le_bytes());
    f64_wav.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    f64_wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    f64_wav.extend_from_slice(&8000u32.to_le_bytes());
    f64_wav.extend_from_slice(&64000u32.to_le_bytes());
    f64_wav.extend_from_slice(&8u16.to_le_bytes()); // block align
    f64_wav.extend_from_slice(&64u16.to_le_bytes());
    f64_wav.extend_from_slice(b"data");
    f64_wav.extend_from_slice(&16u32.to_le_bytes());
    f64_wav.extend_from_slice(&0.25f64.to_le_bytes());
    f64_wav.extend_from_slice(&(-0.25f64).to_le_bytes());
    std::fs::write(d.join("float64.wav"), &f64_wav).unwrap();
    assert_err_names(&d.join("float64.wav"), "64-bit float");
    assert_err_names(&d.join("missing.wav"), "missing");
    // Garbage after a valid RIFF header, at every length: never a panic.
    for cut in 0..60 {
        let mut b = bytes[..cut].to_vec();
        b.extend_from_slice(&[0xff; 16]);
        let p = d.join(format!("garbage_{cut}.wav"));
        std::fs::write(&p, &b).unwrap();
        let _ = read_wav(&p);
    }
}

// ---- data sets ----

fn tiny_wav(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_wav_i16(
        path,
        &Waveform {
            samples: vec![0.0, 0.1, -0.1],
            sample_rate: 16000,
        },
    )
    .unwrap();
}

#[test]
fn folder_scan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let e = scan_folder(root).unwrap_err().to_string();
    assert!(e.contains(&root.display().to_string()), "{e}");
    for f in [
        "yes/b.wav",
        "yes/a.WAV",
        "no/z.wav",
        "no/notes.txt",
        "down/x.flac",
    ] {
        if f.ends_with("wav") || f.ends_with("WAV") {
            tiny_wav(&root.join(f));
        } else {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
    }
    let items = scan_folder(root).unwrap();
    let got: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i.label.clone().unwrap(),
                i.path.file_name().unwrap().to_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("no".into(), "z.wav".into()),
            ("yes".into(), "a.WAV".into()),
            ("yes".into(), "b.wav".into()),
        ]
    );
    assert_eq!(class_names(&items), vec!["no", "yes"]);
    assert!(items.iter().all(|i| i.split.is_none()));
}

#[test]
fn manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_wav(&root.join("clips/a.wav"));
    let m = root.join("train.csv");
    std::fs::write(
        &m,
        "speaker,split,path,label\nx,train,clips/a.wav,dog\ny,,/abs/b.wav,\nz,test,c.wav,cat\n",
    )
    .unwrap();
    let items = read_manifest(&m).unwrap();
    assert_eq!(
        items,
        vec![
            AudioItem {
                path: root.join("clips/a.wav"),
                label: Some("dog".into()),
                split: Some("train".into()),
            },
            AudioItem {
                path: "/abs/b.wav".into(),
                label: None,
                split: None,
            },
            AudioItem {
                path: root.join("c.wav"),
                label: Some("cat".into()),
                split: Some("test".into()),
            },
        ]
    );
    assert_eq!(class_names(&items), vec!["cat", "dog"]);

    // Only `path` is required.
    std::fs::write(&m, "path\na.wav\n").unwrap();
    assert_eq!(read_manifest(&m).unwrap()[0].label, None);

    let cases: HashMap<&str, (&str, &[&str])> = HashMap::from([
        (
            "nopath.csv",
            (
                "file,label\na.wav,x\n",
                &["nopath.csv", "line 1", "path"][..],
            ),
        ),
        (
            "ragged.csv",
            (
                "path,label\na.wav,x\nb.wav,y,extra\n",
                &["ragged.csv", "line 3"][..],
            ),
        ),
        (
            "emptypath.csv",
            (
                "path,label\na.wav,x\n,y\n",
                &["emptypath.csv", "line 3", "path"][..],
            ),
        ),
        ("nothing.csv", ("path\n", &["nothing.csv"][..])),
        ("missing.csv", ("", &["missing.csv"][..])),
    ]);
    for (name, (text, want)) in cases {
        let p = root.join(name);
        if name != "missing.csv" {
            std::fs::write(&p, text).unwrap();
        }
        let e = read_manifest(&p).unwrap_err().to_string();
        for w in want {
            assert!(e.contains(w), "{name}: `{e}` lacks `{w}`");
        }
    }
}
