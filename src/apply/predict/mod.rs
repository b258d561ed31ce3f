//! `pretext predict`: class names and probabilities for images, sentences or WAV files from
//! any classifier ([`classifier::load`]): one JSON line per input
//! (`{"input", "label", "score", "top_k": [{"label", "score"}…]}`) on standard output or in
//! a `.jsonl` file, or CSV rows. Inputs are prepared as the classifier's fine-tuning
//! prepared its test split (images resized and normalised, sentences tokenised and
//! truncated, clips resampled and padded); audio longer than the model's window is cut into
//! full-length windows, as `embed` does, and their probabilities averaged.

pub mod classifier;
pub mod forward;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};

use super::EmbedInputs;
use crate::backbone::Mode;
use crate::error::{Error, Result};
use crate::hf;
use crate::modality::audio::clips::{fit_length, windows};
use crate::modality::audio::resample::load_clip;
use crate::modality::image::dataset::ImageDataset;
use crate::modality::text::pack::{classification_ids, pad_batch};
use classifier::Predictor;

/// How `predict` reports.
pub struct PredictOptions<'a> {
    /// Classes listed per input, most probable first.
    pub top_k: usize,
    /// `.jsonl` or `.csv`; standard output (JSON lines) when absent.
    pub out: Option<&'a Path>,
    /// Inputs (audio: windows) per forward pass.
    pub batch_size: usize,
}

/// One input's class probabilities, in label order, and what else is worth saying.
pub(crate) struct Scored {
    pub input: String,
    pub probs: Vec<f32>,
    pub details: Map<String, Value>,
}

/// `pretext predict`.
pub fn predict(
    model: &str,
    inputs: EmbedInputs,
    opts: &PredictOptions,
    dev: &Device,
) -> Result<()> {
    if opts.top_k == 0 || opts.batch_size == 0 {
        return Err(Error::Usage(
            "predict: --top-k and --batch-size must be at least 1".into(),
        ));
    }
    check_out(opts.out)?;
    let c = classifier::load(model, dev)?;
    let scored = score(&c, inputs, opts.batch_size, dev)?;
    write(&scored, &c.classes, opts)
}

/// Class probabilities of `inputs` under the classifier `c`, in input order; an error
/// when the inputs are not of the classifier's modality or a result is not finite.
pub(crate) fn score(
    c: &classifier::Loaded,
    inputs: EmbedInputs,
    batch: usize,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let n = match &inputs {
        EmbedInputs::Images(v) | EmbedInputs::Audio(v) => v.len(),
        EmbedInputs::Texts(v) => v.len(),
    };
    let bar = progress(n);
    let scored = match (&c.predictor, inputs) {
        (Predictor::Image { .. }, EmbedInputs::Images(files)) => {
            images(&c.predictor, &files, batch, &bar, dev)?
        }
        (Predictor::Text { .. }, EmbedInputs::Texts(texts)) => {
            sentences(&c.predictor, &texts, batch, &bar, dev)?
        }
        (Predictor::HfText { .. }, EmbedInputs::Texts(texts)) => {
            hf_sentences(&c.predictor, &texts, batch, &bar, dev)?
        }
        (Predictor::Spectrogram { .. } | Predictor::Waveform { .. }, EmbedInputs::Audio(files)) => {
            clips(&c.predictor, &files, batch, &bar, dev)?
        }
        (p, _) => {
            let how = match p {
                Predictor::Image { .. } => "an image classifier: give --image FILE...",
                Predictor::Text { .. } | Predictor::HfText { .. } => {
                    "a text classifier: give --text or --text-file"
                }
                _ => "an audio classifier: give --audio FILE.wav...",
            };
            return Err(Error::Usage(format!("{} is {how}", c.origin)));
        }
    };
    bar.finish_and_clear();
    for s in &scored {
        if s.probs.len() != c.classes.len() || s.probs.iter().any(|p| !p.is_finite()) {
            return Err(Error::Usage(format!(
                "the class probabilities of `{}` are not {} finite numbers: the model {} is broken (check its weights)",
                s.input,
                c.classes.len(),
                c.origin
            )));
        }
    }
    Ok(scored)
}

/// A progress bar on standard error for many inputs (hidden when it is not a terminal).
fn progress(n: usize) -> indicatif::ProgressBar {
    if n < 64 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("predict {bar:30} {pos}/{len} inputs, {eta} left")
    {
        bar.set_style(style);
    }
    bar
}

fn softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(candle_nn::ops::softmax_last_dim(logits)?.to_vec2::<f32>()?)
}

/// A [`Scored`] per input, its probabilities the softmax of its row of `logits`.
fn push_scored(
    out: &mut Vec<Scored>,
    inputs: impl Iterator<Item = String>,
    logits: &Tensor,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    for (input, probs) in inputs.zip(softmax_rows(logits)?) {
        out.push(Scored {
            input,
            probs,
            details: Map::new(),
        });
        bar.inc(1);
    }
    Ok(())
}

fn images(
    p: &Predictor,
    files: &[PathBuf],
    batch: usize,
    bar: &indicatif::ProgressBar,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let Predictor::Image { geometry: g, .. } = p else {
        unreachable!("images() is given an image classifier");
    };
    let data = ImageDataset::from_files(files.to_vec(), g.channels, g.size)?;
    image_scores(
        p,
        &data,
        &|i| files[i].display().to_string(),
        batch,
        bar,
        dev,
    )
}

/// Class probabilities of images already in memory (an IDX split), named `#1`, `#2`, …;
/// an error when `c` is not an image classifier of their size and channels.
pub(crate) fn score_images(
    c: &classifier::Loaded,
    data: &ImageDataset,
    batch: usize,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let Predictor::Image { geometry: g, .. } = &c.predictor else {
        return Err(Error::Usage(format!(
            "{} is not an image classifier, and these examples are images",
            c.origin
        )));
    };
    if (data.channels, data.size) != (g.channels, g.size) {
        return Err(Error::Usage(format!(
            "{} takes {}-channel {}x{} images; these are {}-channel {}x{}",
            c.origin, g.channels, g.size, g.size, data.channels, data.size, data.size
        )));
    }
    let bar = progress(data.len);
    let out = image_scores(
        &c.predictor,
        data,
        &|i| format!("#{}", i + 1),
        batch,
        &bar,
        dev,
    )?;
    bar.finish_and_clear();
    Ok(out)
}

/// The images of `data` through the image classifier `p`, normalised as it was trained,
/// `batch` at a time; example `i` is reported as `name(i)`.
fn image_scores(
    p: &Predictor,
    data: &ImageDataset,
    name: &dyn Fn(usize) -> String,
    batch: usize,
    bar: &indicatif::ProgressBar,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let Predictor::Image {
        model: hf::Model::Classifier(model),
        normalize: n,
        ..
    } = p
    else {
        unreachable!("image_scores() is given an image classifier");
    };
    let all: Vec<usize> = (0..data.len).collect();
    let mut out = Vec::with_capacity(data.len);
    for chunk in all.chunks(batch) {
        let pixels = data.batch(chunk, &n.mean, &n.std, dev)?;
        let logits = model.forward(&pixels, &mut Mode::Eval)?;
        push_scored(&mut out, chunk.iter().map(|&i| name(i)), &logits, bar)?;
    }
    Ok(out)
}

/// Warnings for sentences longer than the model takes: the first few by number, then one
/// line counting the rest (an evaluation set may truncate thousands).
struct Truncations {
    max_len: usize,
    count: usize,
}

impl Truncations {
    const SHOWN: usize = 3;

    fn new(max_len: usize) -> Self {
        Self { max_len, count: 0 }
    }

    /// Sentence `number` (from 1) had `tokens` tokens, special tokens included.
    fn note(&mut self, number: usize, tokens: usize, bar: &indicatif::ProgressBar) {
        self.count += 1;
        if self.count <= Self::SHOWN {
            bar.suspend(|| {
                eprintln!(
                    "warning: sentence {number} has {tokens} tokens; truncated to the model's {} (with special tokens)",
                    self.max_len
                )
            });
        }
    }
}

impl Drop for Truncations {
    fn drop(&mut self) {
        if self.count > Self::SHOWN {
            eprintln!(
                "warning: {} more sentences were truncated to {} tokens ({} in all)",
                self.count - Self::SHOWN,
                self.max_len,
                self.count
            );
        }
    }
}

fn sentences(
    p: &Predictor,
    texts: &[String],
    batch: usize,
    bar: &indicatif::ProgressBar,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let Predictor::Text {
        model,
        tokenizer,
        max_len,
    } = p
    else {
        unreachable!("sentences() is given a text classifier");
    };
    let pad = model.encoder.config().pad_token_id;
    let mut out = Vec::with_capacity(texts.len());
    let mut cut = Truncations::new(*max_len);
    for (c, chunk) in texts.chunks(batch).enumerate() {
        // As the fine-tuning encoded its examples: [CLS] tokens [SEP], truncated.
        let seqs: Vec<Vec<u32>> = tokenizer
            .encode_batch(chunk, false)?
            .into_iter()
            .enumerate()
            .map(|(i, enc)| {
                if enc.ids.len() + 2 > *max_len {
                    cut.note(c * batch + i + 1, enc.ids.len() + 2, bar);
                }
                classification_ids(tokenizer, &enc.ids, *max_len)
            })
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let padded = pad_batch(&refs, pad);
        let ids = Tensor::from_vec(padded.ids, (padded.batch, padded.seq_len), dev)?;
        let logits = model.forward(&ids, &mut Mode::Eval)?;
        push_scored(&mut out, chunk.iter().cloned(), &logits, bar)?;
    }
    Ok(out)
}

/// Sentences through a Hugging Face text classifier: its tokenizer (special tokens as its
/// post-processor adds them), truncated to the model's positions, padded per batch.
fn hf_sentences(
    p: &Predictor,
    texts: &[String],
    batch: usize,
    bar: &indicatif::ProgressBar,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let Predictor::HfText {
        model,
        tokenizer,
        tokenizer_file,
        max_len,
    } = p
    else {
        unreachable!("hf_sentences() is given a Hugging Face text classifier");
    };
    let pad = model.config().pad_token_id;
    let mut out = Vec::with_capacity(texts.len());
    let mut cut = Truncations::new(*max_len);
    for (c, chunk) in texts.chunks(batch).enumerate() {
        let b = hf::text::tokenize(tokenizer, chunk, *max_len, pad, tokenizer_file, dev)?;
        for (i, n) in &b.truncated {
            cut.note(c * batch + i + 1, *n, bar);
        }
        let inputs = std::collections::BTreeMap::from([
            ("input_ids".to_string(), b.input_ids),
            ("attention_mask".to_string(), b.attention_mask),
        ]);
        let logits = model
            .forward(&inputs)?
            .remove("logits")
            .ok_or_else(|| Error::Usage("this text model gives no logits".into()))?;
        push_scored(&mut out, chunk.iter().cloned(), &logits, bar)?;
    }
    Ok(out)
}

fn clips(
    p: &Predictor,
    files: &[PathBuf],
    batch: usize,
    bar: &indicatif::ProgressBar,
    dev: &Device,
) -> Result<Vec<Scored>> {
    let (rate, window) = match p {
        Predictor::Spectrogram { spec, .. } => {
            (spec.features.mel.sample_rate, spec.features.clip_len())
        }
        Predictor::Waveform { spec, .. } => (spec.sample_rate, spec.samples),
        _ => unreachable!("clips() is given an audio classifier"),
    };
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let samples = load_clip(path, rate)?;
        if samples.is_empty() {
            return Err(Error::data(path, "no audio samples in this file"));
        }
        // Trimmed of silence when the classifier's features say so, then, as in the
        // fine-tuning, a clip up to the window is padded (and its padding masked).
        let samples = match p {
            Predictor::Spectrogram { spec, .. } => spec.features.trim(&samples),
            _ => &samples,
        };
        let parts = windows(samples, window);
        let mut rows = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(batch) {
            let logits = window_logits(p, chunk, window, dev)
                .map_err(|e| Error::data(path, e.to_string()))?;
            rows.extend(softmax_rows(&logits)?);
        }
        // The file's probabilities: the mean of its windows'.
        let probs = (0..rows[0].len())
            .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32)
            .collect();
        let mut details = Map::new();
        details.insert("seconds".into(), json!(samples.len() as f64 / rate as f64));
        details.insert("windows".into(), json!(parts.len()));
        out.push(Scored {
            input: path.display().to_string(),
            probs,
            details,
        });
        bar.inc(1);
    }
    Ok(out)
}

/// Logits `[N, classes]` of audio windows, each fitted to `window` samples.
pub(crate) fn window_logits(
    p: &Predictor,
    parts: &[&[f32]],
    window: usize,
    dev: &Device,
) -> Result<Tensor> {
    match p {
        Predictor::Spectrogram { model, spec, mel } => {
            let x = spec.features.windows_input(mel, parts, dev)?;
            Ok(model.forward(&x, &mut Mode::Eval)?)
        }
        Predictor::Waveform {
            model,
            spec,
            fit: false,
        } => {
            // Windows of their own lengths: one forward pass each, no padding.
            let mut rows = Vec::with_capacity(parts.len());
            for w in parts {
                let mut x = w.to_vec();
                if spec.normalize {
                    crate::modality::audio::waveform::zero_mean_unit_var(&mut x);
                }
                let x = Tensor::from_vec(x, (1, w.len()), dev)?;
                rows.push(model.forward(&x, &mut Mode::Eval)?);
            }
            Ok(Tensor::cat(&rows, 0)?)
        }
        Predictor::Waveform { model, spec, .. } => {
            let mut values = Vec::with_capacity(parts.len() * window);
            for w in parts {
                let mut x = fit_length(w, window);
                if spec.normalize {
                    crate::modality::audio::waveform::zero_mean_unit_var(&mut x);
                }
                values.extend(x);
            }
            let x = Tensor::from_vec(values, (parts.len(), window), dev)?;
            Ok(model.forward(&x, &mut Mode::Eval)?)
        }
        _ => unreachable!("window_logits() is given an audio classifier"),
    }
}

/// A probability as JSON, written with the digits an f32 holds (`0.3527593`, not
/// `0.35275930166244507`).
fn probability(p: f32) -> Value {
    json!(p.to_string().parse::<f64>().unwrap_or(f64::from(p)))
}

/// The `k` most probable classes of `probs`, most probable first (the lower label on a tie).
pub(crate) fn top(probs: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn check_out(out: Option<&Path>) -> Result<()> {
    match out.map(|p| p.extension().and_then(|e| e.to_str())) {
        None | Some(Some("jsonl" | "csv")) => Ok(()),
        Some(_) => Err(Error::Usage(format!(
            "--out {}: expected a .jsonl or .csv file",
            out.map_or(String::new(), |p| p.display().to_string())
        ))),
    }
}

fn write(scored: &[Scored], classes: &[String], opts: &PredictOptions) -> Result<()> {
    let k = opts.top_k.min(classes.len());
    let csv = opts
        .out
        .is_some_and(|p| p.extension().is_some_and(|e| e == "csv"));
    let text = if csv {
        to_csv(scored, classes, k)?
    } else {
        scored
            .iter()
            .map(|s| {
                let best = top(&s.probs, k);
                let mut line = Map::new();
                line.insert("input".into(), json!(s.input));
                line.insert("label".into(), json!(classes[best[0]]));
                line.insert("score".into(), probability(s.probs[best[0]]));
                let list: Vec<Value> = best
                    .iter()
                    .map(|&i| json!({"label": classes[i], "score": probability(s.probs[i])}))
                    .collect();
                line.insert("top_k".into(), Value::Array(list));
                line.extend(s.details.clone());
                Value::Object(line).to_string() + "\n"
            })
            .collect()
    };
    match opts.out {
        None => print!("{text}"),
        Some(path) => crate::tensor_io::write_atomic(path, text.as_bytes())?,
    }
    Ok(())
}

/// CSV: `input,label,score`, then `label_2,score_2,…` up to `k`, then any details
/// (audio: `seconds,windows`).
fn to_csv(scored: &[Scored], classes: &[String], k: usize) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["input".to_string(), "label".into(), "score".into()];
    for r in 2..=k {
        header.extend([format!("label_{r}"), format!("score_{r}")]);
    }
    let detail_keys: Vec<String> = scored
        .first()
        .map(|s| s.details.keys().cloned().collect())
        .unwrap_or_default();
    header.extend(detail_keys.iter().cloned());
    let err = |e: csv::Error| Error::Usage(format!("writing CSV: {e}"));
    w.write_record(&header).map_err(err)?;
    for s in scored {
        let mut row = vec![s.input.clone()];
        for i in top(&s.probs, k) {
            row.extend([classes[i].clone(), s.probs[i].to_string()]);
        }
        row.extend(detail_keys.iter().map(|key| s.details[key].to_string()));
        w.write_record(&row).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Usage(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Usage(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_most_probable_first_and_ties_go_to_the_lower_label() {
        assert_eq!(top(&[0.1, 0.5, 0.1, 0.3], 3), vec![1, 3, 0]);
        assert_eq!(top(&[0.25; 4], 2), vec![0, 1]);
        assert_eq!(top(&[1.0], 5), vec![0]);
    }

    #[test]
    fn csv_rows_have_one_pair_per_rank_and_quote_what_needs_it() {
        let classes = vec!["T-shirt/top".to_string(), "a, b".into(), "c".into()];
        let s = Scored {
            input: "x.png".into(),
            probs: vec![0.2, 0.7, 0.1],
            details: Map::new(),
        };
        let text = to_csv(&[s], &classes, 2).unwrap();
        assert_eq!(
            text,
            "input,label,score,label_2,score_2\nx.png,\"a, b\",0.7,T-shirt/top,0.2\n"
        );
    }
}
