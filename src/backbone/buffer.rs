//! New output buffers for the fused CPU ops, filled on the thread pool.
//!
//! `vec![0f32; n]` and a row-by-row bias copy are single-threaded passes over memory: in the
//! MAE inference pass on 2 cores they were a fifth of the training thread's time, with the
//! other core idle. Here every buffer is written once, in chunks spread over the pool, or
//! (`for_overwrite`) not at all before its producer writes it.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Elements per task.
const CHUNK: usize = 1 << 15;

/// A vector of `len` elements written chunk by chunk on the pool: `write(start, chunk)`
/// gets the uninitialised elements `start..start + chunk.len()` and must write every one.
fn build(len: usize, write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    if len < CHUNK {
        write(0, spare);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| write(i * CHUNK, c));
    }
    // SAFETY: the first `len` elements were each written above: every caller's `write`
    // writes every element of the chunk it is given (all of them are `MaybeUninit::write`
    // in loops over the whole chunk).
    unsafe { v.set_len(len) };
    v
}

/// A vector of `len` elements with unspecified values (the memory's previous content), for
/// an output that its producer writes in full before anything reads it: it saves the
/// zero-filling pass over memory that `vec![0f32; len]` makes.
///
/// Every caller overwrites every element (gemm without accumulation, which never reads its
/// destination, or a loop over all elements) before reading any; `f32` has no invalid bit
/// patterns and no destructor, and candle's CPU matmul sizes its outputs the same way.
pub fn for_overwrite(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: capacity is `len`; see above for the callers' contract (candle-core's
    // `sort.rs` sizes its output buffers the same way under the same allowance).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// `a + b` elementwise (the shorter length if they differ).
pub fn sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    let len = a.len().min(b.len());
    build(len, |start, c| {
        let (a, b) = (&a[start..start + c.len()], &b[start..start + c.len()]);
        for ((o, x), y) in c.iter_mut().zip(a).zip(b) {
            o.write(x + y);
        }
    })
}

/// `x + (y + bias)` elementwise, the bias repeating every `bias.len()` elements: a residual
/// sum that also adds the bias of the layer that made `y`.
pub fn residual(x: &[f32], y: &[f32], bias: &[f32]) -> Vec<f32> {
    let d = bias.len();
    if d == 0 {
        return sum(x, y);
    }
    let len = x.len().min(y.len());
    build(len, |start, c| {
        // Segment by segment, each within one row: a row's tail, whole rows, a head.
        let (mut at, mut off) = (start % d, 0);
        while off < c.len() {
            let n = (d - at).min(c.len() - off);
            let (xs, ys) = (&x[start + off..][..n], &y[start + off..][..n]);
            let seg = c[off..off + n].iter_mut().zip(xs).zip(ys);
            for (((o, a), v), b) in seg.zip(&bias[at..at + n]) {
                o.write(a + (v + b));
            }
            off += n;
            at = 0;
        }
    })
}

/// [`residual`] with the branch multiplied in training: `x + (((y + bias) · mask[i]) ·
/// keep[r])`, `mask` per element (dropout), `keep` per row of `row` elements (stochastic
/// depth), in the order the layers apply them.
pub fn residual_masked(
    x: &[f32],
    y: &[f32],
    bias: &[f32],
    mask: Option<&[f32]>,
    keep: Option<&[f32]>,
    row: usize,
) -> Vec<f32> {
    let d = bias.len();
    let len = x.len().min(y.len());
    build(len, |start, c| {
        for (k, o) in c.iter_mut().enumerate() {
            let i = start + k;
            let mut v = if d == 0 { y[i] } else { y[i] + bias[i % d] };
            if let Some(m) = mask {
                v *= m[i];
            }
            if let Some(s) = keep {
                v *= s[i / row];
            }
            o.write(x[i] + v);
        }
    })
}

/// The gradient at a branch's output from the gradient `g` at its residual sum, through
/// [`residual_masked`]'s factors: `(g · keep[r]) · mask[i]`, the order of the layers'
/// backward pass.
pub fn branch_grad(g: &[f32], mask: Option<&[f32]>, keep: Option<&[f32]>, row: usize) -> Vec<f32> {
    build(g.len(), |start, c| {
        for (k, o) in c.iter_mut().enumerate() {
            let i = start + k;
            let mut v = g[i];
            if let Some(s) = keep {
                v *= s[i / row];
            }
            if let Some(m) = mask {
                v *= m[i];
            }
            o.write(v);
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_hold_what_they_say() {
        for len in [0, 7, (1 << 15) + 13, 3 << 16] {
            assert_eq!(super::for_overwrite(len).len(), len);
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 5) as f32).collect();
            let s = super::sum(&a, &b);
            assert!(s
                .iter()
                .enumerate()
                .all(|(i, &v)| v == i as f32 + (i % 5) as f32));
        }
        let (x, y): (Vec<f32>, Vec<f32>) = (0..100_003).map(|i| (i as f32, 0.5)).unzip();
        let r = super::residual(&x, &y, &[1.0, 2.0, 3.0]);
        assert_eq!(r.len(), x.len());
        assert!(r
            .iter()
            .enumerate()
            .all(|(i, &v)| v == i as f32 + (0.5 + [1.0, 2.0, 3.0][i % 3])));
    }
}
