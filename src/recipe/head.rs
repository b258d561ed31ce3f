//! The `[[downstream]]` sections: a head (linear probe, fine-tuning, k-NN) on the labelled
//! splits at each label fraction. In a recipe each is tagged by `head` and takes only that
//! head's keys (`k` belongs to `knn`, `layer_decay` to `fine-tune`), so a key of another head
//! is an unknown-key error naming the keys this one takes; in memory it is one
//! [`DownstreamSection`] with every number resolved.

use serde::{Deserialize, Serialize};

use super::types::{AugmentSection, MixupSection};
use crate::backbone::{Pooler, Pooling};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// Logistic regression on frozen, standardised features.
    LinearProbe,
    /// The whole encoder and a linear classifier trained end to end.
    FineTune,
    /// k nearest neighbours by cosine similarity of frozen features, similarity-weighted
    /// votes (as in DINO's k-NN evaluation).
    Knn,
}

/// What a downstream head starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DownstreamInput {
    /// The pretrained encoder (the point of the exercise).
    #[default]
    Pretrained,
    /// The same encoder at its initialisation, before pretraining (the baseline that shows
    /// what pretraining bought).
    Scratch,
    /// No encoder: the normalised pixels themselves are the features (linear probe / k-NN).
    Pixels,
}

/// A downstream evaluation on the labelled splits (`data.train` with labels for training,
/// `data.test` for accuracy), at each label fraction. Numbers a head does not use keep
/// their defaults; unset ones take defaults that depend on the head (see
/// [`DownstreamSection::epochs`] and [`DownstreamSection::lr`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "HeadSection", into = "HeadSection")]
pub struct DownstreamSection {
    pub head: HeadKind,
    /// What the head starts from: `pretrained` (default), `scratch` or `pixels`.
    pub input: DownstreamInput,
    pub pooling: Pooling,
    /// Fine-tune (text): a learned pooler between pooling and the classifier; `tanh-cls`
    /// is BERT's, which makes the classifier exactly `BertForSequenceClassification` /
    /// `RobertaForSequenceClassification` on export. Absent = none.
    pub pooler: Option<Pooler>,
    /// Fractions of the labelled training split to train on (stratified, seeded draws).
    pub label_fractions: Vec<f64>,
    /// Independent label draws per fraction (seeds `seed`, `seed + 1`, …, wrapping), each trained and
    /// tested on its own; the report gives their mean and standard deviation. Few labels
    /// make one draw's accuracy noisy. A fraction of 1 is drawn once (every draw would be
    /// the whole split). Default 1.
    pub draws: usize,
    /// Passes over the chosen examples (linear probe: 100, fine-tune: 10).
    pub epochs: Option<usize>,
    /// Fine-tune: at least this many optimizer steps, whatever the fraction (small label
    /// fractions otherwise get only a handful of steps).
    pub min_steps: Option<usize>,
    /// Peak learning rate (linear probe: 1e-2, fine-tune: 1e-3).
    pub lr: Option<f64>,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Fine-tune: fraction of the steps spent warming the learning rate up (then cosine).
    pub warmup_fraction: f64,
    /// Fine-tune: layer-wise learning-rate decay (BEiT / MAE): block `i` of `depth` trains
    /// at `lr * layer_decay^(depth - i)`, the embeddings at `lr * layer_decay^(depth + 1)`,
    /// the head at `lr`. 1 (default) is a single learning rate.
    pub layer_decay: f64,
    /// Fine-tune: label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Fine-tune: stochastic depth of the encoder's blocks, the last block's rate (rising
    /// linearly from 0 at the first, as timm's `drop_path_rate`); 0 (default) = off.
    pub drop_path: f64,
    /// Fine-tune: write a full-state checkpoint every N steps (default 500), so an
    /// interrupted fine-tuning continues from the last one.
    pub checkpoint_every: Option<usize>,
    /// Fine-tune (images, audio): augment the training batches as `[data.augment]` augments
    /// pretraining's (images: `random_resized_crop`, `hflip`; audio: `time_shift`, `gain_db`,
    /// `noise`, `time_masks`, `freq_masks`); absent = none.
    pub augment: Option<AugmentSection>,
    /// Fine-tune (images, audio): mixup and CutMix of the training batches and their targets
    /// (timm's `Mixup`, as MAE's and Audio-MAE's fine-tuning use it; waveform models mixup
    /// only); absent = none.
    pub mixup: Option<MixupSection>,
    /// Fine-tune (waveform models): a projector Linear(hidden → P) on the frames before the
    /// classifier, which makes the classifier exactly `Wav2Vec2ForSequenceClassification`
    /// with `classifier_proj_size = P` (transformers' default: 256); absent = none.
    pub projector: Option<usize>,
    /// k-NN: neighbours that vote.
    pub k: usize,
    /// k-NN: votes weigh `exp(similarity / temperature)`.
    pub temperature: f64,
}

impl DownstreamSection {
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(match self.head {
            HeadKind::FineTune => 10,
            _ => 100,
        })
    }

    pub fn checkpoint_every(&self) -> usize {
        self.checkpoint_every.unwrap_or(500)
    }

    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(match self.head {
            HeadKind::FineTune => 1e-3,
            _ => 1e-2,
        })
    }

    /// A short label for tables: `fine-tune (pretrained)`.
    pub fn label(&self) -> String {
        let head = match self.head {
            HeadKind::LinearProbe => "linear probe",
            HeadKind::FineTune => "fine-tune",
            HeadKind::Knn => "k-NN",
        };
        let input = match self.input {
            DownstreamInput::Pretrained => "pretrained",
            DownstreamInput::Scratch => "from scratch",
            DownstreamInput::Pixels => "raw pixels",
        };
        format!("{head} ({input})")
    }
}

/// Each section's row name in the label-efficiency table: its [`DownstreamSection::label`],
/// with its pooling (and pooler) added where two sections would otherwise share a row, and
/// its index where even that does not tell them apart.
pub fn method_names(sections: &[DownstreamSection]) -> Vec<String> {
    let count = |names: &[String], n: &String| names.iter().filter(|m| *m == n).count();
    let plain: Vec<String> = sections.iter().map(DownstreamSection::label).collect();
    let detailed: Vec<String> = sections
        .iter()
        .zip(&plain)
        .map(|(s, name)| {
            if count(&plain, name) == 1 {
                return name.clone();
            }
            let pooling = match s.pooling {
                Pooling::Cls => "cls",
                Pooling::Mean => "mean",
            };
            let pooler = if s.pooler.is_some() {
                ", tanh-cls pooler"
            } else {
                ""
            };
            // `fine-tune (pretrained)` → `fine-tune (pretrained, mean pooling)`.
            format!("{}, {pooling} pooling{pooler})", name.trim_end_matches(')'))
        })
        .collect();
    // Still alike: what fine-tuning does besides (augmentation, stochastic depth).
    let training: Vec<String> = sections
        .iter()
        .zip(&detailed)
        .map(|(s, name)| {
            let mut extra = String::new();
            if count(&detailed, name) > 1 {
                if s.augment.is_some() {
                    extra.push_str(", augmented");
                }
                if s.mixup.is_some() {
                    extra.push_str(", mixup");
                }
                if s.drop_path > 0.0 {
                    extra.push_str(&format!(", drop path {}", s.drop_path));
                }
            }
            match extra.is_empty() {
                true => name.clone(),
                false => format!("{}{extra})", name.trim_end_matches(')')),
            }
        })
        .collect();
    training
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if count(&training, name) == 1 {
                name.clone()
            } else {
                format!("{name} #{i}")
            }
        })
        .collect()
}

/// A `[[downstream]]` table as written, tagged by `head`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "head", rename_all = "kebab-case")]
enum HeadSection {
    LinearProbe(ProbeKeys),
    FineTune(Box<FineTuneKeys>),
    Knn(KnnKeys),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeKeys {
    #[serde(default)]
    input: DownstreamInput,
    #[serde(default = "default_pooling")]
    pooling: Pooling,
    #[serde(default = "default_fractions")]
    label_fractions: Vec<f64>,
    #[serde(default = "default_draws", skip_serializing_if = "is_one_draw")]
    draws: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    #[serde(default)]
    weight_decay: f64,
    #[serde(default = "default_batch")]
    batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FineTuneKeys {
    #[serde(default)]
    input: DownstreamInput,
    #[serde(default = "default_pooling")]
    pooling: Pooling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pooler: Option<Pooler>,
    #[serde(default = "default_fractions")]
    label_fractions: Vec<f64>,
    #[serde(default = "default_draws", skip_serializing_if = "is_one_draw")]
    draws: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    #[serde(default)]
    weight_decay: f64,
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default = "default_warmup_fraction")]
    warmup_fraction: f64,
    #[serde(default = "default_one")]
    layer_decay: f64,
    #[serde(default)]
    label_smoothing: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    drop_path: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint_every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    augment: Option<AugmentSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mixup: Option<MixupSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    projector: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnnKeys {
    #[serde(default)]
    input: DownstreamInput,
    #[serde(default = "default_pooling")]
    pooling: Pooling,
    #[serde(default = "default_fractions")]
    label_fractions: Vec<f64>,
    #[serde(default = "default_draws", skip_serializing_if = "is_one_draw")]
    draws: usize,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "default_temperature")]
    temperature: f64,
}

/// Every key at its default, for the head `head`.
fn defaults(head: HeadKind) -> DownstreamSection {
    DownstreamSection {
        head,
        input: DownstreamInput::default(),
        pooling: default_pooling(),
        pooler: None,
        label_fractions: default_fractions(),
        draws: default_draws(),
        epochs: None,
        min_steps: None,
        lr: None,
        weight_decay: 0.0,
        batch_size: default_batch(),
        warmup_fraction: default_warmup_fraction(),
        layer_decay: default_one(),
        label_smoothing: 0.0,
        drop_path: 0.0,
        checkpoint_every: None,
        augment: None,
        mixup: None,
        projector: None,
        k: default_k(),
        temperature: default_temperature(),
    }
}

impl From<HeadSection> for DownstreamSection {
    fn from(h: HeadSection) -> Self {
        match h {
            HeadSection::LinearProbe(p) => DownstreamSection {
                input: p.input,
                pooling: p.pooling,
                label_fractions: p.label_fractions,
                draws: p.draws,
                epochs: p.epochs,
                lr: p.lr,
                weight_decay: p.weight_decay,
                batch_size: p.batch_size,
                ..defaults(HeadKind::LinearProbe)
            },
            HeadSection::FineTune(f) => {
                let f = *f;
                DownstreamSection {
                    input: f.input,
                    pooling: f.pooling,
                    pooler: f.pooler,
                    label_fractions: f.label_fractions,
                    draws: f.draws,
                    epochs: f.epochs,
                    min_steps: f.min_steps,
                    lr: f.lr,
                    weight_decay: f.weight_decay,
                    batch_size: f.batch_size,
                    warmup_fraction: f.warmup_fraction,
                    layer_decay: f.layer_decay,
                    label_smoothing: f.label_smoothing,
                    drop_path: f.drop_path,
                    checkpoint_every: f.checkpoint_every,
                    augment: f.augment,
                    mixup: f.mixup,
                    projector: f.projector,
                    ..defaults(HeadKind::FineTune)
                }
            }
            HeadSection::Knn(k) => DownstreamSection {
                input: k.input,
                pooling: k.pooling,
                label_fractions: k.label_fractions,
                draws: k.draws,
                k: k.k,
                temperature: k.temperature,
                ..defaults(HeadKind::Knn)
            },
        }
    }
}

impl From<DownstreamSection> for HeadSection {
    fn from(d: DownstreamSection) -> Self {
        match d.head {
            HeadKind::LinearProbe => HeadSection::LinearProbe(ProbeKeys {
                input: d.input,
                pooling: d.pooling,
                label_fractions: d.label_fractions,
                draws: d.draws,
                epochs: d.epochs,
                lr: d.lr,
                weight_decay: d.weight_decay,
                batch_size: d.batch_size,
            }),
            HeadKind::FineTune => HeadSection::FineTune(Box::new(FineTuneKeys {
                input: d.input,
                pooling: d.pooling,
                pooler: d.pooler,
                label_fractions: d.label_fractions,
                draws: d.draws,
                epochs: d.epochs,
                min_steps: d.min_steps,
                lr: d.lr,
                weight_decay: d.weight_decay,
                batch_size: d.batch_size,
                warmup_fraction: d.warmup_fraction,
                layer_decay: d.layer_decay,
                label_smoothing: d.label_smoothing,
                drop_path: d.drop_path,
                checkpoint_every: d.checkpoint_every,
                augment: d.augment,
                mixup: d.mixup,
                projector: d.projector,
            })),
            HeadKind::Knn => HeadSection::Knn(KnnKeys {
                input: d.input,
                pooling: d.pooling,
                label_fractions: d.label_fractions,
                draws: d.draws,
                k: d.k,
                temperature: d.temperature,
            }),
        }
    }
}

/// The keys of `head`'s table that old resolved recipes wrote for every head, with their
/// defaults: in a table of another head they say nothing and are dropped on load.
pub(super) fn foreign_defaults(head: &str) -> Vec<(&'static str, toml::Value)> {
    const PROBE_AND_FINE_TUNE: &[&str] = &["linear-probe", "fine-tune"];
    let d = defaults(HeadKind::Knn);
    let all: [(&str, toml::Value, &[&str]); 7] = [
        (
            "weight_decay",
            toml::Value::Float(d.weight_decay),
            PROBE_AND_FINE_TUNE,
        ),
        (
            "batch_size",
            toml::Value::Integer(d.batch_size as i64),
            PROBE_AND_FINE_TUNE,
        ),
        (
            "warmup_fraction",
            toml::Value::Float(d.warmup_fraction),
            &["fine-tune"],
        ),
        (
            "layer_decay",
            toml::Value::Float(d.layer_decay),
            &["fine-tune"],
        ),
        (
            "label_smoothing",
            toml::Value::Float(d.label_smoothing),
            &["fine-tune"],
        ),
        ("k", toml::Value::Integer(d.k as i64), &["knn"]),
        ("temperature", toml::Value::Float(d.temperature), &["knn"]),
    ];
    all.into_iter()
        .filter(|(_, _, owners)| !owners.contains(&head))
        .map(|(k, v, _)| (k, v))
        .collect()
}

fn default_pooling() -> Pooling {
    Pooling::Cls
}
fn default_fractions() -> Vec<f64> {
    vec![1.0]
}
fn default_batch() -> usize {
    256
}
fn default_warmup_fraction() -> f64 {
    0.1
}
fn default_one() -> f64 {
    1.0
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn default_draws() -> usize {
    1
}
fn is_one_draw(n: &usize) -> bool {
    *n == 1
}
fn default_k() -> usize {
    20
}
fn default_temperature() -> f64 {
    0.07
}
