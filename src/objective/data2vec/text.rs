//! data2vec over text, as data2vec's text model runs it: the student reads the sequence
//! with tokens selected and replaced as BERT's masking does ([`MlmMasker`]), the teacher
//! the original sequence; a light decoder (a pre-norm stack between two projections)
//! regresses the teacher's targets, and the loss is taken at the selected tokens.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::teacher::{EmaSchedule, Teacher, PREFIX};
use super::{check_top_k, recorded, targets};
use crate::backbone::{Encoder, EncoderConfig, Linear, Mode};
use crate::draws::Draws;
use crate::error::Result;
use crate::modality::text::encoder::{TextConfig, TextEncoder};
use crate::modality::text::mask::MlmMasker;
use crate::modality::text::pack::TokenBlocks;
use crate::objective::mlm::{mask_blocks, MlmBatch};
use crate::objective::{Objective, Pass};
use crate::params::ParamStore;

/// The student under `text.`, the teacher under `teacher.text.`, the decoder under
/// `decoder.`.
pub struct TextData2vec {
    pub text: TextEncoder,
    /// The encoder on the teacher's detached parameters (see [`super::PatchData2vec`]).
    teacher_text: TextEncoder,
    teacher: Teacher,
    decoder: TokenDecoder,
    pub masker: MlmMasker,
    top_k: usize,
}

/// Hidden states `[B, T, D]` → a pre-norm stack of width `Dd` → `[B, T, D]`.
struct TokenDecoder {
    embed: Linear,
    blocks: Encoder,
    pred: Linear,
}

impl TokenDecoder {
    fn new(dim: usize, cfg: &EncoderConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            embed: Linear::new(dim, cfg.dim, true, vb.pp("embed"))?,
            blocks: Encoder::new(cfg, vb.pp("blocks"))?,
            pred: Linear::new(cfg.dim, dim, true, vb.pp("pred"))?,
        })
    }

    fn forward(&self, h: &Tensor, mask: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let x = self.embed.forward(h)?;
        let x = self.blocks.forward(&x, Some(mask), mode)?;
        self.pred.forward(&x)
    }
}

impl TextData2vec {
    pub fn new(
        cfg: &TextConfig,
        decoder: &EncoderConfig,
        top_k: usize,
        ema: EmaSchedule,
        masker: MlmMasker,
        params: &ParamStore,
        device: &Device,
    ) -> Result<Self> {
        check_top_k(top_k, cfg.encoder.depth)?;
        let vb = params.var_builder(device);
        let text = TextEncoder::new(cfg, vb.pp("text"))?;
        TextEncoder::new(cfg, vb.pp(PREFIX.trim_end_matches('.')).pp("text"))?;
        let teacher = Teacher::new(params, "text.", ema)?;
        // A copy of the student from the start (again at `start`, after a model source or
        // a checkpoint has set the student).
        teacher.copy_student()?;
        let teacher_text = TextEncoder::new(
            cfg,
            params
                .frozen_var_builder(device)
                .pp(PREFIX.trim_end_matches('.'))
                .pp("text"),
        )?;
        Ok(Self {
            decoder: TokenDecoder::new(cfg.encoder.dim, decoder, vb.pp("decoder"))?,
            text,
            teacher_text,
            teacher,
            masker,
            top_k,
        })
    }

    /// The student's input: `blocks` masked as BERT masks them.
    pub fn mask(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<MlmBatch> {
        mask_blocks(
            &self.masker,
            blocks,
            draws,
            self.text.word_embeddings().device(),
        )
    }

    /// The teacher's targets on the original `blocks`: `[B, T, D]` (zero at padding).
    pub fn targets(&self, blocks: &TokenBlocks, attention_mask: &Tensor) -> Result<Tensor> {
        let (n, t) = (blocks.len(), blocks.seq_len);
        let ids = Tensor::from_vec(blocks.ids.clone(), (n, t), attention_mask.device())?;
        let mut mode = Mode::Layers(Vec::new());
        self.teacher_text
            .forward(&ids, None, Some(attention_mask), &mut mode)?;
        Ok(targets(
            &recorded(mode)?,
            self.top_k,
            0,
            Some(attention_mask),
        )?)
    }

    /// The mean squared error at the selected tokens of `batch` (the masked `blocks`), and
    /// how many there are.
    pub fn forward(
        &self,
        blocks: &TokenBlocks,
        batch: &MlmBatch,
        mode: &mut Mode,
    ) -> Result<(Tensor, usize)> {
        let n = batch.num_predicted();
        if n == 0 {
            let zero = Tensor::zeros((), DType::F32, batch.input_ids.device())?;
            return Ok((zero, 0));
        }
        let h = self
            .text
            .forward(&batch.input_ids, None, Some(&batch.attention_mask), mode)?;
        let pred = self.decoder.forward(&h, &batch.attention_mask, mode)?;
        let target = self.targets(blocks, &batch.attention_mask)?;
        let (b, t, d) = pred.dims3()?;
        let at = |x: &Tensor| x.reshape((b * t, d))?.index_select(&batch.positions, 0);
        let loss = (at(&pred)? - at(&target)?)?.sqr()?.mean_all()?;
        Ok((loss, n))
    }
}

impl Objective for TextData2vec {
    type Batch = TokenBlocks;

    fn encoder_prefix(&self) -> &'static str {
        "text."
    }

    fn loss(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<Tensor> {
        let batch = self.mask(blocks, draws)?;
        Ok(self.forward(blocks, &batch, &mut Mode::train(*draws))?.0)
    }

    fn evaluate(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<Pass> {
        let batch = self.mask(blocks, draws)?;
        Ok(Pass {
            loss: self.forward(blocks, &batch, &mut Mode::Eval)?.0,
            reconstruction: None,
        })
    }

    fn start(&self, resumed: bool) -> Result<()> {
        if !resumed {
            self.teacher.copy_student()?;
        }
        Ok(())
    }

    fn after_step(&self, step: usize) -> Result<()> {
        self.teacher.update(step)
    }
}
