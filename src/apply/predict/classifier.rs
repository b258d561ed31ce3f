//! The classifier `predict` runs: what `--model` names, resolved to one classifier and built.
//!
//! - a run directory: its best fine-tuned classifier (`RUN/downstream/*/` with the highest
//!   test accuracy in its `result.json`), said on stderr;
//! - a saved classifier directory (`model.json` + `model.safetensors`) of any modality;
//! - a Hugging Face `ViTForImageClassification`, `BertForSequenceClassification`,
//!   `RobertaForSequenceClassification` or `Wav2Vec2ForSequenceClassification` (HuBERT,
//!   data2vec-audio) directory, or `hf:org/name`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use crate::backbone::classifier::{SPEC_FILE, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::hf;
use crate::modality::audio::classifier::{
    AudioClassifier, AudioClassifierSpec, WaveformClassifier, WaveformClassifierSpec,
};
use crate::modality::audio::mel::MelSpectrogram;
use crate::modality::image::ImageGeometry;
use crate::modality::text::classifier::{TextClassifier, TextClassifierSpec};
use crate::modality::text::tokenizer::TextTokenizer;
use crate::run;

/// A classifier ready to run, with what its inputs need.
pub enum Predictor {
    Image {
        model: hf::Model,
        geometry: ImageGeometry,
        normalize: hf::spec::Normalize,
    },
    Text {
        model: TextClassifier,
        tokenizer: Box<TextTokenizer>,
        /// Longest sequence, special tokens included.
        max_len: usize,
    },
    /// A Hugging Face `BertForSequenceClassification` / `RobertaForSequenceClassification`
    /// with its own `tokenizer.json`.
    HfText {
        model: Box<hf::text::TextModel>,
        tokenizer: Box<tokenizers::Tokenizer>,
        tokenizer_file: PathBuf,
        max_len: usize,
    },
    Spectrogram {
        model: AudioClassifier,
        spec: Box<AudioClassifierSpec>,
        mel: MelSpectrogram,
    },
    Waveform {
        model: WaveformClassifier,
        spec: Box<WaveformClassifierSpec>,
        /// Each window is fitted (cropped or padded) to `spec.samples`, as fine-tuning saw
        /// its clips; `false` for a Hugging Face classifier, which takes each window at its
        /// own length (up to `spec.samples`), as `transformers`' audio pipeline does.
        fit: bool,
    },
}

pub struct Loaded {
    pub predictor: Predictor,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Where it came from, for messages.
    pub origin: String,
}

/// Loads the classifier `src` names.
pub fn load(src: &str, device: &Device) -> Result<Loaded> {
    let path = Path::new(src);
    let dir = if run::dir::is_run_dir(path) {
        best_in_run(path)?
    } else {
        path.to_path_buf()
    };
    match load_saved(&dir, device)? {
        Some(c) => Ok(c),
        // Image classifiers load as `forward` and `export` load them (a run's
        // normalisation included), Hugging Face ones from their config.
        None => image(&dir.display().to_string(), src, device),
    }
}

/// The text or audio classifier a run saved at `src` (its directory, or a file in it:
/// `model.json` of kind `text-classifier`, `audio-classifier` or `waveform-classifier`);
/// `None` for anything else, which `forward` runs as a Hugging Face model and [`load`] as
/// an image classifier.
pub fn load_saved(src: &Path, device: &Device) -> Result<Option<Loaded>> {
    let Some(saved) = saved_spec(src)? else {
        return Ok(None);
    };
    let (dir, spec_path, json) = (saved.dir.as_path(), &saved.spec_path, saved.json);
    let origin = dir.display().to_string();
    Ok(Some(match saved.kind.as_str() {
        TextClassifierSpec::KIND => {
            let spec = hf::text_classifier::read_spec(spec_path, json)?;
            let vb = weights(dir, device)?;
            let model = TextClassifier::new(&spec, vb).map_err(|e| weights_error(dir, e))?;
            let (tokenizer, max_len) = text_inputs(dir, spec.text.max_len())?;
            Loaded {
                predictor: Predictor::Text {
                    model,
                    tokenizer: Box::new(tokenizer),
                    max_len,
                },
                classes: spec.labels,
                origin,
            }
        }
        AudioClassifierSpec::KIND => {
            let spec: AudioClassifierSpec = read_spec(spec_path, json)?;
            let mel = MelSpectrogram::new(&spec.features.mel)
                .map_err(|e| Error::data(spec_path, format!("features.mel: {e}")))?;
            let model = AudioClassifier::new(&spec, weights(dir, device)?)
                .map_err(|e| weights_error(dir, e))?;
            Loaded {
                classes: spec.classes.clone(),
                predictor: Predictor::Spectrogram {
                    model,
                    spec: Box::new(spec),
                    mel,
                },
                origin,
            }
        }
        WaveformClassifierSpec::KIND => {
            let spec: WaveformClassifierSpec = read_spec(spec_path, json)?;
            let model = WaveformClassifier::new(&spec, weights(dir, device)?)
                .map_err(|e| weights_error(dir, e))?;
            Loaded {
                classes: spec.classes.clone(),
                predictor: Predictor::Waveform {
                    model,
                    spec: Box::new(spec),
                    fit: true,
                },
                origin,
            }
        }
        _ => return Ok(None),
    }))
}

/// A saved classifier's `model.json`, read but not yet interpreted.
pub struct SavedSpec {
    /// The classifier's directory.
    pub dir: PathBuf,
    pub spec_path: PathBuf,
    /// Its `kind` (`text-classifier`, `image-classifier`, …; empty when it has none).
    pub kind: String,
    pub json: serde_json::Value,
}

/// The `model.json` of the classifier saved at `src` (its directory, or a file in it), if
/// there is one.
pub fn saved_spec(src: &Path) -> Result<Option<SavedSpec>> {
    let dir = if src.is_file() {
        src.parent().unwrap_or(Path::new("."))
    } else {
        src
    };
    let spec_path = dir.join(SPEC_FILE);
    if !spec_path.is_file() {
        return Ok(None);
    }
    let json: serde_json::Value = serde_json::from_str(&crate::input::read_to_string(&spec_path)?)
        .map_err(|e| Error::data(&spec_path, e.to_string()))?;
    let kind = json.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    Ok(Some(SavedSpec {
        dir: dir.to_path_buf(),
        spec_path: spec_path.clone(),
        kind: kind.to_string(),
        json,
    }))
}

/// An image classifier: a saved one (in a run or not) or a Hugging Face one.
fn image(dir: &str, src: &str, device: &Device) -> Result<Loaded> {
    let loaded = match run::source::load_any(dir, device)? {
        run::source::AnyModel::Image(m) => m,
        run::source::AnyModel::Text(m) => return hf_text(m, src, device),
        run::source::AnyModel::Audio(m) => return hf_waveform(m, src, device),
        other => return Err(not_a_classifier(src, &other.describe())),
    };
    let num_labels = match loaded.spec.kind {
        hf::spec::Kind::Classifier { num_labels, .. } => num_labels,
        _ => {
            let what = format!("an image model ({})", loaded.spec.hf_class());
            return Err(not_a_classifier(src, &what));
        }
    };
    let classes = hf::config::label_list(loaded.hf_config.as_ref(), num_labels);
    Ok(Loaded {
        predictor: Predictor::Image {
            model: hf::Model::build(&loaded, device)?,
            geometry: loaded.spec.geometry,
            normalize: loaded.normalize.clone(),
        },
        classes,
        origin: loaded.origin,
    })
}

/// A Hugging Face text classifier, with the tokenizer beside it.
fn hf_text(m: hf::text::TextLoaded, src: &str, device: &Device) -> Result<Loaded> {
    let hf::bert::TextKind::Classifier { num_labels } = m.spec.kind else {
        let what = format!("a text model ({})", m.spec.hf_class());
        return Err(not_a_classifier(src, &what));
    };
    let tokenizer_file = m.tokenizer.clone().ok_or_else(|| {
        Error::data(
            &m.origin,
            "this text classifier has no tokenizer.json, which labelling sentences needs",
        )
    })?;
    let tokenizer = hf::text::read_tokenizer(&tokenizer_file)?;
    let model = hf::text::TextModel::build(&m, device)?;
    let max_len = model.config().max_len();
    Ok(Loaded {
        classes: hf::config::label_list(m.hf_config.as_ref(), num_labels),
        predictor: Predictor::HfText {
            model: Box::new(model),
            tokenizer: Box::new(tokenizer),
            tokenizer_file,
            max_len,
        },
        origin: m.origin,
    })
}

/// A Hugging Face waveform sequence classifier, run on windows of up to
/// [`HF_WAVEFORM_WINDOW_SECONDS`], each at its own length.
fn hf_waveform(m: hf::audio::AudioLoaded, src: &str, device: &Device) -> Result<Loaded> {
    let Some(head) = m.spec.head else {
        let what = format!("an audio model ({})", m.spec.hf_class());
        return Err(not_a_classifier(src, &what));
    };
    let classes = hf::config::label_list(m.hf_config.as_ref(), head.num_labels);
    let spec = WaveformClassifierSpec {
        kind: WaveformClassifierSpec::KIND.into(),
        model_type: m.spec.family.model_type().into(),
        config: m.spec.config.clone(),
        sample_rate: m.sample_rate,
        samples: HF_WAVEFORM_WINDOW_SECONDS * m.sample_rate as usize,
        normalize: m.normalize,
        classes: classes.clone(),
        projector: Some(head.proj),
    };
    let tensors = m.tensors.into_iter().collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let model =
        WaveformClassifier::new(&spec, vb).map_err(|e| Error::data(&m.origin, e.to_string()))?;
    Ok(Loaded {
        predictor: Predictor::Waveform {
            model,
            spec: Box::new(spec),
            fit: false,
        },
        classes,
        origin: m.origin,
    })
}

/// Longest window a Hugging Face waveform classifier sees at once (as `embed`'s): a longer
/// file is cut into windows whose probabilities are averaged; the attention's memory grows
/// with the square of the window.
const HF_WAVEFORM_WINDOW_SECONDS: usize = 20;

fn not_a_classifier(src: &str, what: &str) -> Error {
    Error::Usage(format!(
        "{src} is {what}, not a classifier: give a run with a fine-tuned head \
         (`[[downstream]] head = \"fine-tune\"`), a classifier it saved (RUN/downstream/NAME), \
         or a Hugging Face ViTForImageClassification, BertForSequenceClassification, \
         RobertaForSequenceClassification or Wav2Vec2ForSequenceClassification (HuBERT, \
         data2vec-audio)"
    ))
}

/// A run's fine-tuned classifier with the best test accuracy (the larger label fraction on
/// a tie), said on stderr.
pub(crate) fn best_in_run(run: &Path) -> Result<PathBuf> {
    let root = run.join(run::downstream::DIR);
    let mut best: Option<((f64, f64), PathBuf)> = None;
    if root.is_dir() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(|e| Error::io(&root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(SPEC_FILE).is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            let file = d.join("result.json");
            let result = crate::input::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let number = |key: &str| {
                result
                    .as_ref()
                    .and_then(|v| v["result"][key].as_f64())
                    .unwrap_or(f64::NEG_INFINITY)
            };
            let rank = (number("test_accuracy"), number("label_fraction"));
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, d));
            }
        }
    }
    let ((accuracy, _), dir) = best.ok_or_else(|| {
        Error::data(
            run,
            "this run holds no fine-tuned classifier (RUN/downstream/*/model.json): add a \
             `[[downstream]] head = \"fine-tune\"` section to its recipe.toml and run \
             `pretext run RUN` again",
        )
    })?;
    if accuracy.is_finite() {
        eprintln!(
            "using {} ({:.2} % test accuracy, the run's best classifier)",
            dir.display(),
            accuracy * 100.0
        );
    } else {
        eprintln!("using {}", dir.display());
    }
    Ok(dir)
}

fn read_spec<T: DeserializeOwned>(path: &Path, json: serde_json::Value) -> Result<T> {
    serde_json::from_value(json).map_err(|e| Error::data(path, e.to_string()))
}

/// `dir/model.safetensors` as a variable builder (frozen).
fn weights(dir: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let tensors = crate::tensor_io::read(&dir.join(WEIGHTS_FILE), device)?.tensors;
    let tensors: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.detach())))
        .collect::<Result<_>>()?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// A classifier that does not build from its weights: the weights file's fault.
fn weights_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::data(
        dir.join(WEIGHTS_FILE),
        format!("does not match {SPEC_FILE}: {e}"),
    )
}

/// The `tokenizer.json` of the text classifier saved in `dir`: its own, else its run's.
pub fn tokenizer_file(dir: &Path) -> Result<PathBuf> {
    let own = dir.join(hf::text::TOKENIZER_FILE);
    let run = dir.parent().and_then(Path::parent);
    match run.map(|r| r.join(hf::text::TOKENIZER_FILE)) {
        _ if own.is_file() => Ok(own),
        Some(f) if f.is_file() => Ok(f),
        _ => Err(Error::data(
            dir,
            "no tokenizer.json here or in the run this classifier belongs to",
        )),
    }
}

/// A text classifier's tokenizer (its own `tokenizer.json`, else its run's) and sequence
/// length (the run recipe's `data.text.max_len` where it is shorter than `positions`).
fn text_inputs(dir: &Path, positions: usize) -> Result<(TextTokenizer, usize)> {
    let run = dir.parent().and_then(Path::parent);
    let tokenizer = TextTokenizer::from_file(&tokenizer_file(dir)?)?;
    let recipe_len = run
        .map(|r| r.join(run::dir::RECIPE_FILE))
        .filter(|f| f.is_file())
        .map(|f| -> Result<Option<usize>> {
            let text = crate::input::read_to_string(&f)?;
            let v: toml::Value =
                toml::from_str(&text).map_err(|e| Error::data(&f, e.to_string()))?;
            Ok(v.get("data")
                .and_then(|d| d.get("text"))
                .and_then(|t| t.get("max_len"))
                .and_then(toml::Value::as_integer)
                .and_then(|n| usize::try_from(n).ok()))
        })
        .transpose()?
        .flatten();
    Ok((
        tokenizer,
        recipe_len.map_or(positions, |n| n.min(positions)),
    ))
}
