//! data2vec over a patch grid (images, spectrograms), as data2vec 2.0 runs it: the student
//! encodes only the patches its mask keeps (MAE's gather), a light decoder puts mask tokens
//! in the removed places and predicts the teacher's targets at every patch, and the loss
//! is taken at the removed ones. The teacher encodes every patch. Padded patches
//! (spectrograms of short clips) are removed first, left out of attention, of the targets'
//! statistics and of the loss.

use candle_core::{Device, Result, Tensor};

use super::teacher::{Teacher, PREFIX};
use super::{recorded, targets, Data2vecConfig};
use crate::backbone::Mode;
use crate::draws::Draws;
use crate::modality::audio::encoder::{SpectrogramEncoder, SpectrogramGeometry};
use crate::modality::image::{ImageEncoder, ImageGeometry};
use crate::objective::mae::{encode_kept, masked_mse, MaeDecoder};
use crate::objective::masking::GridMasker;
use crate::objective::patch::PatchEncoder;
use crate::objective::{Objective, Pass};
use crate::params::ParamStore;

/// data2vec on images: the student under `vit.`, the teacher under `teacher.vit.`.
pub type ImageData2vec = PatchData2vec<ImageEncoder>;
pub type ImageData2vecConfig = Data2vecConfig<ImageGeometry>;
/// data2vec on spectrograms: the student under `audio.`, the teacher under `teacher.audio.`.
pub type AudioData2vec = PatchData2vec<SpectrogramEncoder>;
pub type AudioData2vecConfig = Data2vecConfig<SpectrogramGeometry>;

pub struct PatchData2vec<E: PatchEncoder> {
    /// The student's encoder, under `E::PREFIX`.
    pub encoder: E,
    /// The same encoder on the teacher's (detached) parameters: its passes record no
    /// gradient graph, and it sees each EMA update, which writes the parameters in place.
    teacher_encoder: E,
    teacher: Teacher,
    /// Under `decoder.`; predicts `D` values (the encoder's width) per patch.
    decoder: MaeDecoder,
    masker: GridMasker,
    cfg: Data2vecConfig<E::Geometry>,
}

/// What one pass gives.
pub struct Data2vecOutput {
    /// Mean squared error at the removed patches.
    pub loss: Tensor,
    /// `[B, L, D]` predictions.
    pub pred: Tensor,
    /// `[B, L, D]` targets.
    pub target: Tensor,
    /// `[B, L]`, 1 = removed.
    pub mask: Tensor,
}

impl<E: PatchEncoder> PatchData2vec<E> {
    /// Builds the student, decoder and teacher in `params` (the teacher's parameters
    /// frozen there: the optimizer leaves them to the EMA).
    pub fn new(
        cfg: &Data2vecConfig<E::Geometry>,
        params: &ParamStore,
        device: &Device,
    ) -> crate::Result<Self> {
        super::check_top_k(cfg.top_k, cfg.encoder.depth)?;
        let name = E::PREFIX.trim_end_matches('.');
        let vb = params.var_builder(device);
        let encoder = E::build(cfg.geometry, &cfg.encoder, vb.pp(name))?;
        E::build(
            cfg.geometry,
            &cfg.encoder,
            vb.pp(PREFIX.trim_end_matches('.')).pp(name),
        )?;
        let teacher = Teacher::new(params, E::PREFIX, cfg.ema)?;
        // A copy of the student from the start (again at `start`, after a model source or
        // a checkpoint has set the student).
        teacher.copy_student()?;
        let teacher_encoder = E::build(
            cfg.geometry,
            &cfg.encoder,
            params
                .frozen_var_builder(device)
                .pp(PREFIX.trim_end_matches('.'))
                .pp(name),
        )?;
        let pos = encoder.fixed_positions(cfg.decoder.dim, device)?;
        let decoder = MaeDecoder::new(
            cfg.encoder.dim,
            &cfg.decoder,
            pos,
            cfg.encoder.dim,
            vb.pp("decoder"),
        )?;
        let masker = encoder.masker(cfg.mask_ratio, cfg.masking)?;
        Ok(Self {
            encoder,
            teacher_encoder,
            teacher,
            decoder,
            masker,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Data2vecConfig<E::Geometry> {
        &self.cfg
    }

    pub fn masker(&self) -> &GridMasker {
        &self.masker
    }

    /// The teacher's targets on the whole input: `[B, L, D]`; `valid: [B, L]` (1 = the
    /// patch holds input).
    pub fn targets(&self, x: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
        let mut mode = Mode::Layers(Vec::new());
        let tokens = self.teacher_encoder.embed_patches(x)?;
        self.teacher_encoder
            .encode_tokens(&tokens, valid, &mut mode)?;
        targets(&recorded(mode)?, self.cfg.top_k, 1, valid)
    }

    /// The student on the patches `noise` keeps, the decoder's predictions and the loss.
    pub fn forward(&self, x: &E::Input, noise: &Tensor, mode: &mut Mode) -> Result<Data2vecOutput> {
        let values = E::values(x);
        let valid = self.encoder.patch_mask(x)?;
        let keep = self.masker.len_keep();
        let (latent, m) = encode_kept(&self.encoder, values, valid.as_ref(), noise, keep, mode)?;
        let pred = self
            .decoder
            .forward(&latent, &m.ids_restore, valid.as_ref(), mode)?;
        let target = self.targets(values, valid.as_ref())?;
        let loss = masked_mse(&pred, &target, &m.loss_mask)?;
        Ok(Data2vecOutput {
            loss,
            pred,
            target,
            mask: m.mask,
        })
    }
}

impl<E: PatchEncoder> Objective for PatchData2vec<E> {
    type Batch = E::Input;

    fn encoder_prefix(&self) -> &'static str {
        E::PREFIX
    }

    fn loss(&self, x: &E::Input, draws: &Draws) -> crate::Result<Tensor> {
        let noise = self.masker.noise(draws, E::values(x).device())?;
        Ok(self.forward(x, &noise, &mut Mode::train(*draws))?.loss)
    }

    /// The loss only: data2vec reconstructs no input to picture.
    fn evaluate(&self, x: &E::Input, draws: &Draws) -> crate::Result<Pass> {
        let noise = self.masker.noise(draws, E::values(x).device())?;
        Ok(Pass {
            loss: self.forward(x, &noise, &mut Mode::Eval)?.loss,
            reconstruction: None,
        })
    }

    fn start(&self, resumed: bool) -> crate::Result<()> {
        if !resumed {
            self.teacher.copy_student()?;
        }
        Ok(())
    }

    fn after_step(&self, step: usize) -> crate::Result<()> {
        self.teacher.update(step)
    }
}
