//! Pooling: how a sequence of final hidden states `[B, T, D]` becomes one vector per
//! example `[B, D]`. Every classifier, probe, k-NN feature and embedding goes through
//! [`pool`], whatever the modality; the modality only says how its tokens are laid out.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// A recipe's or a classifier's `pooling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The class token's final hidden state.
    Cls,
    /// Mean of the tokens' final hidden states (patches, frames, or unpadded text tokens).
    Mean,
}

/// A learned layer between the pooled vector and a classifier (`downstream[i].pooler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooler {
    /// `tanh(dense(h[CLS]))`, BERT's pooler (RoBERTa's classification head has the same
    /// form): a classifier with it is exactly `BertForSequenceClassification` /
    /// `RobertaForSequenceClassification`.
    TanhCls,
}

/// How an encoder's output tokens are laid out, which decides what each pooling reads.
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    /// A class token, then patches (ViT, Audio-MAE): `mean` averages the patches only.
    ClsThenPatches,
    /// A class token, then patches with a padding mask `[B, L]` over the patches (1 = holds
    /// input; spectrograms of clips shorter than the encoder's window): `mean` averages the
    /// patches that hold input.
    ClsThenMaskedPatches(&'a Tensor),
    /// Frames with no class token (wav2vec 2.0 family): `mean` averages every frame; `cls`
    /// is an error.
    Frames,
    /// Text tokens with a padding mask `[B, T]` (1 = token): `mean` averages the unpadded
    /// tokens, the leading `[CLS]` included, as sentence-transformers pools.
    Masked(&'a Tensor),
}

/// Pools `hidden: [B, T, D]` into `[B, D]`.
pub fn pool(hidden: &Tensor, pooling: Pooling, tokens: Tokens) -> Result<Tensor> {
    match (pooling, tokens) {
        (Pooling::Cls, Tokens::Frames) => candle_core::bail!(
            "this encoder has no class token (its outputs are frames): use pooling = \"mean\""
        ),
        (Pooling::Cls, _) => hidden.narrow(1, 0, 1)?.squeeze(1),
        (Pooling::Mean, Tokens::ClsThenPatches) => hidden.narrow(1, 1, hidden.dim(1)? - 1)?.mean(1),
        (Pooling::Mean, Tokens::ClsThenMaskedPatches(mask)) => {
            masked_mean(&hidden.narrow(1, 1, hidden.dim(1)? - 1)?, Some(mask))
        }
        (Pooling::Mean, Tokens::Frames) => hidden.mean(1),
        (Pooling::Mean, Tokens::Masked(mask)) => masked_mean(hidden, Some(mask)),
    }
}

/// Mean of hidden states over the tokens where `mask` is 1 (all tokens when `None`).
/// `x: [B, T, D]`, `mask: [B, T]` → `[B, D]`.
pub fn masked_mean(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => x.mean(1),
        Some(m) => {
            let m = m.to_dtype(x.dtype())?.unsqueeze(D::Minus1)?; // [B, T, 1]
            let sum = x.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
            sum.broadcast_div(&count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn each_layout_pools_what_it_says() -> Result<()> {
        // [1, 3, 2]: token 0 is [1, 1], then [2, 4] and [6, 8].
        let h = Tensor::new(&[[[1f32, 1.], [2., 4.], [6., 8.]]], &Device::Cpu)?;
        let v = |t: Tensor| t.to_vec2::<f32>().map(|v| v[0].clone());
        assert_eq!(
            v(pool(&h, Pooling::Cls, Tokens::ClsThenPatches)?)?,
            [1., 1.]
        );
        assert_eq!(
            v(pool(&h, Pooling::Mean, Tokens::ClsThenPatches)?)?,
            [4., 6.]
        );
        assert_eq!(v(pool(&h, Pooling::Mean, Tokens::Frames)?)?, [3., 13. / 3.]);
        let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu)?;
        assert_eq!(
            v(pool(&h, Pooling::Mean, Tokens::Masked(&mask))?)?,
            [1.5, 2.5]
        );
        // Over the patches only: the second patch is padding.
        let patches = Tensor::new(&[[1f32, 0.]], &Device::Cpu)?;
        let m = Tokens::ClsThenMaskedPatches(&patches);
        assert_eq!(v(pool(&h, Pooling::Mean, m)?)?, [2., 4.]);
        assert_eq!(v(pool(&h, Pooling::Cls, m)?)?, [1., 1.]);
        assert!(pool(&h, Pooling::Cls, Tokens::Frames).is_err());
        Ok(())
    }
}
