//! Shared checks for the fused ops' unit tests: a fused op against the candle ops it
//! replaces, in values and in gradients.

use candle_core::{Tensor, Var};

/// Largest absolute elementwise difference.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("two tensors of one shape")
}

/// `fused` equals `composed` within `tol`, and so do the gradients of `vars` under the
/// read-out `Σ probe ⊙ y` (non-uniform weights, so every direction of the gradient counts),
/// within `grad_tol`.
pub fn assert_same_with_gradients(
    fused: &Tensor,
    composed: &Tensor,
    vars: &[&Var],
    tol: f32,
    grad_tol: f32,
) {
    assert_eq!(fused.dims(), composed.dims());
    let d = max_diff(fused, composed);
    assert!(d < tol, "values differ by {d}");
    let probe = Tensor::randn(0f32, 1.0, fused.shape(), fused.device()).expect("a probe");
    let grads = |y: &Tensor| {
        (y * &probe)
            .and_then(|l| l.sum_all()?.backward())
            .expect("a backward pass")
    };
    let (gf, gc) = (grads(fused), grads(composed));
    for (i, v) in vars.iter().enumerate() {
        let (a, c) = (
            gf.get(v.as_tensor()).expect("a fused gradient"),
            gc.get(v.as_tensor()).expect("a composed gradient"),
        );
        let d = max_diff(a, c);
        assert!(d < grad_tol, "the gradient of input {i} differs by {d}");
    }
}
