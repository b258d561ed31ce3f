//! The objective a text recipe pretrains with: masked language modelling or data2vec. Both
//! read blocks masked by BERT's recipe ([`MlmMasker`]) and average their loss over the
//! selected tokens, so the training task treats them alike; only MLM has a head whose
//! held-out accuracy and perplexity mean something.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::Mode;
use crate::draws::Draws;
use crate::error::Result;
use crate::modality::text::encoder::{TextConfig, TextEncoder};
use crate::modality::text::mask::MlmMasker;
use crate::modality::text::pack::TokenBlocks;
use crate::modality::text::tokenizer::TextTokenizer;
use crate::objective::data2vec::TextData2vec;
use crate::objective::mlm::{Mlm, MlmBatch};
use crate::params::ParamStore;
use crate::recipe::{ObjectiveSection, Recipe};
use crate::run::invalid;

pub enum TextObjective {
    Mlm(Box<Mlm>),
    Data2vec(Box<TextData2vec>),
}

impl TextObjective {
    /// The recipe's objective over a model of `config`, its parameters in `params`.
    pub fn new(
        r: &Recipe,
        file: &Path,
        config: &TextConfig,
        tok: &TextTokenizer,
        params: &ParamStore,
        device: &Device,
    ) -> Result<Self> {
        let mut masker = MlmMasker::new(tok);
        Ok(match r.objective()? {
            ObjectiveSection::Mlm(o) => {
                masker.rate = r.objective()?.mask_ratio();
                masker.whole_word = o.whole_word;
                masker.span = o.span;
                TextObjective::Mlm(Box::new(Mlm::new(
                    config,
                    masker,
                    params.var_builder(device),
                )?))
            }
            ObjectiveSection::Data2vec(d) => {
                masker.rate = d.mask_ratio_for(true);
                masker.whole_word = d.whole_word;
                masker.span = d.span;
                let depth = config.encoder.depth;
                if d.top_k.is_some_and(|k| k > depth) {
                    return Err(invalid(
                        file,
                        "objective.top_k",
                        format!("must be at most the model's depth ({depth})"),
                    ));
                }
                TextObjective::Data2vec(Box::new(TextData2vec::new(
                    config,
                    &crate::modality::image::run::pretrain::decoder_config(r)?,
                    d.top_k_for(depth),
                    d.ema_schedule(r.train.steps),
                    masker,
                    params,
                    device,
                )?))
            }
            _ => {
                return Err(invalid(
                    file,
                    "objective.kind",
                    "text pretraining uses kind = \"mlm\" or \"data2vec\"",
                ))
            }
        })
    }

    /// The objective's name, as recipes spell it.
    pub fn name(&self) -> &'static str {
        match self {
            TextObjective::Mlm(_) => "mlm",
            TextObjective::Data2vec(_) => "data2vec",
        }
    }

    /// MLM, whose head predicts tokens (held-out accuracy and perplexity).
    pub fn mlm(&self) -> Option<&Mlm> {
        match self {
            TextObjective::Mlm(m) => Some(m),
            TextObjective::Data2vec(_) => None,
        }
    }

    /// Prefixes of the parameters a model source may set: the encoder's, and MLM's head.
    pub fn source_prefixes(&self) -> &'static [&'static str] {
        match self {
            TextObjective::Mlm(_) => &["text.", "mlm."],
            TextObjective::Data2vec(_) => &["text."],
        }
    }

    pub fn text(&self) -> &TextEncoder {
        match self {
            TextObjective::Mlm(m) => &m.text,
            TextObjective::Data2vec(d) => &d.text,
        }
    }

    /// `blocks` masked for the model's input.
    pub fn mask(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<MlmBatch> {
        match self {
            TextObjective::Mlm(m) => m.mask(blocks, draws),
            TextObjective::Data2vec(d) => d.mask(blocks, draws),
        }
    }

    /// The mean loss over the selected tokens of `batch` (`blocks` masked).
    pub fn loss(&self, blocks: &TokenBlocks, batch: &MlmBatch, mode: &mut Mode) -> Result<Tensor> {
        match self {
            TextObjective::Mlm(m) => Ok(m.forward(batch, mode)?.loss),
            TextObjective::Data2vec(d) => Ok(d.forward(blocks, batch, mode)?.0),
        }
    }

    pub fn start(&self, resumed: bool) -> Result<()> {
        match self {
            TextObjective::Mlm(_) => Ok(()),
            TextObjective::Data2vec(d) => crate::objective::Objective::start(&**d, resumed),
        }
    }

    pub fn after_step(&self, step: usize) -> Result<()> {
        match self {
            TextObjective::Mlm(_) => Ok(()),
            TextObjective::Data2vec(d) => crate::objective::Objective::after_step(&**d, step),
        }
    }
}
