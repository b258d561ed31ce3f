//! MAE's decoder input as one CPU op: the class token and the kept tokens put back in their
//! patch order, the mask token in every removed slot, the fixed positions added.
//!
//! Composed from candle ops (`MaeDecoder::forward`'s fallback) this is a narrow, a
//! broadcast, two concatenations, a gather and a broadcast add, and backward a scatter-add,
//! zero-padded narrows and a strided reduction for the mask token's gradient, all on one
//! thread: about 3 % of the MAE training step. Forward writes each output row once
//! (`value + position`, the composed ops' arithmetic, so the same bits); backward routes each
//! row's gradient to the kept token it came from and sums the removed rows' gradients into
//! the mask token's.
//!
//! # Shapes
//! - `x`: `[B, 1 + keep, D]`, the class token then the kept tokens in shuffled order
//! - `mask_token`: `[1, 1, D]`
//! - `ids_restore`: `[B, L]` (u32), slot `j`'s index in the shuffled order (`< keep`: kept)
//! - `pos`: `[1, 1 + L, D]`, fixed
//! - output: `[B, 1 + L, D]`

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::backbone::storage::{applies, cpu_f32, with_f32};

struct UnshuffleOp {
    /// `[B, L]`, each below `L` (checked).
    ids: Vec<u32>,
    /// `[1 + L, D]`.
    pos: Vec<f32>,
    b: usize,
    l: usize,
    keep: usize,
    d: usize,
}

impl UnshuffleOp {
    /// Where output row `j` of batch element `bi` (`j` counting the class token) comes
    /// from: `Some(row of x)` or `None` for the mask token.
    fn source(&self, bi: usize, j: usize) -> Option<usize> {
        if j == 0 {
            return Some(0);
        }
        let r = self.ids[bi * self.l + j - 1] as usize;
        (r < self.keep).then_some(1 + r)
    }
}

impl CustomOp2 for UnshuffleOp {
    fn name(&self) -> &'static str {
        "pretext-mae-unshuffle"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        sm: &CpuStorage,
        lm: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, l_, keep, d) = (self.b, self.l, self.keep, self.d);
        if l.dims() != [b, 1 + keep, d] || lm.dims() != [1, 1, d] {
            bail!(
                "MAE unshuffle: latent {:?} and mask token {:?} do not fit [{b}, {}, {d}] and [1, 1, {d}]",
                l.dims(),
                lm.dims(),
                1 + keep
            );
        }
        let x = cpu_f32(s, l, "MAE decoder latent")?;
        let mask = cpu_f32(sm, lm, "MAE mask token")?;
        let mut out = vec![0f32; b * (1 + l_) * d];
        out.par_chunks_mut((1 + l_) * d)
            .enumerate()
            .for_each(|(bi, ob)| {
                for (j, (row, p)) in ob
                    .chunks_exact_mut(d)
                    .zip(self.pos.chunks_exact(d))
                    .enumerate()
                {
                    let src = match self.source(bi, j) {
                        Some(r) => &x[(bi * (1 + keep) + r) * d..][..d],
                        None => mask,
                    };
                    for ((o, v), p) in row.iter_mut().zip(src).zip(p) {
                        *o = v + p;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, 1 + l_, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        mask_token: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, l_, keep, d) = (self.b, self.l, self.keep, self.d);
        let (dx, dmask) = with_f32(grad, |g| {
            let mut dx = vec![0f32; b * (1 + keep) * d];
            // Per batch element, then summed in order: rayon's `reduce` associates as the
            // work happened to split, which would make the sum differ from run to run.
            let partials: Vec<Vec<f32>> = dx
                .par_chunks_mut((1 + keep) * d)
                .enumerate()
                .map(|(bi, dxb)| {
                    let mut dm = vec![0f32; d];
                    let gb = &g[bi * (1 + l_) * d..][..(1 + l_) * d];
                    for (j, gr) in gb.chunks_exact(d).enumerate() {
                        let acc = match self.source(bi, j) {
                            Some(r) => &mut dxb[r * d..][..d],
                            None => &mut dm[..],
                        };
                        acc.iter_mut().zip(gr).for_each(|(a, v)| *a += v);
                    }
                    dm
                })
                .collect();
            let mut partial = vec![0f32; d];
            for p in &partials {
                partial.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
            (dx, partial)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(
                dmask,
                mask_token.shape(),
                mask_token.device(),
            )?),
        ))
    }
}

/// The decoder's input `[B, 1 + L, D]` as one op (see the module doc); `None` where it does
/// not apply (another device or dtype), and the caller composes it from candle ops.
pub fn unshuffle(
    x: &Tensor,
    mask_token: &Tensor,
    ids_restore: &Tensor,
    pos: &Tensor,
) -> Result<Option<Tensor>> {
    // A trainable position table would need a gradient this op does not give.
    if !applies(x) || !applies(mask_token) || !applies(pos) || pos.track_op() {
        return Ok(None);
    }
    let (b, t, d) = x.dims3()?;
    if b == 0 || d == 0 {
        return Ok(None);
    }
    let (bi, l) = ids_restore.dims2()?;
    if bi != b || t == 0 || pos.dims() != [1, 1 + l, d] {
        bail!(
            "MAE unshuffle: latent {:?}, ids_restore {:?} and positions {:?} do not fit",
            x.dims(),
            ids_restore.dims(),
            pos.dims()
        );
    }
    let ids = ids_restore.flatten_all()?.to_vec1::<u32>()?;
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &r)| r as usize >= l) {
        bail!(
            "MAE unshuffle: ids_restore[{}, {}] = {bad} is not one of the {l} patches",
            i / l,
            i % l
        );
    }
    let op = UnshuffleOp {
        ids,
        pos: pos.flatten_all()?.to_vec1::<f32>()?,
        b,
        l,
        keep: t - 1,
        d,
    };
    x.contiguous()?
        .apply_op2(&mask_token.contiguous()?, op)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::super::mae::unshuffle_composed;
    use crate::backbone::op_tests::max_diff as diff;

    /// The op gives the composed ops' values to the bit and their gradients for the latent
    /// and the mask token, on permutations that keep 3 of 7 patches.
    #[test]
    fn the_op_equals_the_composed_unshuffle() {
        let dev = Device::Cpu;
        let (b, l, keep, d) = (4, 7, 3, 5);
        let x = Var::randn(0f32, 1.0, (b, 1 + keep, d), &dev).unwrap();
        let mask = Var::randn(0f32, 1.0, (1, 1, d), &dev).unwrap();
        let pos = Tensor::randn(0f32, 1.0, (1, 1 + l, d), &dev).unwrap();
        let ids: Vec<u32> = (0..b)
            .flat_map(|bi| (0..l).map(move |j| ((j * 3 + bi) % l) as u32))
            .collect();
        let ids = Tensor::from_vec(ids, (b, l), &dev).unwrap();
        let fused = super::unshuffle(&x, &mask, &ids, &pos).unwrap().unwrap();
        let composed = unshuffle_composed(&x, &mask, &ids, &pos).unwrap();
        assert_eq!(fused.dims(), [b, 1 + l, d]);
        assert_eq!(diff(&fused, &composed), 0.0);
        let probe = Tensor::randn(0f32, 1.0, (b, 1 + l, d), &dev).unwrap();
        let g = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (g(&fused), g(&composed));
        for v in [&x, &mask] {
            let (a, c) = (gf.get(v).unwrap(), gc.get(v).unwrap());
            assert!(diff(a, c) < 1e-5, "{a}\n{c}");
        }
        // Every removed slot (4 per row) feeds the mask token: its gradient is not zero.
        assert!(
            gf.get(&mask)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    /// The mask token's gradient is the per-row sums added in batch order, to the bit, so
    /// a run repeats exactly whatever way the pool splits the work.
    #[test]
    fn the_mask_token_gradient_is_summed_in_batch_order() {
        let dev = Device::Cpu;
        let (b, l, keep, d) = (257, 9, 2, 8);
        let x = Var::zeros((b, 1 + keep, d), candle_core::DType::F32, &dev).unwrap();
        let mask = Var::zeros((1, 1, d), candle_core::DType::F32, &dev).unwrap();
        let pos = Tensor::zeros((1, 1 + l, d), candle_core::DType::F32, &dev).unwrap();
        let ids: Vec<u32> = (0..b * l).map(|i| (i % l) as u32).collect();
        let ids = Tensor::from_vec(ids, (b, l), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (b, 1 + l, d), &dev).unwrap();
        let y = super::unshuffle(&x, &mask, &ids, &pos).unwrap().unwrap();
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got = grads
            .get(&mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let g = probe.to_vec3::<f32>().unwrap();
        let mut want = vec![0f32; d];
        for row in &g {
            let mut part = vec![0f32; d];
            // Slots 1 + keep.. of each row hold the mask token (ids keep..l).
            for slot in &row[1 + keep..] {
                part.iter_mut().zip(slot).for_each(|(a, v)| *a += v);
            }
            want.iter_mut().zip(&part).for_each(|(a, v)| *a += v);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn an_index_past_the_patches_is_an_error_naming_it() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 3), candle_core::DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((1, 1, 3), candle_core::DType::F32, &dev).unwrap();
        let pos = Tensor::zeros((1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let ids = Tensor::new(&[[0u32, 9]], &dev).unwrap();
        let err = super::unshuffle(&x, &mask, &ids, &pos)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ids_restore[0, 1] = 9"), "{err}");
        // An empty batch is left to the composed ops.
        let empty = Tensor::zeros((0, 2, 3), candle_core::DType::F32, &dev).unwrap();
        let ids = Tensor::zeros((0, 2), candle_core::DType::U32, &dev).unwrap();
        assert!(super::unshuffle(&empty, &mask, &ids, &pos)
            .unwrap()
            .is_none());
    }
}
