//! Audio from a waveform model: with `model.source` naming wav2vec 2.0, HuBERT or
//! data2vec-audio (a local Hugging Face directory or `hf:org/name`) and `train.steps = 0`,
//! there is no Audio-MAE pretraining: the clips are kept as raw 16 kHz waveforms (cut or
//! padded to the length `data.audio.frames` and the mel hop describe, normalised per clip
//! when the source's feature extractor says `do_normalize`) and the downstream heads run on
//! the source's encoder ([`task::WaveformSplits`]); `scratch` is the same architecture freshly
//! initialised with the run's seed.

pub mod task;

use std::path::Path;

use candle_core::Device;

use super::{heads_sources, items, require_labels};
use crate::backbone::Mode;
use crate::error::Result;
use crate::hf::audio::AudioLoaded;
use crate::modality::audio::classifier::WaveformClassifierSpec;
use crate::modality::audio::clips::{AudioFeatures, ClipSet};
use crate::modality::audio::dataset::{self, AudioItem};
use crate::modality::audio::waveform::WaveformEncoder;
use crate::params::ParamStore;
use crate::recipe::Recipe;
use crate::run::classify::Task;
use crate::run::downstream::DownstreamTask;
use crate::run::source::AnyModel;
use crate::run::{invalid, Model, Pipeline, PretrainStage};
use task::WaveformSplits;

/// Everything an audio recipe with a waveform `model.source` needs, built and checked.
pub struct Prepared {
    pub model: Model,
    /// The source as loaded (spec, weights under `audio.*`, origin).
    pub source: AudioLoaded,
    /// The source's encoder as `audio.*`.
    /// The model's shape and input settings, with the training split's class names.
    pub spec: WaveformClassifierSpec,
    /// Labelled downstream splits (waveforms).
    pub train: ClipSet,
    pub test: ClipSet,
}

/// Loads the waveform model `model.source` names and the labelled splits as waveforms.
pub fn prepare(r: &Recipe, file: &Path, device: Device) -> Result<Prepared> {
    let a = r
        .data
        .audio
        .as_ref()
        .ok_or_else(|| invalid(file, "data.audio", "missing"))?;
    let src = r
        .model
        .source
        .as_deref()
        .ok_or_else(|| invalid(file, "model.source", "missing"))?;
    if r.train.steps > 0 {
        return Err(invalid(
            file,
            "train.steps",
            "must be 0 with a waveform model.source (no Audio-MAE pretraining: the downstream heads run on the source)",
        ));
    }
    let source = match crate::run::source::load_any(src, &device)? {
        AnyModel::Audio(m) => m,
        other => {
            return Err(invalid(
                file,
                "model.source",
                format!(
                    "`{src}` is {}; audio recipes start from a wav2vec2, HuBERT or data2vec-audio model",
                    other.describe()
                ),
            ))
        }
    };
    let normalize = source.normalize;
    let features = AudioFeatures {
        mel: a.mel.clone(),
        frames: a.frames,
        mean: 0.0,
        std: 1.0,
        trim_db: None,
    };
    let samples = features.clip_len();
    if source.spec.config.frames(samples) == 0 {
        return Err(invalid(
            file,
            "data.audio.frames",
            format!("clips of {samples} samples are too short for the model's conv stack"),
        ));
    }
    let params = ParamStore::new(r.seed);
    WaveformEncoder::new(&source.spec.config, params.var_builder(&device).pp("audio"))?;
    // A sequence classifier's head (`projector.*`, `classifier.*`) is not the encoder's.
    let encoder: std::collections::BTreeMap<_, _> = source
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with("audio."))
        .map(|(name, t)| (name.clone(), t.clone()))
        .collect();
    params.load_tensors(&encoder, Path::new(&source.origin))?;

    let [(train_src, train_key), (test_src, test_key)] = heads_sources(r, file)?;
    let train_items = items(train_src, train_key, file)?;
    let classes = dataset::class_names(&train_items);
    let load = |items: &[AudioItem]| {
        ClipSet::load_waveforms(items, a.mel.sample_rate, samples, normalize, &classes)
    };
    let train = load(&train_items)?;
    let test = load(&items(test_src, test_key, file)?)?;
    require_labels(&train, train_key, file)?;
    require_labels(&test, test_key, file)?;
    let spec = WaveformClassifierSpec {
        kind: WaveformClassifierSpec::KIND.into(),
        model_type: source.spec.family.model_type().into(),
        config: source.spec.config.clone(),
        sample_rate: a.mel.sample_rate,
        samples,
        normalize,
        classes,
        projector: None,
    };
    Ok(Prepared {
        model: Model {
            device,
            params,
            encoder_prefix: "audio.",
        },
        source,
        spec,
        train,
        test,
    })
}

impl Pipeline for Prepared {
    fn model(&self) -> &Model {
        &self.model
    }

    /// Nothing is pretrained: `prepare` requires `train.steps = 0`.
    fn pretrain<'a>(
        &'a self,
        _r: &'a Recipe,
        _log_dir: Option<&Path>,
        _resume_step: Option<usize>,
    ) -> Result<Option<Box<dyn PretrainStage + 'a>>> {
        Ok(None)
    }

    fn downstream<'a>(
        &'a self,
        r: &'a Recipe,
        _file: &Path,
    ) -> Result<Box<dyn DownstreamTask + 'a>> {
        let splits = WaveformSplits {
            train: &self.train,
            test: &self.test,
            spec: &self.spec,
        };
        Ok(Box::new(Task::new(splits, &self.model, r.seed)?))
    }

    fn dry_run(&self, r: &Recipe) -> Result<String> {
        let b = r.train.batch_size.clamp(1, self.train.len());
        let idx: Vec<usize> = (0..b).collect();
        let enc = WaveformEncoder::new(
            &self.spec.config,
            self.model
                .params
                .frozen_var_builder(&self.model.device)
                .pp("audio"),
        )?;
        let x = self.train.waveform_batch(&idx, &self.model.device)?;
        let h = enc.forward(&x, None, &mut Mode::Eval)?.last_hidden_state;
        Ok(format!(
            "recipe `{}` is valid\n  source: `{}` ({}), {} parameters\n  clips: {} train / {} test, {} classes, {} samples ({:.2} s at {} Hz){}\n  batch: waveforms {:?} -> hidden states {:?}\n  downstream: {} heads (no pretraining: train.steps = 0)\n",
            r.name,
            self.source.origin,
            self.source.spec.hf_class(),
            self.model.params.num_params(),
            self.train.len(),
            self.test.len(),
            self.spec.classes.len(),
            self.spec.samples,
            self.spec.samples as f64 / self.spec.sample_rate as f64,
            self.spec.sample_rate,
            if self.spec.normalize {
                ", normalised per clip"
            } else {
                ""
            },
            x.dims(),
            h.dims(),
            r.downstream.len(),
        ))
    }
}
