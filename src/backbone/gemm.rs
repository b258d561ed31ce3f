//! A safe face on the `gemm` crate (the same crate, and with `x86-v4` the same AVX-512
//! kernels, that candle's CPU matmul calls) for the fused CPU ops of this folder.
//!
//! A matrix is a slice plus a row stride and a column stride, so a transpose is a swap of
//! strides and no copy. Every access is bounds-checked against the slice before the
//! unsafe call.

use candle_core::{bail, Result};

/// A read-only `rows × cols` matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix (`cols` contiguous elements per row).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose, as a view of the same elements.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Index one past the last element the view touches (0 for an empty view).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// Whether the call may spread over the thread pool (`false` inside an already parallel loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    One,
    Pool,
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` being `a.rows × b.cols` with
/// row stride `dst_rs` and unit column stride.
pub fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    check_operands(a, b)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let dst_extent = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * dst_rs + n
    };
    if dst_extent > dst.len() || (m > 1 && dst_rs < n) {
        bail!("gemm: the destination view runs past its buffer or overlaps itself");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: the three views were checked above to lie inside their slices, the
    // destination rows do not overlap (dst_rs >= n), and `dst` is borrowed mutably so it
    // cannot alias `a` or `b`.
    unsafe { call(dst.as_mut_ptr(), dst_rs, a, b, accumulate, threads) };
    Ok(())
}

/// `a · b` as a new row-major `a.rows × b.cols` matrix. `gemm` writes every element of its
/// destination without reading it when asked not to accumulate, so the buffer needs no
/// zero-filling first (a single-threaded pass over memory the size of the result).
pub fn product(a: Mat, b: Mat, threads: Threads) -> Result<Vec<f32>> {
    check_operands(a, b)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        return Ok(vec![0f32; m * n]);
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the operand views lie inside their slices (checked above); the destination is
    // `m * n` elements of fresh capacity with row stride `n`, which gemm writes in full
    // (every `(i, j)` with `i < m`, `j < n`) and never reads without `accumulate`; k > 0.
    unsafe {
        call(out.as_mut_ptr(), n, a, b, false, threads);
        out.set_len(m * n);
    }
    Ok(out)
}

/// The inner dimensions agree and both views lie inside their slices.
fn check_operands(a: Mat, b: Mat) -> Result<()> {
    if b.rows != a.cols {
        bail!(
            "gemm: inner dimensions differ ({}x{} by {}x{})",
            a.rows,
            a.cols,
            b.rows,
            b.cols
        );
    }
    if a.extent() > a.data.len() || b.extent() > b.data.len() {
        bail!("gemm: an operand view runs past its buffer");
    }
    Ok(())
}

/// The `gemm` call: `dst[i * dst_rs + j] (+)= Σ_k a(i, k) b(k, j)`.
///
/// # Safety
/// `a` and `b` lie inside their slices, `dst` is valid for writes (and, with `accumulate`,
/// reads) of `(a.rows - 1) * dst_rs + b.cols` elements, `dst_rs >= b.cols`, and `dst` does
/// not alias `a` or `b`.
unsafe fn call(dst: *mut f32, dst_rs: usize, a: Mat, b: Mat, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // The pool this runs on (candle's, under `device::on_cpu_pool`). Not candle's
    // `get_num_threads`, which reads the environment and /proc/cpuinfo on every call: 1 % of
    // the MAE training step.
    let pool = rayon::current_num_threads();
    let parallelism = match threads {
        Threads::Pool if pool > 1 => ::gemm::Parallelism::Rayon(pool),
        _ => ::gemm::Parallelism::None,
    };
    // SAFETY: the caller's contract.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|k| a.data[i * a.rs + k * a.cs] * b.data[k * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_the_naive_loop() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..35).map(|i| (i as f32 * 0.11).cos()).collect();
        let (a, b) = (Mat::rows(&a, 5, 7), Mat::rows(&b, 5, 7));
        // a · bᵀ: 5×7 by 7×5.
        for threads in [Threads::One, Threads::Pool] {
            let mut out = vec![1f32; 25];
            matmul(&mut out, 5, a, b.t(), false, threads).unwrap();
            let want = naive(a, b.t());
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
            // accumulate adds onto what is there
            matmul(&mut out, 5, a, b.t(), true, threads).unwrap();
            for (x, y) in out.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-5);
            }
        }
        // aᵀ · b: 7×5 by 5×7.
        let mut out = vec![0f32; 49];
        matmul(&mut out, 7, a.t(), b, false, Threads::One).unwrap();
        let want = naive(a.t(), b);
        assert!(out.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    fn views_past_the_buffer_are_errors() {
        let a = vec![0f32; 6];
        let bad = Mat::rows(&a, 3, 3);
        let mut out = vec![0f32; 9];
        assert!(matmul(&mut out, 3, bad, Mat::rows(&a, 3, 2), false, Threads::One).is_err());
        let ok = Mat::rows(&a, 2, 3);
        let mut small = vec![0f32; 2];
        assert!(matmul(&mut small, 2, ok, ok.t(), false, Threads::One).is_err());
    }
}
