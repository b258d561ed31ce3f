//! Seeded, stratified draws of a fraction of the labelled examples.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Indices of about `fraction` of the examples of each class (at least one per class
/// present), drawn with `seed`; sorted ascending.
pub fn stratified(labels: &[u32], fraction: f64, seed: u64) -> Vec<usize> {
    if fraction >= 1.0 {
        return (0..labels.len()).collect();
    }
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for mut idx in by_class.into_iter().filter(|c| !c.is_empty()) {
        idx.shuffle(&mut rng);
        let take = ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len());
        out.extend_from_slice(&idx[..take]);
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_class_proportions_and_is_seeded() {
        let labels: Vec<u32> = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 0 }).collect();
        let s = stratified(&labels, 0.1, 0);
        assert_eq!(s.len(), 100);
        assert_eq!(s.iter().filter(|&&i| labels[i] == 1).count(), 25);
        assert_eq!(s, stratified(&labels, 0.1, 0));
        assert_ne!(s, stratified(&labels, 0.1, 1));
        assert_eq!(stratified(&labels, 0.0001, 0).len(), 2);
    }
}
