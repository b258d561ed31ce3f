//! The downstream stage: every head of the recipe at each of its label fractions, starting
//! from the pretrained encoder, the same encoder untrained (`scratch`), or raw pixels.
//!
//! Each (section, fraction) writes `downstream/<NN>-<head>-<input>-<pct>/result.json`
//! (fine-tuned classifiers also `model.safetensors` + `model.json` there); a resumed run
//! reuses results whose settings have not changed, so an interrupted downstream stage
//! picks up where it stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::{EncoderConfig, Mode};
use crate::error::{Error, Result};
use crate::head::finetune::{self, FineTuneConfig, FineTuneLog};
use crate::head::knn::{self, KnnConfig};
use crate::head::linear_probe::accuracy;
use crate::head::{split, LinearProbe, ProbeConfig};
use crate::modality::image::classifier::{ClassifierSpec, ImageClassifier, WEIGHTS_FILE};
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::{ImageEncoder, ImageGeometry};
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, HeadKind, ImageSection, Pooling};
use crate::train::metrics::MetricsLog;

/// Directory (inside the run) of the downstream results.
pub const DIR: &str = "downstream";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownstreamResult {
    /// Row label of the report, e.g. `fine-tune (pretrained)`.
    pub method: String,
    pub head: HeadKind,
    pub input: DownstreamInput,
    pub pooling: Pooling,
    pub label_fraction: f64,
    pub train_examples: usize,
    /// Accuracy on the examples trained on (omitted for fine-tuning on more than 10,000).
    pub train_accuracy: Option<f64>,
    pub test_accuracy: f64,
    /// Optimizer steps (fine-tuning).
    pub steps: Option<usize>,
    pub seconds: f64,
    /// The fine-tuned classifier, loadable by `pretext forward` / `export`.
    pub model_dir: Option<PathBuf>,
}

/// What `result.json` holds: the result and the settings that produced it.
#[derive(Serialize, Deserialize)]
struct Cached {
    settings: serde_json::Value,
    result: DownstreamResult,
}

/// Pooled encoder features `[N, D]` for a whole data set, computed without a gradient graph.
pub fn features(
    encoder: &ImageEncoder,
    data: &ImageDataset,
    image: &ImageSection,
    pooling: Pooling,
    device: &Device,
) -> Result<Tensor> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..data.len).collect();
    for chunk in all.chunks(256) {
        let imgs = data.batch(chunk, &image.mean, &image.std, device)?;
        let h = encoder.forward(&imgs, &mut Mode::Eval)?.detach();
        let pooled = match pooling {
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => h.narrow(1, 1, h.dim(1)? - 1)?.mean(1)?,
        };
        out.push(pooled);
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// Normalised pixels as features `[N, C*H*W]`.
pub fn pixel_features(
    data: &ImageDataset,
    image: &ImageSection,
    device: &Device,
) -> Result<Tensor> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..data.len).collect();
    for chunk in all.chunks(1024) {
        out.push(
            data.batch(chunk, &image.mean, &image.std, device)?
                .flatten_from(1)?,
        );
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// Everything the downstream heads need from a finished pretraining run.
pub struct Downstream<'a> {
    pub run_dir: &'a Path,
    pub train: &'a ImageDataset,
    pub test: &'a ImageDataset,
    pub image: &'a ImageSection,
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// Holds the pretrained encoder as `vit.*`.
    pub pretrained: &'a ParamStore,
    /// Pretraining steps behind `pretrained` (part of the cache key).
    pub pretrain_steps: usize,
    pub seed: u64,
    pub device: &'a Device,
}

type FeatureCache = HashMap<(DownstreamInput, Pooling), (Tensor, Tensor)>;

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}pct", p.round())
    } else {
        format!("{p}pct")
    }
}

/// The serde name of a recipe enum value (`fine-tune`, `scratch`).
fn serde_name(v: &impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn slug(section: &DownstreamSection) -> String {
    format!(
        "{}-{}",
        serde_name(&section.head),
        serde_name(&section.input)
    )
}

impl Downstream<'_> {
    /// A frozen image encoder: the pretrained one, or the same architecture at its
    /// initialisation (seeded like the pretraining run's, so "scratch" is exactly the
    /// pretraining's starting point).
    fn frozen_encoder(&self, input: DownstreamInput) -> Result<ImageEncoder> {
        let store = match input {
            DownstreamInput::Pretrained => self.pretrained.clone(),
            _ => ParamStore::new(self.seed),
        };
        if input != DownstreamInput::Pretrained {
            // Creates the parameters (at their seeded initial values) in the fresh store.
            ImageEncoder::new(
                self.geometry,
                &self.encoder,
                store.var_builder(self.device).pp("vit"),
            )?;
        }
        Ok(ImageEncoder::new(
            self.geometry,
            &self.encoder,
            store.frozen_var_builder(self.device).pp("vit"),
        )?)
    }

    fn features(
        &self,
        cache: &mut FeatureCache,
        input: DownstreamInput,
        pooling: Pooling,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(f) = cache.get(&(input, pooling)) {
            return Ok(f.clone());
        }
        let started = Instant::now();
        let f = match input {
            DownstreamInput::Pixels => (
                pixel_features(self.train, self.image, self.device)?,
                pixel_features(self.test, self.image, self.device)?,
            ),
            _ => {
                let enc = self.frozen_encoder(input)?;
                (
                    features(&enc, self.train, self.image, pooling, self.device)?,
                    features(&enc, self.test, self.image, pooling, self.device)?,
                )
            }
        };
        eprintln!(
            "features ({input:?}, {pooling:?} pooling) of {} + {} images in {:.0} s",
            self.train.len,
            self.test.len,
            started.elapsed().as_secs_f64()
        );
        cache.insert((input, pooling), f.clone());
        Ok(f)
    }

    /// Runs every section at each of its label fractions.
    pub fn run(&self, sections: &[DownstreamSection]) -> Result<Vec<DownstreamResult>> {
        let labels = self.train.labels.as_deref().ok_or_else(|| {
            Error::Usage("downstream heads need labels for the training split".into())
        })?;
        let classes = self.train.num_classes().max(self.test.num_classes());
        let all: Vec<usize> = (0..self.test.len).collect();
        let test_y = self.test.label_batch(&all, self.device)?;
        let mut cache = FeatureCache::new();
        let mut results = Vec::new();
        for (i, section) in sections.iter().enumerate() {
            for &fraction in &section.label_fractions {
                let dir = self.run_dir.join(DIR).join(format!(
                    "{i:02}-{}-{}",
                    slug(section),
                    percent(fraction)
                ));
                let settings = serde_json::json!({
                    "section": section,
                    "label_fraction": fraction,
                    "pretrain_steps": self.pretrain_steps,
                    "seed": self.seed,
                });
                let cached_file = dir.join("result.json");
                if let Some(c) = std::fs::read_to_string(&cached_file)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Cached>(&t).ok())
                    .filter(|c| c.settings == settings)
                {
                    eprintln!(
                        "{}, {:.0} % of labels: {:.2} % (from {})",
                        c.result.method,
                        fraction * 100.0,
                        c.result.test_accuracy * 100.0,
                        cached_file.display()
                    );
                    results.push(c.result);
                    continue;
                }
                let chosen = split::stratified(labels, fraction, self.seed);
                let started = Instant::now();
                let mut r = match section.head {
                    HeadKind::FineTune => {
                        self.fine_tune(section, fraction, &chosen, classes, &test_y, &dir)?
                    }
                    HeadKind::LinearProbe | HeadKind::Knn => {
                        let (train_x, test_x) =
                            self.features(&mut cache, section.input, section.pooling)?;
                        let idx = Tensor::from_vec(
                            chosen.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                            chosen.len(),
                            self.device,
                        )?;
                        let x = train_x.index_select(&idx, 0)?;
                        let y = self.train.label_batch(&chosen, self.device)?;
                        if section.head == HeadKind::Knn {
                            let acc =
                                self.knn(section, &x, &chosen, labels, &test_x, &test_y, classes)?;
                            self.result(section, fraction, chosen.len(), acc)
                        } else {
                            let p = LinearProbe::evaluate(
                                (&x, &y),
                                (&test_x, &test_y),
                                classes,
                                &ProbeConfig {
                                    epochs: section.epochs(),
                                    lr: section.lr(),
                                    weight_decay: section.weight_decay,
                                    batch_size: section.batch_size,
                                    seed: self.seed,
                                },
                            )?;
                            self.result(section, fraction, p.train_examples, p.test_accuracy)
                                .with_train(p.train_accuracy)
                        }
                    }
                };
                r.seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "{}, {:.0} % of labels ({} examples): test accuracy {:.2} % ({:.0} s)",
                    r.method,
                    fraction * 100.0,
                    r.train_examples,
                    r.test_accuracy * 100.0,
                    r.seconds
                );
                let json = serde_json::to_string_pretty(&Cached {
                    settings,
                    result: r.clone(),
                })
                .map_err(|e| Error::data(&cached_file, e.to_string()))?;
                crate::tensor_io::write_atomic(&cached_file, json.as_bytes())?;
                results.push(r);
            }
        }
        Ok(results)
    }

    fn result(
        &self,
        section: &DownstreamSection,
        fraction: f64,
        train_examples: usize,
        test_accuracy: f64,
    ) -> DownstreamResult {
        DownstreamResult {
            method: section.label(),
            head: section.head,
            input: section.input,
            pooling: section.pooling,
            label_fraction: fraction,
            train_examples,
            train_accuracy: None,
            test_accuracy,
            steps: None,
            seconds: 0.0,
            model_dir: None,
        }
    }

    /// Test accuracy of k-NN with the chosen examples as the keys.
    #[allow(clippy::too_many_arguments)]
    fn knn(
        &self,
        section: &DownstreamSection,
        keys: &Tensor,
        chosen: &[usize],
        labels: &[u32],
        test_x: &Tensor,
        test_y: &Tensor,
        classes: usize,
    ) -> Result<f64> {
        let key_labels: Vec<u32> = chosen.iter().map(|&i| labels[i]).collect();
        let cfg = KnnConfig {
            k: section.k,
            temperature: section.temperature,
        };
        let pred = knn::predict(keys, &key_labels, test_x, classes, cfg)?;
        let truth = test_y.to_vec1::<u32>()?;
        let hits = pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
        Ok(hits as f64 / truth.len().max(1) as f64)
    }

    fn fine_tune(
        &self,
        section: &DownstreamSection,
        fraction: f64,
        chosen: &[usize],
        classes: usize,
        test_y: &Tensor,
        dir: &Path,
    ) -> Result<DownstreamResult> {
        let spec = ClassifierSpec::new(
            self.geometry,
            self.encoder.clone(),
            classes,
            section.pooling,
        );
        let store = ParamStore::new(self.seed);
        let model = ImageClassifier::new(&spec, store.var_builder(self.device))?;
        if section.input == DownstreamInput::Pretrained {
            store.copy_prefix_from(self.pretrained, "vit.")?;
        }
        let cfg = FineTuneConfig {
            epochs: section.epochs(),
            min_steps: section.min_steps.unwrap_or(0),
            lr: section.lr(),
            weight_decay: section.weight_decay,
            batch_size: section.batch_size,
            warmup_fraction: section.warmup_fraction,
            layer_decay: section.layer_decay,
            label_smoothing: section.label_smoothing,
            seed: self.seed,
        };
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            Ok((
                self.train
                    .batch(idx, &self.image.mean, &self.image.std, self.device)?,
                self.train.label_batch(idx, self.device)?,
            ))
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut metrics = MetricsLog::open(&dir.join("metrics.jsonl"), Some(0))?;
        let total = cfg.total_steps(chosen.len());
        let label = format!("{}, {:.0} % of labels", section.label(), fraction * 100.0);
        let mut log = |l: &FineTuneLog| -> Result<()> {
            eprintln!(
                "  {label}: step {}/{total}  loss {:.4}  lr {:.2e}",
                l.step, l.loss, l.lr
            );
            metrics.log(l)
        };
        let steps = finetune::fine_tune(
            &store,
            self.encoder.depth,
            &|x, mode| model.forward(x, mode),
            &batch,
            chosen,
            &cfg,
            &mut log,
        )?;

        let frozen = ImageClassifier::new(&spec, store.frozen_var_builder(self.device))?;
        let all: Vec<usize> = (0..self.test.len).collect();
        let test_acc = self.accuracy_on(&frozen, self.test, &all, test_y)?;
        let train_acc = if chosen.len() <= 10_000 {
            let y = self.train.label_batch(chosen, self.device)?;
            Some(self.accuracy_on(&frozen, self.train, chosen, &y)?)
        } else {
            None
        };
        let tensors: Vec<(String, Tensor)> = store
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect();
        crate::tensor_io::write(&dir.join(WEIGHTS_FILE), &tensors, HashMap::new())?;
        spec.write(dir)?;
        let mut r = self.result(section, fraction, chosen.len(), test_acc);
        r.train_accuracy = train_acc;
        r.steps = Some(steps);
        r.model_dir = Some(dir.to_path_buf());
        Ok(r)
    }

    fn accuracy_on(
        &self,
        model: &ImageClassifier,
        data: &ImageDataset,
        idx: &[usize],
        labels: &Tensor,
    ) -> Result<f64> {
        let mut logits = Vec::new();
        for chunk in idx.chunks(500) {
            let x = data.batch(chunk, &self.image.mean, &self.image.std, self.device)?;
            logits.push(model.forward(&x, &mut Mode::Eval)?);
        }
        accuracy(&Tensor::cat(&logits, 0)?, labels)
    }
}

impl DownstreamResult {
    fn with_train(mut self, accuracy: f64) -> Self {
        self.train_accuracy = Some(accuracy);
        self
    }
}
