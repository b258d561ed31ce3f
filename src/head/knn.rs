//! k-nearest-neighbour classification of frozen features by cosine similarity, each of the
//! `k` neighbours voting for its label with weight `exp(similarity / temperature)` (the
//! weighted k-NN of Wu et al. 2018, used by DINO to evaluate features).

use candle_core::{Tensor, D};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f64,
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Predicted labels of `query: [M, D]` given `keys: [N, D]` with `labels` (N of them, each
/// `< classes`).
pub fn predict(
    keys: &Tensor,
    labels: &[u32],
    query: &Tensor,
    classes: usize,
    cfg: KnnConfig,
) -> Result<Vec<u32>> {
    let (n, d) = keys.dims2()?;
    if labels.len() != n {
        return Err(Error::shape("k-NN labels", n, labels.len()));
    }
    if query.dim(1)? != d {
        return Err(Error::shape(
            "k-NN query features",
            format!("[M, {d}]"),
            format!("{:?}", query.dims()),
        ));
    }
    let k = cfg.k.min(n);
    let keys_t = l2_normalize(keys)?.t()?.contiguous()?;
    let query = l2_normalize(query)?;
    let mut out = Vec::with_capacity(query.dim(0)?);
    let m = query.dim(0)?;
    let mut start = 0;
    while start < m {
        let rows = 256.min(m - start);
        let sims = query
            .narrow(0, start, rows)?
            .matmul(&keys_t)?
            .to_vec2::<f32>()?;
        for row in sims {
            let mut idx: Vec<usize> = (0..n).collect();
            // Largest similarities first; ties by index, so the result is deterministic.
            idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut votes = vec![0f64; classes];
            for &j in &idx[..k] {
                votes[labels[j] as usize] += (row[j] as f64 / cfg.temperature).exp();
            }
            let best = votes
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(c, _)| c as u32);
            out.push(best);
        }
        start += rows;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nearest_by_angle_not_length() {
        let dev = Device::Cpu;
        // Class 0 points along x, class 1 along y; lengths vary wildly.
        let keys =
            Tensor::new(&[[10f32, 0.0], [0.1, 0.01], [0.0, 5.0], [0.01, 0.2]], &dev).unwrap();
        let labels = [0, 0, 1, 1];
        let query = Tensor::new(&[[100f32, 1.0], [0.0, 0.01]], &dev).unwrap();
        let cfg = KnnConfig {
            k: 2,
            temperature: 0.07,
        };
        assert_eq!(predict(&keys, &labels, &query, 2, cfg).unwrap(), vec![0, 1]);
        // k larger than the data set is clamped; weights still favour the closer class.
        let cfg = KnnConfig {
            k: 10,
            temperature: 0.07,
        };
        assert_eq!(predict(&keys, &labels, &query, 2, cfg).unwrap(), vec![0, 1]);
    }
}
