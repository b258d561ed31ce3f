//! `pretext embed`: pooled embeddings of images, sentences or WAV files, written as JSON
//! lines or safetensors.

use std::path::PathBuf;

use candle_core::Device;

use crate::backbone::Pooling;
use crate::error::{Error, Result};
use crate::hf;
use crate::modality::image::dataset::ImageDataset;
use crate::run;

/// What `embed` or `predict` was given: one kind of input.
pub enum EmbedInputs {
    Images(Vec<PathBuf>),
    Texts(Vec<String>),
    Audio(Vec<PathBuf>),
}

impl EmbedInputs {
    /// The one kind of input among the verb's arguments; `text_file` adds its non-empty
    /// lines to `texts`.
    pub fn from_args(
        verb: &str,
        images: Vec<PathBuf>,
        mut texts: Vec<String>,
        text_file: Option<&std::path::Path>,
        audio: Vec<PathBuf>,
    ) -> Result<Self> {
        if let Some(file) = text_file {
            let all = crate::input::read_to_string(file)?;
            let before = texts.len();
            texts.extend(
                all.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
            if texts.len() == before {
                return Err(Error::data(file, "no sentences in this file"));
            }
        }
        match (images.is_empty(), texts.is_empty(), audio.is_empty()) {
            (false, true, true) => Ok(Self::Images(images)),
            (true, false, true) => Ok(Self::Texts(texts)),
            (true, true, false) => Ok(Self::Audio(audio)),
            (true, true, true) => Err(Error::Usage(format!(
                "{verb}: give --image PATH..., --text SENTENCE / --text-file FILE, or --audio WAV..."
            ))),
            _ => Err(Error::Usage(format!(
                "{verb}: give WAV files, images or sentences, not several kinds"
            ))),
        }
    }
}

/// `pretext embed --text`: tokenize, batch (padded per batch), encode, pool, write.
pub fn embed_text(
    model: &str,
    texts: &[String],
    out: Option<&std::path::Path>,
    pooling: Option<Pooling>,
    normalize: bool,
    dev: &Device,
) -> Result<()> {
    let dev = dev.clone();
    let loaded = match run::source::load_any(model, &dev)? {
        run::source::AnyModel::Text(m) => m,
        other => return Err(wrong_input(model, &other)),
    };
    let tok_path = loaded.tokenizer.clone().ok_or_else(|| {
        Error::data(
            &loaded.origin,
            "this model has no tokenizer.json, which embedding sentences needs",
        )
    })?;
    let tok = hf::text::read_tokenizer(&tok_path)?;
    let m = hf::text::TextModel::build(&loaded, &dev)?;
    let pooling = pooling.unwrap_or(Pooling::Mean);
    let max_len = hf::text::sentence_max_len(&tok_path)
        .map_or(m.config().max_len(), |n| n.min(m.config().max_len()));
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for (c, chunk) in texts.chunks(32).enumerate() {
        let batch = hf::text::tokenize(
            &tok,
            chunk,
            max_len,
            m.config().pad_token_id,
            &tok_path,
            &dev,
        )?;
        for (i, _) in &batch.truncated {
            eprintln!(
                "warning: sentence {} is longer than the model's {max_len} positions \
                 (with special tokens); truncated to {max_len} tokens",
                c * 32 + i + 1
            );
        }
        let e = m.embed(&batch.input_ids, &batch.attention_mask, pooling, normalize)?;
        rows.extend(e.to_vec2::<f32>()?);
    }
    write_embeddings(out, "text", texts, &rows, &[])
}

/// Embeddings as JSON lines (`{key: name, ...extra, "embedding": [...]}`) on standard output
/// or in a `.jsonl` file, or a `.safetensors` file (`embeddings` [N, D], names in metadata
/// `{key}s`, the extra fields in `details`).
fn write_embeddings(
    out: Option<&std::path::Path>,
    key: &str,
    names: &[String],
    rows: &[Vec<f32>],
    extra: &[serde_json::Map<String, serde_json::Value>],
) -> Result<()> {
    // JSON would print NaN as null: a non-finite embedding is an error naming its input.
    if let Some((name, _)) = names
        .iter()
        .zip(rows)
        .find(|(_, r)| r.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Usage(format!(
            "the embedding of {key} `{name}` has NaN or infinite values: the model or the input is broken (check its weights and normalisation)"
        )));
    }
    let jsonl = || -> String {
        names
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(i, (n, e))| {
                let mut line = serde_json::Map::new();
                line.insert(key.into(), serde_json::json!(n));
                if let Some(x) = extra.get(i) {
                    line.extend(x.clone());
                }
                line.insert("embedding".into(), serde_json::json!(e));
                serde_json::Value::Object(line).to_string() + "\n"
            })
            .collect()
    };
    match out {
        None => print!("{}", jsonl()),
        Some(path) if path.extension().is_some_and(|e| e == "jsonl") => {
            crate::tensor_io::write_atomic(path, jsonl().as_bytes())?
        }
        Some(path) if path.extension().is_some_and(|e| e == "safetensors") => {
            let d = rows.first().map_or(0, Vec::len);
            let flat: Vec<f32> = rows.concat();
            // Host rows into the output file: a CPU tensor whatever device computed them.
            let t = candle_core::Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu)?;
            let mut meta = std::collections::HashMap::from([(
                format!("{key}s"),
                serde_json::to_string(names).unwrap_or_default(),
            )]);
            if !extra.is_empty() {
                meta.insert(
                    "details".into(),
                    serde_json::to_string(extra).unwrap_or_default(),
                );
            }
            crate::tensor_io::write(path, &[("embeddings".to_string(), t)], meta)?
        }
        Some(path) => {
            return Err(Error::Usage(format!(
                "--out {}: expected a .safetensors or .jsonl file",
                path.display()
            )))
        }
    }
    Ok(())
}

/// `pretext embed --audio`: read, resample, window, encode, pool, average, write.
pub fn embed_audio(
    model: &str,
    files: &[PathBuf],
    out: Option<&std::path::Path>,
    pooling: Option<Pooling>,
    dev: &Device,
) -> Result<()> {
    use crate::modality::audio::{clips::windows, resample::resample, wav::read_wav};
    let dev = dev.clone();
    let pooling = pooling.unwrap_or(Pooling::Mean);
    let embedder = match run::source::load_any(model, &dev)? {
        run::source::AnyModel::Audio(m) => {
            if pooling == Pooling::Cls {
                return Err(Error::Usage(format!(
                    "{model} ({}) has no class token: use --pooling mean",
                    m.spec.hf_class()
                )));
            }
            AudioEmbedder::Waveform(hf::audio::AudioModel::build(&m, &dev)?, m.normalize)
        }
        run::source::AnyModel::Spectrogram(m) => {
            AudioEmbedder::Spectrogram(hf::spectrogram::SpectrogramModel::build(&m, &dev)?)
        }
        other => return Err(wrong_input(model, &other)),
    };
    let (rate, window) = embedder.rate_and_window();
    let mut rows = Vec::with_capacity(files.len());
    let mut names = Vec::with_capacity(files.len());
    let mut details = Vec::with_capacity(files.len());
    for path in files {
        let wav = resample(&read_wav(path)?, rate)?;
        if wav.samples.is_empty() {
            return Err(Error::data(path, "no audio samples in this file"));
        }
        let seconds = wav.samples.len() as f64 / rate as f64;
        let parts = windows(embedder.trim(&wav.samples), window);
        if parts.len() > 1 {
            eprintln!(
                "{}: {seconds:.2} s is longer than the model's {:.2} s window: embedded as {} consecutive windows (the last one ending at the end of the file), averaged",
                path.display(),
                window as f64 / rate as f64,
                parts.len()
            );
        }
        let mut sum: Option<candle_core::Tensor> = None;
        for chunk in parts.chunks(16) {
            let e = embedder
                .embed(chunk, pooling, &dev)
                .map_err(|e| Error::data(path, e.to_string()))?
                .sum(0)?;
            sum = Some(match sum {
                Some(s) => (s + e)?,
                None => e,
            });
        }
        let mean = match sum {
            Some(s) => (s / parts.len() as f64)?,
            None => return Err(Error::data(path, "no samples to embed")),
        };
        rows.push(mean.to_vec1::<f32>()?);
        names.push(path.display().to_string());
        let mut d = serde_json::Map::new();
        d.insert("seconds".into(), serde_json::json!(seconds));
        d.insert("windows".into(), serde_json::json!(parts.len()));
        d.insert(
            "window_seconds".into(),
            serde_json::json!(window as f64 / rate as f64),
        );
        details.push(d);
    }
    write_embeddings(out, "audio", &names, &rows, &details)
}

/// The two kinds of audio encoders `embed --audio` runs.
enum AudioEmbedder {
    /// wav2vec2 / HuBERT / data2vec-audio on raw 16 kHz samples (normalised per window when
    /// the model's feature extractor does so).
    Waveform(hf::audio::AudioModel, bool),
    /// An Audio-MAE encoder on log-mel spectrograms.
    Spectrogram(hf::spectrogram::SpectrogramModel),
}

/// Waveform models take any length; windows bound the attention's memory.
const WAVEFORM_WINDOW_SECONDS: usize = 20;

impl AudioEmbedder {
    fn rate_and_window(&self) -> (u32, usize) {
        match self {
            AudioEmbedder::Waveform(..) => (16_000, WAVEFORM_WINDOW_SECONDS * 16_000),
            AudioEmbedder::Spectrogram(m) => (m.features.mel.sample_rate, m.window()),
        }
    }

    /// A file's samples as the model's clips were featurised: without leading and trailing
    /// silence when its features trim it.
    fn trim<'a>(&self, samples: &'a [f32]) -> &'a [f32] {
        match self {
            AudioEmbedder::Spectrogram(m) => m.features.trim(samples),
            AudioEmbedder::Waveform(..) => samples,
        }
    }

    /// Pooled embeddings `[N, D]` of windows.
    fn embed(
        &self,
        windows: &[&[f32]],
        pooling: Pooling,
        dev: &Device,
    ) -> Result<candle_core::Tensor> {
        match self {
            AudioEmbedder::Spectrogram(m) => m.embed(windows, pooling, dev),
            AudioEmbedder::Waveform(m, normalize) => {
                // One window at a time: no padding, so no attention mask is needed.
                let mut out = Vec::with_capacity(windows.len());
                for w in windows {
                    let mut x = w.to_vec();
                    if *normalize {
                        hf::audio::zero_mean_unit_var(&mut x);
                    }
                    let n = x.len();
                    let x = candle_core::Tensor::from_vec(x, (1, n), dev)?;
                    let (h, _) = m.hidden(&x, None)?;
                    out.push(h.mean(1)?);
                }
                Ok(candle_core::Tensor::cat(&out, 0)?)
            }
        }
    }
}

/// The error for `embed` given inputs of another modality than the model's.
fn wrong_input(model: &str, m: &run::source::AnyModel) -> Error {
    let how = match m {
        run::source::AnyModel::Image(_) => "embed images with --image",
        run::source::AnyModel::Text(_) => "embed sentences with --text or --text-file",
        _ => "embed WAV files with --audio",
    };
    Error::Usage(format!("{model} is {}: {how}", m.describe()))
}

/// `pretext embed`: decode, batch, encode, pool, write.
pub fn embed_images(
    model: &str,
    images: &[PathBuf],
    out: Option<&std::path::Path>,
    pooling: Option<Pooling>,
    dev: &Device,
) -> Result<()> {
    let dev = dev.clone();
    let loaded = match run::source::load_any(model, &dev)? {
        run::source::AnyModel::Image(m) => m,
        other => return Err(wrong_input(model, &other)),
    };
    let m = hf::Model::build(&loaded, &dev)?;
    let pooling = pooling.unwrap_or(Pooling::Cls);
    let g = loaded.spec.geometry;
    let files = ImageDataset::from_files(images.to_vec(), g.channels, g.size)?;
    let all: Vec<usize> = (0..files.len).collect();
    let mut rows = Vec::with_capacity(images.len());
    for chunk in all.chunks(64) {
        let n = &loaded.normalize;
        let pixels = files.batch(chunk, &n.mean, &n.std, &dev)?;
        rows.extend(m.embed(&pixels, pooling)?.to_vec2::<f32>()?);
    }
    let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    write_embeddings(out, "image", &names, &rows, &[])
}
