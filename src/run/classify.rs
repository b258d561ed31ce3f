//! The downstream task, written once for every modality. A modality says what differs —
//! its labelled splits as model inputs, its encoder and its classifier — by implementing
//! [`Labelled`]; [`Task`] does the rest: frozen encoders (pretrained, or the same
//! architecture at the run's seed), pooled features and logits computed in chunks without a
//! gradient graph, and the fine-tuning of a classifier from start to saved weights.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;

use super::downstream::DownstreamTask;
use crate::backbone::{Classifier, Mode, PooledEncoder};
use crate::draws::{Draws, Purpose};
use crate::error::{Error, Result};
use crate::head::finetune::{self, FineTuneConfig, Scored};
use crate::head::linear_probe::accuracy;
use crate::head::mix;
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, Pooling};

/// One of the two labelled splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// `train` or `test`, as this split says.
    pub fn pick<T>(self, train: T, test: T) -> T {
        match self {
            Split::Train => train,
            Split::Test => test,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Split::Train => "training",
            Split::Test => "test",
        }
    }
}

/// A batch of `L`'s model inputs: what its encoder takes.
pub type Input<L> = <<L as Labelled>::Encoder as PooledEncoder>::Input;

/// A modality's labelled splits, encoder and classifier: all the downstream stage needs to
/// know of a modality.
pub trait Labelled {
    type Encoder: PooledEncoder;
    /// Name of the encoder's parameters in the run's store (`vit`, `text`, `audio`).
    const PREFIX: &'static str;
    /// Examples per forward pass when computing features.
    const FEATURE_CHUNK: usize;
    /// Examples per forward pass when computing logits.
    const LOGIT_CHUNK: usize = Self::FEATURE_CHUNK;

    /// Labels of `split`, `0..num_classes`, or an error when the split has none.
    fn labels(&self, split: Split) -> Result<&[u32]>;
    fn num_classes(&self) -> usize;
    /// Model inputs `[B, …]` of the examples `idx` of `split`.
    fn inputs(&self, split: Split, idx: &[usize], device: &Device) -> Result<Input<Self>>;
    /// The inputs of the training examples `idx` as fine-tuning with `section` sees them:
    /// [`Labelled::inputs`], unless the modality augments them (drawing from the examples'
    /// augmentation streams in `draws`, so that a resumed fine-tuning draws the same).
    fn train_inputs(
        &self,
        _section: &DownstreamSection,
        idx: &[usize],
        _draws: &Draws,
        device: &Device,
    ) -> Result<Input<Self>> {
        self.inputs(Split::Train, idx, device)
    }
    /// A training batch mixed as `mixup` says, drawing from `rng` ([`mix::draw`]): the
    /// mixed inputs and the weight of each example's own, or `None` when this batch stays
    /// as it is. Modalities that mix nothing (recipe validation keeps `mixup` to images and
    /// audio) say so.
    fn mix_inputs(
        &self,
        _x: &Input<Self>,
        _mixup: &mix::Mixup,
        _rng: &mut ChaCha8Rng,
    ) -> Result<Option<(Input<Self>, f64)>> {
        Err(Error::Usage(format!(
            "mixup mixes images and audio; the `{}` encoder's inputs cannot be mixed",
            Self::PREFIX
        )))
    }
    /// Runs `f` on the inputs of `idx` in pieces of about `chunk` examples and concatenates
    /// its outputs in the order of `idx`. Text overrides it to batch similar lengths.
    fn map_inputs(
        &self,
        split: Split,
        idx: &[usize],
        chunk: usize,
        device: &Device,
        f: &dyn Fn(&Input<Self>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        map_chunks(idx, chunk, &|c| self.inputs(split, c, device), f)
    }
    /// Transformer blocks of the encoder, for layer-wise learning-rate decay.
    fn depth(&self) -> usize;
    /// The encoder, its parameters under `vb` (already at [`Labelled::PREFIX`]).
    fn encoder(&self, vb: VarBuilder) -> candle_core::Result<Self::Encoder>;
    /// The classifier `head` describes (its pooling, and its pooler where the modality has
    /// one), its parameters under `vb` (the encoder at [`Labelled::PREFIX`], then
    /// `classifier.*`), or an error when it cannot pool that way.
    fn classifier(
        &self,
        head: &DownstreamSection,
        vb: VarBuilder,
    ) -> Result<Classifier<Self::Encoder>>;
    /// Writes the description (`model.json`) of the classifier `head` describes beside its
    /// weights in `dir`.
    fn write_spec(&self, head: &DownstreamSection, dir: &Path) -> Result<()>;
    /// Features of `split` that no encoder computes (images: normalised pixels).
    fn input_features(&self, _split: Split, _device: &Device) -> Result<Tensor> {
        Err(Error::Usage(
            "`pixels` is an image baseline: it has no encoder (use `pretrained` or `scratch`)"
                .into(),
        ))
    }
    /// Example lengths of the training split, when fine-tuning should batch similar
    /// lengths together (text).
    fn lengths(&self) -> Option<Vec<usize>> {
        None
    }
}

/// Runs `f` on the batches `make` gives for `chunk`-sized pieces of `idx`, detached, and
/// concatenates the results in the order of `idx`.
pub fn map_chunks<X>(
    idx: &[usize],
    chunk: usize,
    make: &dyn Fn(&[usize]) -> Result<X>,
    f: &dyn Fn(&X) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut out = Vec::new();
    for c in idx.chunks(chunk.max(1)) {
        out.push(f(&make(c)?)?.detach());
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// What a fine-tuning run gives back.
pub struct FineTuned {
    pub test_accuracy: f64,
    /// On the examples trained on (`None` when there are more than 10,000).
    pub train_accuracy: Option<f64>,
    pub steps: usize,
}

/// A modality's labelled splits with the run's pretrained parameters: a [`DownstreamTask`].
pub struct Task<'a, L> {
    pub data: L,
    /// Holds the pretrained encoder under `L::PREFIX`.
    pub pretrained: &'a ParamStore,
    pub seed: u64,
    pub device: &'a Device,
    train_labels: Vec<u32>,
    test_labels: Vec<u32>,
}

impl<'a, L: Labelled> Task<'a, L> {
    /// Fails when either split has no labels.
    pub fn new(data: L, model: &'a super::Model, seed: u64) -> Result<Self> {
        let (pretrained, device) = (&model.params, &model.device);
        Ok(Self {
            train_labels: data.labels(Split::Train)?.to_vec(),
            test_labels: data.labels(Split::Test)?.to_vec(),
            data,
            pretrained,
            seed,
            device,
        })
    }

    fn split_labels(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train_labels,
            Split::Test => &self.test_labels,
        }
    }

    /// A frozen encoder: the pretrained one, or (`scratch`) the same architecture at the
    /// initialisation seeded like the pretraining's, so exactly its starting point.
    pub fn frozen_encoder(&self, input: DownstreamInput) -> Result<L::Encoder> {
        let store = match input {
            DownstreamInput::Pretrained => self.pretrained.clone(),
            DownstreamInput::Scratch => {
                let fresh = ParamStore::new(self.seed);
                self.data
                    .encoder(fresh.var_builder(self.device).pp(L::PREFIX))?;
                fresh
            }
            DownstreamInput::Pixels => {
                return Err(Error::Usage(
                    "`pixels` features come from the data itself: there is no encoder to load"
                        .into(),
                ))
            }
        };
        Ok(self
            .data
            .encoder(store.frozen_var_builder(self.device).pp(L::PREFIX))?)
    }

    /// Pooled features `[N, D]` of the whole `split`.
    fn split_features(&self, enc: &L::Encoder, split: Split, pooling: Pooling) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.split_labels(split).len()).collect();
        self.data
            .map_inputs(split, &all, L::FEATURE_CHUNK, self.device, &|x| {
                Ok(enc.pooled(x, pooling, &mut Mode::Eval)?)
            })
    }

    /// Accuracy of `model` on the examples `idx` of `split`.
    fn accuracy_on(
        &self,
        model: &Classifier<L::Encoder>,
        split: Split,
        idx: &[usize],
    ) -> Result<f64> {
        let logits = self
            .data
            .map_inputs(split, idx, L::LOGIT_CHUNK, self.device, &|x| {
                Ok(model.forward(x, &mut Mode::Eval)?)
            })?;
        accuracy(
            &logits,
            &label_tensor(self.split_labels(split), idx, self.device)?,
        )
    }
}

/// The labels of `idx` as a u32 tensor `[B]`.
fn label_tensor(labels: &[u32], idx: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
    Ok(Tensor::from_vec(v, idx.len(), device)?)
}

impl<L: Labelled> DownstreamTask for Task<'_, L> {
    fn train_labels(&self) -> &[u32] {
        &self.train_labels
    }

    fn test_labels(&self) -> &[u32] {
        &self.test_labels
    }

    fn num_classes(&self) -> usize {
        self.data.num_classes()
    }

    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)> {
        if input == DownstreamInput::Pixels {
            return Ok((
                self.data.input_features(Split::Train, self.device)?,
                self.data.input_features(Split::Test, self.device)?,
            ));
        }
        let enc = self.frozen_encoder(input)?;
        Ok((
            self.split_features(&enc, Split::Train, pooling)?,
            self.split_features(&enc, Split::Test, pooling)?,
        ))
    }

    /// The classifier built at the fine-tuning's seed, its encoder copied from the pretrained
    /// run (`input = "pretrained"`), trained end to end on the examples `chosen` (continuing
    /// from a checkpoint in `dir` when one is there), scored on the whole test split (and on
    /// the examples trained on, when there are at most 10,000), then saved into `dir`
    /// (`model.safetensors` + `model.json`).
    fn fine_tune(
        &self,
        section: &DownstreamSection,
        chosen: &[usize],
        cfg: &FineTuneConfig,
        dir: &Path,
    ) -> Result<FineTuned> {
        let (data, device) = (&self.data, self.device);
        let store = ParamStore::new(cfg.seed);
        let model = data.classifier(section, store.var_builder(device))?;
        if section.input == DownstreamInput::Pretrained {
            store.copy_prefix_from(self.pretrained, &format!("{}.", L::PREFIX))?;
        }
        // The recipe's mixing as the head takes it, once for the whole fine-tuning.
        let mixup = section.mixup.as_ref().map(|m| mix::Mixup {
            alpha: m.alpha,
            cutmix_alpha: m.cutmix_alpha,
            prob: m.prob,
            switch_prob: m.switch_prob,
        });
        let logits = |idx: &[usize], draws: &Draws, mode: &mut Mode| -> Result<Scored> {
            let x = data.train_inputs(section, idx, draws, device)?;
            let labels = label_tensor(&self.train_labels, idx, device)?;
            let mixed = match &mixup {
                Some(m) => data.mix_inputs(&x, m, &mut draws.rng(0, Purpose::Mix))?,
                None => None,
            };
            let Some((x, lam)) = mixed else {
                return Ok(Scored::plain(model.forward(&x, mode)?, labels));
            };
            Ok(Scored {
                logits: model.forward(&x, mode)?,
                mixed: Some((mix::partner_labels(&labels)?, lam)),
                labels,
            })
        };
        let mut cfg = cfg.clone();
        if let Some(lengths) = data.lengths() {
            cfg.lengths = Some(lengths);
        }
        let done = finetune::fine_tune(&store, data.depth(), &logits, chosen, &cfg, dir)?;
        if !done.complete {
            return Err(Error::Usage(format!(
                "fine-tuning in {} stopped after step {}; run it again to continue",
                dir.display(),
                done.steps
            )));
        }
        let frozen = data.classifier(section, store.frozen_var_builder(device))?;
        let all: Vec<usize> = (0..self.test_labels.len()).collect();
        let test_accuracy = self.accuracy_on(&frozen, Split::Test, &all)?;
        let train_accuracy = if chosen.len() <= 10_000 {
            Some(self.accuracy_on(&frozen, Split::Train, chosen)?)
        } else {
            None
        };
        store.save(&dir.join(crate::backbone::classifier::WEIGHTS_FILE))?;
        data.write_spec(section, dir)?;
        Ok(FineTuned {
            test_accuracy,
            train_accuracy,
            steps: done.steps,
        })
    }
}

/// A split's labels, or an error saying that `split` has none.
pub fn require_labels(labels: Option<&[u32]>, split: Split) -> Result<&[u32]> {
    labels.ok_or_else(|| {
        Error::Usage(format!(
            "downstream heads need labels for the {} split",
            split.name()
        ))
    })
}
