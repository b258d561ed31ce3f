//! Stochastic depth in a block: whole residual branches dropped per example in training.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::{Activation, Block, EncoderConfig, Mode, NormPosition};

fn config() -> EncoderConfig {
    EncoderConfig {
        dim: 24,
        depth: 1,
        heads: 3,
        mlp_dim: 40,
        norm: NormPosition::Pre,
        activation: Activation::Gelu,
        norm_eps: 1e-6,
        qkv_bias: true,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    }
}

/// Stochastic depth drops each example's residual branch whole: with rate 1 the block
/// is the identity in training, rows draw independently, and evaluation ignores it.
#[test]
fn drop_path_drops_whole_branches_per_example() {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let block = Block::new(&config(), vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (64, 5, 24), &dev).unwrap();
    let rows = |y: &Tensor| -> Vec<bool> {
        let d = (y - &x).unwrap().abs().unwrap().sum((1, 2)).unwrap();
        d.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v == 0.0)
            .collect()
    };
    let train = || Mode::train(crate::draws::Draws::new(0, 0, 0, 64));
    let all = block.clone().with_drop_path(0, 1.0);
    let y = all.forward(&x, None, &mut train()).unwrap();
    assert!(
        rows(&y).iter().all(|&same| same),
        "rate 1 drops every branch"
    );
    let half = block.clone().with_drop_path(0, 0.5);
    let y = half.forward(&x, None, &mut train()).unwrap();
    // Identity rows are those whose two branches were both dropped (about a quarter).
    let kept = rows(&y).iter().filter(|&&same| same).count();
    assert!(
        (4..=30).contains(&kept),
        "{kept} of 64 rows lost both branches"
    );
    let again = half.forward(&x, None, &mut train()).unwrap();
    assert_eq!(rows(&y), rows(&again), "the same draws give the same drops");
    let eval = half.forward(&x, None, &mut Mode::Eval).unwrap();
    let plain = block.forward(&x, None, &mut Mode::Eval).unwrap();
    let diff = (eval - plain).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}
