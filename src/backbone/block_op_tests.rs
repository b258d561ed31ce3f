//! The fused block against the block layer by layer.
use super::super::op_tests::{assert_same_with_gradients, max_diff};
use super::super::{Activation, Block, EncoderConfig, Mode, NormPosition};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

fn config(norm: NormPosition, qkv_bias: bool) -> EncoderConfig {
    EncoderConfig {
        dim: 24,
        depth: 1,
        heads: 3,
        mlp_dim: 40,
        norm,
        activation: Activation::Gelu,
        norm_eps: 1e-6,
        qkv_bias,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    }
}

/// The same output, and the same gradients of `x` and of every parameter in `vars` under
/// one random probe, to the bit.
fn assert_same_bits(fused: &Tensor, layers: &Tensor, vars: &[Var], x: &Var, what: &str) {
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(fused), bits(layers), "{what}: output");
    let probe = Tensor::randn(0f32, 1.0, fused.shape(), fused.device()).unwrap();
    let grads = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let (gf, gl) = (grads(fused), grads(layers));
    for v in vars.iter().chain([x]) {
        let (a, c) = (
            gf.get(v.as_tensor()).expect("a fused gradient"),
            gl.get(v.as_tensor()).expect("a gradient"),
        );
        assert_eq!(
            bits(a),
            bits(c),
            "{what}: gradient of a {:?} tensor",
            v.dims()
        );
    }
}

/// The block as one op equals the block layer by layer to the bit, in its output and in
/// the gradients of its input and of every parameter, pre- and post-norm, with and
/// without a padding mask and q/k/v biases.
#[test]
fn the_fused_block_equals_the_layers_bit_for_bit() {
    let dev = Device::Cpu;
    for (norm, qkv_bias, masked) in [
        (NormPosition::Pre, true, false),
        (NormPosition::Pre, false, true),
        (NormPosition::Post, true, true),
        (NormPosition::Post, false, false),
    ] {
        let vm = VarMap::new();
        let block = Block::new(
            &config(norm, qkv_bias),
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )
        .unwrap();
        // Layer norms start at 1 and 0: move them so their gradients are tested too.
        for (name, v) in vm.data().lock().unwrap().iter() {
            if name.contains("norm") {
                let noise = Tensor::randn(0f32, 0.3, v.shape(), &dev).unwrap();
                v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
            }
        }
        let (b, t) = (3, 11);
        let x = Var::randn(0f32, 1.0, (b, t, 24), &dev).unwrap();
        let bias = masked.then(|| {
            let mut m = vec![0f32; b * t];
            m[t + t - 4..2 * t].fill(f32::MIN);
            Tensor::from_vec(m, (b, 1, 1, t), &dev).unwrap()
        });
        let fused = block
            .fused(x.as_tensor(), bias.as_ref(), &mut Mode::Eval)
            .unwrap()
            .expect("the fused path applies");
        let layers = block
            .layers(x.as_tensor(), bias.as_ref(), &mut Mode::Eval)
            .unwrap();
        let vars = vm.all_vars();
        assert_eq!(vars.len(), if qkv_bias { 16 } else { 13 });
        assert_same_bits(&fused, &layers, &vars, &x, &format!("{norm:?}"));
    }
}

/// Hidden dropout and stochastic depth inside the op equal the layers' `dropout` and
/// `drop_path` to the bit, output and gradients, pre- and post-norm, each alone and
/// together: the same draws, the same products, the same sums.
#[test]
fn the_fused_block_with_dropout_and_drop_path_equals_the_layers_bit_for_bit() {
    let dev = Device::Cpu;
    for (norm, masked, dropout, drop_path) in [
        (NormPosition::Pre, true, 0.0, 0.5),
        (NormPosition::Post, false, 0.0, 0.5),
        (NormPosition::Pre, false, 0.2, 0.0),
        (NormPosition::Post, true, 0.2, 0.5),
    ] {
        let vm = VarMap::new();
        let mut cfg = config(norm, true);
        cfg.dropout = dropout;
        let block = Block::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))
            .unwrap()
            .with_drop_path(1, drop_path);
        let (b, t) = (8, 7);
        let x = Var::randn(0f32, 1.0, (b, t, 24), &dev).unwrap();
        let bias = masked.then(|| {
            let mut m = vec![0f32; b * t];
            m[t - 3..t].fill(f32::MIN);
            Tensor::from_vec(m, (b, 1, 1, t), &dev).unwrap()
        });
        let train = || Mode::train(crate::draws::Draws::new(5, 3, 0, b));
        if drop_path > 0.0 {
            let keep = |branch: u32| {
                super::super::ops::drop_path_keep(
                    b,
                    drop_path,
                    2 + branch,
                    &crate::draws::Draws::new(5, 3, 0, b),
                )
            };
            let (k0, k1) = (keep(0), keep(1));
            assert!(
                k0.iter().chain(&k1).any(|&k| k == 0.0) && k0.iter().chain(&k1).any(|&k| k == 2.0),
                "these draws drop some branches and keep others: {k0:?} {k1:?}"
            );
        }
        let (mut fused_mode, mut layers_mode) = (train(), train());
        let fused = block
            .fused(x.as_tensor(), bias.as_ref(), &mut fused_mode)
            .unwrap()
            .expect("the fused path applies with hidden dropout and drop path");
        let layers = block
            .layers(x.as_tensor(), bias.as_ref(), &mut layers_mode)
            .unwrap();
        let site = |m: &Mode| match m {
            Mode::Train { site, .. } => *site,
            _ => unreachable!(),
        };
        assert_eq!(site(&fused_mode), 2, "two dropout layers passed");
        assert_eq!(site(&fused_mode), site(&layers_mode));
        assert_same_bits(&fused, &layers, &vm.all_vars(), &x, &format!("{norm:?}"));
    }
}

/// Attention dropout inside the op matches the layers, whose attention with dropout is
/// composed of candle ops (other kernels, so to rounding rather than to the bit): values and
/// gradients, pre- and post-norm, with hidden dropout, drop path and a padding mask; the
/// dropout sites move on by three, as the layers move them.
#[test]
fn the_fused_block_with_attention_dropout_matches_the_layers() {
    let dev = Device::Cpu;
    for (norm, masked) in [(NormPosition::Pre, true), (NormPosition::Post, false)] {
        let vm = VarMap::new();
        let mut cfg = config(norm, true);
        cfg.attention_dropout = 0.3;
        cfg.dropout = 0.1;
        let block = Block::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))
            .unwrap()
            .with_drop_path(1, 0.2);
        let (b, t) = (4, 9);
        let x = Var::randn(0f32, 1.0, (b, t, 24), &dev).unwrap();
        let bias = masked.then(|| {
            let mut m = vec![0f32; b * t];
            m[t - 3..t].fill(f32::MIN);
            Tensor::from_vec(m, (b, 1, 1, t), &dev).unwrap()
        });
        let train = || Mode::train(crate::draws::Draws::new(2, 7, 0, b));
        let (mut fused_mode, mut layers_mode) = (train(), train());
        let fused = block
            .fused(x.as_tensor(), bias.as_ref(), &mut fused_mode)
            .unwrap()
            .expect("the fused path applies with attention dropout");
        let layers = block
            .layers(x.as_tensor(), bias.as_ref(), &mut layers_mode)
            .unwrap();
        let site = |m: &Mode| match m {
            Mode::Train { site, .. } => *site,
            _ => unreachable!(),
        };
        assert_eq!(site(&fused_mode), 3, "three dropout layers passed");
        assert_eq!(site(&layers_mode), 3);
        let mut vars: Vec<&Var> = vec![&x];
        let all = vm.all_vars();
        vars.extend(all.iter());
        assert_same_with_gradients(&fused, &layers, &vars, 1e-5, 1e-4);
        // The probabilities' dropout is in effect: alone, it changes the output.
        let only = |p: f64| {
            let mut c = config(norm, true);
            c.attention_dropout = p;
            Block::new(&c, VarBuilder::from_varmap(&vm, DType::F32, &dev))
                .unwrap()
                .fused(x.as_tensor(), bias.as_ref(), &mut train())
                .unwrap()
                .unwrap()
        };
        let moved = max_diff(&only(0.3), &only(0.0));
        assert!(moved > 1e-3, "attention dropout changed nothing ({moved})");
    }
}

#[test]
fn mismatched_inputs_are_errors() {
    let dev = Device::Cpu;
    let shape = super::Shape {
        dim: 8,
        heads: 2,
        mlp_dim: 16,
        qkv_bias: true,
        eps: 1e-5,
        pre_norm: true,
    };
    let x = Tensor::zeros((2, 3, 8), DType::F32, &dev).unwrap();
    let short = Tensor::zeros(10, DType::F32, &dev).unwrap();
    assert!(super::block(&x, &short, None, shape, Default::default()).is_err());
    let len = shape.offsets().len;
    let p = Tensor::zeros(len, DType::F32, &dev).unwrap();
    let bad_bias = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    assert!(super::block(&x, &p, Some(&bad_bias), shape, Default::default()).is_err());
    assert_eq!(
        super::block(&x, &p, None, shape, Default::default())
            .unwrap()
            .dims(),
        [2, 3, 8]
    );
    let short_keep = super::BranchFactors {
        drop_path: [Some(vec![1.0f32]), None],
        ..Default::default()
    };
    assert!(super::block(&x, &p, None, shape, short_keep).is_err());
    let short_mask = super::BranchFactors {
        dropout: [None, Some(vec![1.0f32; 7])],
        ..Default::default()
    };
    assert!(super::block(&x, &p, None, shape, short_mask).is_err());
}
