//! Masked language modelling (or data2vec) on packed blocks of the training corpus, with
//! MLM's held-out masked-token accuracy and perplexity at every checkpoint (`eval.jsonl`).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::objective::TextObjective;
use crate::backbone::Mode;
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::text::encoder::TextEncoder;
use crate::modality::text::pack::{BlockBatches, TokenBlocks};
use crate::modality::text::shards::MappedBlocks;
use crate::objective::mlm::MlmEval;
use crate::params::ParamStore;
use crate::run::PretrainStage;
use crate::train::loader::BatchShape;
use crate::train::loader::TaskLoader;
use crate::train::metrics::MetricsLog;
use crate::train::sampler::Sampler;
use crate::train::{Loss, TrainTask};

/// Held-out blocks evaluated at each checkpoint (the first ones, same masks every time).
const EVAL_BLOCKS: usize = 256;

/// Masked language modelling (or data2vec) on packed blocks.
pub struct MlmTask<'a> {
    pub objective: &'a TextObjective,
    pub blocks: Arc<MappedBlocks>,
    pub held_out: Option<&'a TokenBlocks>,
    pub device: Device,
    pub seed: u64,
    pub eval_log: std::sync::Mutex<Option<MetricsLog>>,
    /// The training batches' blocks, gathered ahead on a worker thread; the objective masks
    /// them on the training thread (masking draws from the loop's RNG).
    pub loader: TaskLoader<TokenBlocks>,
}

#[derive(Serialize)]
struct EvalRecord {
    step: usize,
    #[serde(flatten)]
    eval: MlmEval,
}

impl MlmTask<'_> {
    /// Masked-token accuracy and perplexity on the first held-out blocks, with the same
    /// masks every time (a fixed seed), so evaluations are comparable across checkpoints.
    pub fn evaluate(&self) -> Result<Option<MlmEval>> {
        let (Some(held_out), Some(mlm)) = (self.held_out, self.objective.mlm()) else {
            return Ok(None);
        };
        let n = held_out.len().min(EVAL_BLOCKS);
        let all: Vec<usize> = (0..n).collect();
        let (mut loss, mut hits, mut count) = (0.0, 0, 0);
        for (i, chunk) in all.chunks(32).enumerate() {
            let draws = Draws::new(self.seed ^ 0x6d6c_6d65, 0, (i * 32) as u64, chunk.len());
            let b = mlm.mask(&held_out.gather(chunk), &draws)?;
            let (l, h, c) = mlm.score(&b)?;
            loss += l;
            hits += h;
            count += c;
        }
        Ok(Some(MlmEval::from_sums(loss, hits, count)))
    }

    /// Evaluates and appends to `eval.jsonl`.
    pub fn log_eval(&self, step: usize) -> Result<Option<MlmEval>> {
        let Some(e) = self.evaluate()? else {
            return Ok(None);
        };
        eprintln!(
            "held-out MLM at step {step}: loss {:.4}, perplexity {:.2}, masked-token accuracy {:.2} % ({} tokens)",
            e.loss,
            e.perplexity,
            e.accuracy * 100.0,
            e.tokens
        );
        if let Some(log) = self
            .eval_log
            .lock()
            .map_err(|_| Error::Usage("the eval log lock is poisoned".into()))?
            .as_mut()
        {
            log.log(&EvalRecord { step, eval: e })?;
        }
        Ok(Some(e))
    }
}

impl TrainTask for MlmTask<'_> {
    fn num_examples(&self) -> usize {
        self.blocks.len()
    }

    fn infer(&self, params: &ParamStore, indices: &[usize]) -> Result<Option<Tensor>> {
        let t = self.blocks.seq_len;
        let blocks = self.blocks.gather(indices)?;
        let ids = blocks.ids;
        let mask: Vec<f32> = blocks.attention_mask.iter().map(|&a| a as f32).collect();
        let ids = Tensor::from_vec(ids, (indices.len(), t), &self.device)?;
        let mask = Tensor::from_vec(mask, (indices.len(), t), &self.device)?;
        let text = TextEncoder::new(
            self.objective.text().config(),
            params.frozen_var_builder(&self.device).pp("text"),
        )?;
        Ok(Some(text.forward(
            &ids,
            None,
            Some(&mask),
            &mut Mode::Eval,
        )?))
    }

    fn begin(&self, sampler: &Sampler, shape: BatchShape) -> Result<()> {
        let maker = BlockBatches(self.blocks.clone());
        self.loader.start(maker, sampler, shape)
    }

    /// The mean over the masked tokens, weighted by their number: ranks whose blocks
    /// hold different numbers of masked tokens still average over the whole batch's.
    fn loss(&self, indices: &[usize], draws: &Draws) -> Result<Loss> {
        let blocks = self.loader.next(indices)?;
        let batch = self.objective.mask(&blocks, draws)?;
        let value = self
            .objective
            .loss(&blocks, &batch, &mut Mode::train(*draws))?;
        Ok(Loss {
            value,
            weight: batch.num_predicted() as f64,
        })
    }

    fn on_checkpoint(&self, step: usize, _run_dir: &Path) -> Result<()> {
        self.log_eval(step).map(|_| ())
    }

    fn start(&self, resumed: bool) -> Result<()> {
        self.objective.start(resumed)
    }

    fn after_step(&self, step: usize) -> Result<()> {
        self.objective.after_step(step)
    }
}

impl PretrainStage for MlmTask<'_> {
    fn before_training(&self, resumed: bool) -> Result<()> {
        if !resumed {
            self.log_eval(0)?;
        }
        Ok(())
    }

    fn held_out(&self) -> Result<Option<MlmEval>> {
        self.evaluate()
    }

    fn data_wait(&self) -> std::time::Duration {
        self.loader.waited()
    }
}
