//! Mixed precision: fp32 master weights, bf16 compute (`train.precision = "bf16"`).
//!
//! Inside [`autocast`] with [`Precision::Bf16`], the encoder casts its input to bf16 and
//! runs its blocks there: every linear layer multiplies bf16 activations by a bf16 copy of
//! its fp32 weight (the cast is part of the graph, so the gradient reaches the fp32
//! parameter as fp32), while LayerNorm, the attention softmax and the encoder's final norm
//! compute in fp32, as PyTorch's `torch.autocast(dtype=torch.bfloat16)` keeps them. The
//! encoder returns fp32, so heads, losses and the optimizer never see bf16.
//!
//! Outside `autocast` (and with [`Precision::Fp32`]) nothing changes: the fused fp32 CPU
//! kernels run as before. bf16 is meant for GPUs; on a CPU it runs on candle's generic
//! bf16 kernels and is slower than fp32.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

/// The dtype the encoder computes in while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// fp32 master weights, bf16 compute in the encoder's blocks.
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

thread_local! {
    static COMPUTE: Cell<Precision> = const { Cell::new(Precision::Fp32) };
}

/// Restores the thread's previous precision when dropped, also on an early return or panic.
struct Restore(Precision);

impl Drop for Restore {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.0));
    }
}

/// Runs `f` with the encoder computing in `precision` on this thread (forward passes only:
/// the graph they record keeps its dtypes, so `backward` may run outside).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(COMPUTE.with(|c| c.replace(precision)));
    f()
}

/// The precision [`autocast`] set on this thread (fp32 outside it).
pub fn current() -> Precision {
    COMPUTE.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    use super::super::{Activation, Encoder, EncoderConfig, Mode, NormPosition};
    use super::*;
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        (norm(&(a - b).unwrap()) / norm(b)).sqrt()
    }

    /// Under bf16 autocast the encoder returns fp32 hidden states within bf16's rounding of
    /// the fp32 ones, and every fp32 parameter (and the input) receives an fp32 gradient
    /// close to the fp32 gradient, pre- and post-norm, with a padding mask; outside
    /// `autocast` the thread is back in fp32.
    #[test]
    fn bf16_autocast_tracks_fp32_in_values_and_gradients() {
        let dev = Device::Cpu;
        for norm in [NormPosition::Pre, NormPosition::Post] {
            let cfg = EncoderConfig {
                dim: 32,
                depth: 2,
                heads: 4,
                mlp_dim: 64,
                norm,
                activation: Activation::Gelu,
                norm_eps: 1e-6,
                qkv_bias: true,
                dropout: 0.0,
                attention_dropout: 0.0,
                drop_path: 0.0,
            };
            let vm = VarMap::new();
            let enc = Encoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let (b, t) = (3, 9);
            let x = Var::randn(0f32, 1.0, (b, t, 32), &dev).unwrap();
            let mut mask = vec![1f32; b * t];
            mask[2 * t - 3..2 * t].fill(0.0);
            let mask = Tensor::from_vec(mask, (b, t), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (b, t, 32), &dev).unwrap();
            let run = |p: Precision| {
                let y = autocast(p, || enc.forward(&x, Some(&mask), &mut Mode::Eval)).unwrap();
                assert_eq!(current(), Precision::Fp32);
                let grads = (&y * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (y, grads)
            };
            let (y32, g32) = run(Precision::Fp32);
            let (y16, g16) = run(Precision::Bf16);
            assert_eq!(y16.dtype(), DType::F32);
            let e = relative_error(&y16, &y32);
            assert!(e > 0.0 && e < 0.03, "{norm:?}: hidden states differ by {e}");
            let data = vm.data().lock().unwrap();
            assert_eq!(
                data.len(),
                2 * 16 + usize::from(norm == NormPosition::Pre) * 2
            );
            for (name, v) in data.iter().chain([(&"input".to_string(), &x)]) {
                let (a, c) = (
                    g16.get(v.as_tensor()).expect("a bf16 gradient"),
                    g32.get(v.as_tensor()).expect("an fp32 gradient"),
                );
                assert_eq!(a.dtype(), DType::F32);
                if name.ends_with("k.bias") {
                    // Softmax ignores a shift shared by all keys: this gradient is zero up to
                    // rounding in either precision, so compare its size, not its direction.
                    let max = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                    assert!(max.to_scalar::<f32>().unwrap() < 0.05, "{name}: {max}");
                    continue;
                }
                let e = relative_error(a, c);
                assert!(e < 0.08, "{norm:?}: the gradient of {name} differs by {e}");
            }
        }
    }

    #[test]
    fn autocast_restores_the_previous_precision_after_a_panic() {
        let caught = std::panic::catch_unwind(|| {
            autocast(Precision::Bf16, || {
                assert_eq!(current(), Precision::Bf16);
                panic!("inside");
            })
        });
        assert!(caught.is_err());
        assert_eq!(current(), Precision::Fp32);
    }
}
