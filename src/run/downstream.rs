//! The downstream stage: every head of the recipe at each of its label fractions, starting
//! from the pretrained encoder or the same encoder untrained (`scratch`) — or, for images,
//! raw pixels.
//!
//! The loop (label fractions, stratified draws, caching, the probe and k-NN on frozen
//! features) is the same for every modality; a [`DownstreamTask`] supplies the labels, the
//! frozen features and fine-tuning. Every modality's is a `run::classify::Task` over its
//! `Labelled` splits (`run/<modality>/task.rs`).
//!
//! Each (section, fraction) writes `downstream/<NN>-<head>-<input>-<pct>/result.json`
//! (fine-tuned classifiers also their weights there); a resumed run reuses results whose
//! settings have not changed, so an interrupted downstream stage picks up where it stopped;
//! a finished result whose place other settings take is kept ([`super::kept`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::head::finetune::FineTuneConfig;
use crate::head::knn::{self, KnnConfig};
use crate::head::{split, LinearProbe, ProbeConfig};
use crate::recipe::{DownstreamInput, DownstreamSection, HeadKind, Pooling};

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
    /// Which label draw, 1-based, when the section asks for several (`draws`); the report
    /// averages a method's draws at each fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<usize>,
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

pub use super::classify::FineTuned;

/// A modality's side of the downstream stage.
pub trait DownstreamTask {
    /// Labels of the training split, `0..num_classes`.
    fn train_labels(&self) -> &[u32];
    /// Labels of the test split.
    fn test_labels(&self) -> &[u32];
    fn num_classes(&self) -> usize;
    /// Frozen, pooled features `[N, D]` of the train and test splits.
    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)>;
    /// Fine-tunes the encoder (`pretrained` or `scratch`) and a linear classifier on the
    /// training examples `chosen`, saves the classifier into `dir`, and evaluates it.
    fn fine_tune(
        &self,
        section: &DownstreamSection,
        chosen: &[usize],
        cfg: &FineTuneConfig,
        dir: &Path,
    ) -> Result<FineTuned>;
}

/// Everything the downstream heads need from a finished pretraining run.
pub struct Downstream<'a> {
    pub run_dir: &'a Path,
    pub task: &'a dyn DownstreamTask,
    /// Pretraining steps behind the pretrained encoder (part of the cache key).
    pub pretrain_steps: usize,
    /// The recipe's `data` section, serialised: the examples the heads train and test on and
    /// how they are read (part of the cache key, so a run whose `data.labelled` changed
    /// trains its heads again instead of reporting the old split's results).
    pub data: serde_json::Value,
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
        let f = self.task.features(input, pooling)?;
        eprintln!(
            "features ({input:?}, {pooling:?} pooling) of {} + {} examples in {:.0} s",
            f.0.dim(0)?,
            f.1.dim(0)?,
            started.elapsed().as_secs_f64()
        );
        cache.insert((input, pooling), f.clone());
        Ok(f)
    }

    /// Runs every section at each of its label fractions.
    pub fn run(&self, sections: &[DownstreamSection]) -> Result<Vec<DownstreamResult>> {
        let labels = self.task.train_labels();
        let classes = self.task.num_classes();
        let test_labels = self.task.test_labels();
        let test_y = Tensor::from_slice(test_labels, test_labels.len(), self.device)?;
        let mut cache = FeatureCache::new();
        let mut results = Vec::new();
        let names = crate::recipe::head::method_names(sections);
        for (i, section) in sections.iter().enumerate() {
            for (fraction, draw) in section
                .label_fractions
                .iter()
                .flat_map(|&f| (0..draws_at(section, f)).map(move |d| (f, d)))
            {
                // Draw d is seeded `seed + d`: the first is the draw of a single-draw
                // section, in the directory a single draw has.
                let seed = self.seed.wrapping_add(draw as u64);
                let draws = draws_at(section, fraction);
                let numbered = (draws > 1).then_some(draw + 1);
                let dir = self.run_dir.join(DIR).join(format!(
                    "{i:02}-{}-{}{}",
                    slug(section),
                    percent(fraction),
                    numbered.map_or(String::new(), |n| format!("-draw{n}"))
                ));
                let of_draws = numbered.map_or(String::new(), |n| format!(", draw {n} of {draws}"));
                let settings = serde_json::json!({
                    "section": section,
                    "label_fraction": fraction,
                    "pretrain_steps": self.pretrain_steps,
                    "data": self.data,
                    "seed": seed,
                });
                super::kept::prepare(&dir, &settings)?;
                let cached_file = dir.join("result.json");
                if let Some(c) = crate::input::read_to_string(&cached_file)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Cached>(&t).ok())
                    .filter(|c| c.settings == settings)
                {
                    let mut c = c;
                    c.result.method = names[i].clone();
                    eprintln!(
                        "{}, {:.0} % of labels{of_draws}: {:.2} % (from {})",
                        c.result.method,
                        fraction * 100.0,
                        c.result.test_accuracy * 100.0,
                        cached_file.display()
                    );
                    results.push(c.result);
                    continue;
                }
                let chosen = split::stratified(labels, fraction, seed);
                let started = Instant::now();
                let mut r = match section.head {
                    HeadKind::FineTune => {
                        let label = format!(
                            "  {}, {:.0} % of labels{of_draws}: ",
                            section.label(),
                            fraction * 100.0
                        );
                        let done =
                            self.fine_tune(section, label, &chosen, seed, &dir, &settings)?;
                        let mut r =
                            self.result(section, fraction, chosen.len(), done.test_accuracy);
                        r.train_accuracy = done.train_accuracy;
                        r.steps = Some(done.steps);
                        r.model_dir = Some(dir.clone());
                        r
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
                        let y: Vec<u32> = chosen.iter().map(|&i| labels[i]).collect();
                        let y = Tensor::from_vec(y, chosen.len(), self.device)?;
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
                                    seed,
                                },
                            )?;
                            self.result(section, fraction, p.train_examples, p.test_accuracy)
                                .with_train(p.train_accuracy)
                        }
                    }
                };
                r.seconds = started.elapsed().as_secs_f64();
                r.method = names[i].clone();
                r.draw = numbered;
                eprintln!(
                    "{}, {:.0} % of labels{of_draws} ({} examples): test accuracy {:.2} % ({:.0} s)",
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
            draw: None,
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

    /// Fine-tunes into `dir`, continuing an interrupted fine-tuning of the same `settings`
    /// from its newest checkpoint (those of other settings are removed first), and removes
    /// the checkpoints once the classifier is saved; `label` starts its progress lines.
    fn fine_tune(
        &self,
        section: &DownstreamSection,
        label: String,
        chosen: &[usize],
        seed: u64,
        dir: &Path,
        settings: &serde_json::Value,
    ) -> Result<FineTuned> {
        let cfg = FineTuneConfig {
            epochs: section.epochs(),
            min_steps: section.min_steps.unwrap_or(0),
            lr: section.lr(),
            weight_decay: section.weight_decay,
            batch_size: section.batch_size,
            warmup_fraction: section.warmup_fraction,
            layer_decay: section.layer_decay,
            label_smoothing: section.label_smoothing,
            seed,
            lengths: None,
            checkpoint_every: section.checkpoint_every(),
            label,
            stop_after: None,
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let checkpoints = dir.join("checkpoints");
        let settings_file = dir.join("settings.json");
        let same = crate::input::read_to_string(&settings_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|s| &s == settings);
        if !same && checkpoints.exists() {
            eprintln!(
                "  {}: the fine-tuning settings changed; starting it over",
                checkpoints.display()
            );
            std::fs::remove_dir_all(&checkpoints).map_err(|e| Error::io(&checkpoints, e))?;
        }
        let json = serde_json::to_string_pretty(settings)
            .map_err(|e| Error::data(&settings_file, e.to_string()))?;
        crate::tensor_io::write_atomic(&settings_file, json.as_bytes())?;
        let done = self.task.fine_tune(section, chosen, &cfg, dir)?;
        if checkpoints.exists() {
            std::fs::remove_dir_all(&checkpoints).map_err(|e| Error::io(&checkpoints, e))?;
        }
        Ok(done)
    }
}

/// Label draws of `section` at `fraction`: one at a fraction of 1, where every draw would
/// be the whole training split.
fn draws_at(section: &DownstreamSection, fraction: f64) -> usize {
    if fraction >= 1.0 {
        1
    } else {
        section.draws
    }
}

impl DownstreamResult {
    fn with_train(mut self, accuracy: f64) -> Self {
        self.train_accuracy = Some(accuracy);
        self
    }
}
