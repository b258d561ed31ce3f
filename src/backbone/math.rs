//! Elementwise functions written so the compiler vectorises loops over them (no branches,
//! no calls into libm): the fused kernels spend most of their non-matmul time here.

/// `e^x` for f32, Cephes' `expf` (range reduction to `[-ln2/2, ln2/2]`, a degree-6
/// polynomial, the exponent set by bit arithmetic); relative error below 2e-7 against
/// `f32::exp` (tested below). Inputs below -87.3 give 0, above 88.7 saturate at about 3.4e38.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let underflow = x < -87.336_55;
    let x = x.clamp(-87.336_55, 88.722_83);
    // Round to nearest by the 1.5 * 2^23 trick: `floor` is a libm call on baseline x86-64
    // and would keep the loop scalar.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (-n).mul_add(C2, (-n).mul_add(C1, x));
    let z = r * r;
    let p = 1.987_569_1e-4f32.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(z, r) + 1.0;
    // 2^n for n in [-126, 128]; the clamp keeps n in range, and p * 2^n stays finite. The
    // integer n is read from the low mantissa bits of `shifted` (1.5 * 2^23 + n, exactly):
    // `n as i32` is a saturating conversion that compiles to one scalar instruction per lane.
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let pow2 = f32::from_bits(((n_int + 127).clamp(0, 254) as u32) << 23);
    // A select, not a branch: the loop still vectorises.
    if underflow {
        0.0
    } else {
        p * pow2
    }
}

/// Error function, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7): candle's exact
/// `gelu_erf` evaluates a double-precision series per element and dominated the forward pass.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_given_exp(x, exp(-x * x))
}

/// `erf(x)` given `e = exp(-x²)`, which a caller may need itself (GELU's backward: the
/// normal density at `x √2` is the same exponential).
#[inline(always)]
fn erf_given_exp(x: f32, e: f32) -> f32 {
    let (a1, a2, a3, a4, a5, p): (f32, f32, f32, f32, f32, f32) = (
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
        0.327_591_1,
    );
    let t = 1.0 / p.mul_add(x.abs(), 1.0);
    let q = a5
        .mul_add(t, a4)
        .mul_add(t, a3)
        .mul_add(t, a2)
        .mul_add(t, a1)
        * t;
    (-q).mul_add(e, 1.0).copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// A loop over slices, compiled once per instruction set and chosen at run time.
trait Kernel {
    fn run(self);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(k: K) {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(k: K) {
    k.run()
}

/// Runs `k` with the widest vector instructions this CPU has. Every version gives the same
/// bits: Rust does not contract `a * b + c`, and `mul_add` is a fused multiply-add (one
/// rounding) everywhere, an instruction where FMA is enabled and libm's `fmaf` elsewhere
/// (correct but slow: only CPUs older than AVX2 take that path).
fn dispatch<K: Kernel>(k: K) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features were detected on this CPU.
            return unsafe { run_avx512(k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { run_avx2(k) };
        }
    }
    k.run()
}

struct GeluFwd<'a>(&'a [f32], &'a mut [f32]);

impl Kernel for GeluFwd<'_> {
    #[inline(always)]
    fn run(self) {
        for (o, &v) in self.1.iter_mut().zip(self.0) {
            *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
        }
    }
}

struct GeluBwd<'a>(&'a [f32], &'a [f32], &'a mut [f32]);

impl Kernel for GeluBwd<'_> {
    #[inline(always)]
    fn run(self) {
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
        for ((o, &v), &g) in self.2.iter_mut().zip(self.0).zip(self.1) {
            // One exponential for both: exp(-z²) with z = v/√2 is exp(-v²/2).
            let z = v * FRAC_1_SQRT_2;
            let e = exp(-z * z);
            let cdf = 0.5 * (1.0 + erf_given_exp(z, e));
            let pdf = inv_sqrt_2pi * e;
            *o = g * v.mul_add(pdf, cdf);
        }
    }
}

struct ExpShift<'a>(&'a mut [f32], f32);

impl Kernel for ExpShift<'_> {
    #[inline(always)]
    fn run(self) {
        let shift = self.1;
        self.0.iter_mut().for_each(|v| *v = exp(*v - shift));
    }
}

/// `out = x Φ(x)` (exact GELU) elementwise.
pub fn gelu(x: &[f32], out: &mut [f32]) {
    dispatch(GeluFwd(x, out))
}

/// `out = g (Φ(x) + x φ(x))`, GELU's backward.
pub fn gelu_grad(x: &[f32], g: &[f32], out: &mut [f32]) {
    dispatch(GeluBwd(x, g, out))
}

/// `v = e^(v - shift)` in place (the softmax numerator).
pub fn exp_shifted(v: &mut [f32], shift: f32) {
    dispatch(ExpShift(v, shift))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (super::exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.000_731;
        }
        assert!(worst < 2e-7, "largest relative error {worst:e}");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(-200.0), 0.0);
        assert!(super::exp(f32::NEG_INFINITY) == 0.0);
        assert!(super::exp(100.0).is_finite());
    }

    #[test]
    fn erf_and_the_dispatched_kernels_match_the_scalar_formulas() {
        assert!((super::erf(0.5) - 0.520_499_9).abs() < 5e-7);
        assert!((super::erf(-2.0) + 0.995_322_3).abs() < 5e-7);
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let g: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut y = vec![0f32; 1000];
        super::gelu(&x, &mut y);
        for (v, y) in x.iter().zip(&y) {
            let want = 0.5 * v * (1.0 + super::erf(v * std::f32::consts::FRAC_1_SQRT_2));
            assert_eq!(*y, want, "gelu({v})");
        }
        super::gelu_grad(&x, &g, &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
        let mut e = x.clone();
        super::exp_shifted(&mut e, 1.5);
        for (v, e) in x.iter().zip(&e) {
            assert_eq!(*e, super::exp(v - 1.5));
        }
    }
}
