//! What every modality's downstream task shares: the parameters a frozen encoder reads
//! (pretrained, or the same architecture at the run's seed), the fine-tuning of a
//! classifier from start to saved weights, and features or logits computed in chunks
//! without a gradient graph. Each `run/<modality>/task.rs` supplies only what differs:
//! its batches, its encoder and its classifier.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::backbone::{self, PooledEncoder};
use crate::error::{Error, Result};
use crate::head::finetune::{self, BatchFn, FineTuneConfig};
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection};

/// The parameters a frozen encoder reads: the pretrained ones, or (`scratch`) a fresh store
/// at the run's seed in which `init` creates the encoder's parameters at their initial
/// values — exactly the pretraining's starting point.
pub fn encoder_store(
    pretrained: &ParamStore,
    input: DownstreamInput,
    seed: u64,
    device: &Device,
    init: &dyn Fn(VarBuilder) -> candle_core::Result<()>,
) -> Result<ParamStore> {
    match input {
        DownstreamInput::Pretrained => Ok(pretrained.clone()),
        DownstreamInput::Scratch => {
            let fresh = ParamStore::new(seed);
            init(fresh.var_builder(device))?;
            Ok(fresh)
        }
        DownstreamInput::Pixels => Err(Error::Usage(
            "`pixels` is an image baseline: it has no encoder (use `pretrained` or `scratch`)"
                .into(),
        )),
    }
}

/// Runs `f` on the batches `make` gives for `chunk`-sized pieces of `idx`, detached, and
/// concatenates the results in the order of `idx`.
pub fn map_chunks(
    idx: &[usize],
    chunk: usize,
    make: &dyn Fn(&[usize]) -> Result<Tensor>,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
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

/// A modality's classifier, for [`fine_tune`].
pub struct Classifier<'a, E> {
    /// Builds the classifier's parameters under `vb` (encoder under `encoder_prefix`, then
    /// `classifier.*`), at the run's seed.
    pub build: &'a dyn Fn(VarBuilder) -> Result<backbone::Classifier<E>>,
    /// Prefix of the encoder's parameters, copied from the pretrained run (`vit.`).
    pub encoder_prefix: &'a str,
    /// Transformer blocks, for layer-wise learning-rate decay.
    pub depth: usize,
    /// Writes the classifier's description (`model.json`) beside its weights.
    pub write_spec: &'a dyn Fn(&Path) -> Result<()>,
}

/// The accuracy of a classifier on examples `idx` of the test split (`on_test`) or of the
/// training split.
pub type AccuracyFn<'a, E> = dyn Fn(&backbone::Classifier<E>, &[usize], bool) -> Result<f64> + 'a;

/// Where a fine-tuning gets its data: training batches, and the accuracy of a classifier
/// on examples of the test split (`on_test`) or of the training split.
pub struct FineTuneData<'a, E> {
    pub batch: &'a BatchFn<'a>,
    pub accuracy: &'a AccuracyFn<'a, E>,
    pub test_len: usize,
}

/// One fine-tuning, the same for every modality: the classifier built at the run's seed,
/// its encoder copied from the pretrained run (`input = "pretrained"`), trained end to end
/// on the examples `chosen` (continuing from a checkpoint in `dir` when one is there),
/// scored on the whole test split (and on the examples trained on, when there are at most
/// 10,000), then saved into `dir` (`model.safetensors` + `model.json`).
#[allow(clippy::too_many_arguments)]
pub fn fine_tune<E: PooledEncoder>(
    classifier: &Classifier<E>,
    data: &FineTuneData<E>,
    pretrained: &ParamStore,
    device: &Device,
    section: &DownstreamSection,
    chosen: &[usize],
    cfg: &FineTuneConfig,
    dir: &Path,
) -> Result<FineTuned> {
    let store = ParamStore::new(cfg.seed);
    let model = (classifier.build)(store.var_builder(device))?;
    if section.input == DownstreamInput::Pretrained {
        store.copy_prefix_from(pretrained, classifier.encoder_prefix)?;
    }
    let done = finetune::fine_tune(
        &store,
        classifier.depth,
        &|x, mode| model.forward(x, mode),
        data.batch,
        chosen,
        cfg,
        dir,
    )?;
    if !done.complete {
        return Err(Error::Usage(format!(
            "fine-tuning in {} stopped after step {}; run it again to continue",
            dir.display(),
            done.steps
        )));
    }
    let frozen = (classifier.build)(store.frozen_var_builder(device))?;
    let all: Vec<usize> = (0..data.test_len).collect();
    let test_accuracy = (data.accuracy)(&frozen, &all, true)?;
    let train_accuracy = if chosen.len() <= 10_000 {
        Some((data.accuracy)(&frozen, chosen, false)?)
    } else {
        None
    };
    store.save(&dir.join(backbone::classifier::WEIGHTS_FILE))?;
    (classifier.write_spec)(dir)?;
    Ok(FineTuned {
        test_accuracy,
        train_accuracy,
        steps: done.steps,
    })
}
