//! Masked-language-model corruption: which tokens the loss predicts and what the encoder sees
//! in their place. Follows Hugging Face `DataCollatorForLanguageModeling` (BERT, token level),
//! `DataCollatorForWholeWordMask` (all pieces of a word together) and SpanBERT
//! (Joshi et al. 2020, <https://arxiv.org/abs/1907.10529>: contiguous spans whose lengths are
//! drawn from a geometric distribution, p = 0.2, truncated at 10; mean 3.8).
//!
//! Selection rule:
//! - token level and whole word: each unit (token, or word when `whole_word`) is selected
//!   independently with probability `rate` (Bernoulli, as HF does), so the expected fraction of
//!   selected tokens is `rate`;
//! - span: an exact budget of `max(1, round(rate × eligible tokens))` tokens is filled with
//!   spans at random starts (SpanBERT); with `whole_word` a span counts whole words and the
//!   last word may overshoot the budget, otherwise the last span is cut at the budget.
//!
//! Either way a sequence with at least one eligible token gets at least one selected (one unit
//! drawn uniformly when the Bernoulli draws chose none), so the loss is always defined.
//! Special ids (which include padding) are never selected. Of the selected tokens, 80 % become
//! `mask_id`, 10 % a random token drawn uniformly from the non-special vocabulary, 10 % stay.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::tokenizer::TextTokenizer;

/// The label of a position the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// SpanBERT span lengths: geometric with parameter `p`, truncated at `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpanConfig {
    /// Geometric parameter (default 0.2: mean span length 3.8 with `max_len` 10).
    pub p: f64,
    /// Longest span, in units (tokens, or words with `whole_word`) (default 10).
    pub max_len: usize,
}

impl Default for SpanConfig {
    fn default() -> Self {
        SpanConfig {
            p: 0.2,
            max_len: 10,
        }
    }
}

impl SpanConfig {
    /// One span length in `1..=max_len`: P(l) ∝ p (1 − p)^(l − 1) (rejection sampling).
    pub fn sample_len(&self, rng: &mut ChaCha8Rng) -> usize {
        let max_len = self.max_len.max(1);
        let p = self.p.clamp(1e-6, 1.0);
        loop {
            let mut len = 1;
            while len <= max_len && rng.gen::<f64>() >= p {
                len += 1;
            }
            if len <= max_len {
                return len;
            }
        }
    }
}

/// MLM masking configuration and its `apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmMasker {
    /// Fraction of (eligible) tokens the loss predicts (default 0.15).
    pub rate: f64,
    /// Id written over 80 % of the selected tokens.
    pub mask_id: u32,
    /// Random replacements are drawn from `0..vocab_size` minus `special_ids`.
    pub vocab_size: usize,
    /// Never selected, never drawn as replacements; must include the pad id. Sorted.
    pub special_ids: Vec<u32>,
    /// Select all pieces of a word together (needs word ids).
    pub whole_word: bool,
    /// SpanBERT span masking instead of independent units.
    pub span: Option<SpanConfig>,
}

impl MlmMasker {
    /// Token-level BERT masking at rate 0.15 with the tokenizer's mask id, vocabulary and
    /// special ids (padding included).
    pub fn new(tok: &TextTokenizer) -> Self {
        MlmMasker {
            rate: 0.15,
            mask_id: tok.mask_id(),
            vocab_size: tok.vocab_size(),
            special_ids: tok.special_ids(),
            whole_word: false,
            span: None,
        }
    }

    fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// Groups the eligible positions into units: single tokens, or runs of consecutive
    /// positions sharing a word id when `whole_word`.
    fn units(&self, ids: &[u32], word_ids: &[Option<u32>]) -> Vec<std::ops::Range<usize>> {
        let by_word = self.whole_word && !word_ids.is_empty();
        let mut units: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if self.is_special(id) {
                continue;
            }
            if by_word {
                if let Some(last) = units.last_mut() {
                    let w = word_ids[i];
                    if last.end == i && w.is_some() && word_ids[last.start] == w {
                        last.end = i + 1;
                        continue;
                    }
                }
            }
            units.push(i..i + 1);
        }
        units
    }

    /// Which positions the loss predicts (`true` = selected).
    ///
    /// # Panics
    /// When `word_ids` is neither empty nor as long as `ids`.
    pub fn select(&self, ids: &[u32], word_ids: &[Option<u32>], rng: &mut ChaCha8Rng) -> Vec<bool> {
        assert!(
            word_ids.is_empty() || word_ids.len() == ids.len(),
            "word_ids has {} entries for {} ids",
            word_ids.len(),
            ids.len()
        );
        let units = self.units(ids, word_ids);
        let mut selected = vec![false; ids.len()];
        if units.is_empty() {
            return selected;
        }
        let mut any = false;
        match &self.span {
            None => {
                for u in &units {
                    if rng.gen::<f64>() < self.rate {
                        selected[u.clone()].fill(true);
                        any = true;
                    }
                }
            }
            Some(span) => {
                let eligible: usize = units.iter().map(|u| u.len()).sum();
                let budget = ((self.rate * eligible as f64).round() as usize).clamp(1, eligible);
                let mut count = 0;
                let mut unit_taken = vec![false; units.len()];
                // Bounded, so a pathological configuration cannot loop forever.
                for _ in 0..(10 * units.len() + 100) {
                    if count >= budget {
                        break;
                    }
                    let len = span.sample_len(rng);
                    let start = rng.gen_range(0..units.len());
                    for u in start..(start + len).min(units.len()) {
                        if count >= budget {
                            break;
                        }
                        if unit_taken[u] {
                            continue;
                        }
                        unit_taken[u] = true;
                        let r = units[u].clone();
                        // Token units are cut at the budget; words stay whole.
                        let r = if self.whole_word {
                            r
                        } else {
                            r.start..r.end.min(r.start + budget - count)
                        };
                        count += r.len();
                        selected[r].fill(true);
                    }
                }
                any = count > 0;
            }
        }
        if !any {
            let u = units[rng.gen_range(0..units.len())].clone();
            selected[u].fill(true);
        }
        selected
    }

    /// Corrupts `ids` for MLM: returns `(input_ids, labels)`, labels holding the original id
    /// where selected and `IGNORE` (-100) elsewhere. `word_ids` may be empty when not
    /// `whole_word`. Deterministic given the RNG state.
    pub fn apply(
        &self,
        ids: &[u32],
        word_ids: &[Option<u32>],
        rng: &mut ChaCha8Rng,
    ) -> (Vec<u32>, Vec<i64>) {
        let selected = self.select(ids, word_ids, rng);
        let mut input = ids.to_vec();
        let mut labels = vec![IGNORE; ids.len()];
        let can_draw = self.vocab_size > self.special_ids.len();
        for (i, _) in selected.iter().enumerate().filter(|(_, &s)| s) {
            labels[i] = i64::from(ids[i]);
            let r = rng.gen::<f64>();
            if r < 0.8 {
                input[i] = self.mask_id;
            } else if r < 0.9 && can_draw {
                input[i] = loop {
                    let t = rng.gen_range(0..self.vocab_size as u32);
                    if !self.is_special(t) {
                        break t;
                    }
                };
            }
        }
        (input, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const PAD: u32 = 0;
    const CLS: u32 = 2;
    const SEP: u32 = 3;
    const MASK: u32 = 4;
    const VOCAB: usize = 1000;

    fn masker() -> MlmMasker {
        MlmMasker {
            rate: 0.15,
            mask_id: MASK,
            vocab_size: VOCAB,
            special_ids: vec![0, 1, 2, 3, 4],
            whole_word: false,
            span: None,
        }
    }

    /// `[CLS] t… [SEP] [PAD]…`: `n` real tokens of ids 10.., words of 1–3 pieces, `pad` pads.
    fn seq(n: usize, pad: usize) -> (Vec<u32>, Vec<Option<u32>>) {
        let mut ids = vec![CLS];
        let mut words = vec![None];
        let mut w = 0;
        let mut left = 0;
        for i in 0..n {
            if left == 0 {
                w += 1;
                left = 1 + (i * 7 % 3);
            }
            left -= 1;
            ids.push(10 + (i as u32 % 900));
            words.push(Some(w));
        }
        ids.push(SEP);
        words.push(None);
        ids.extend(std::iter::repeat_n(PAD, pad));
        words.extend(std::iter::repeat_n(None, pad));
        (ids, words)
    }

    fn rate_over(m: &MlmMasker, draws: usize) -> f64 {
        let (ids, words) = seq(200, 20);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut sel = 0;
        for _ in 0..draws {
            sel += m
                .select(&ids, &words, &mut rng)
                .iter()
                .filter(|&&s| s)
                .count();
        }
        sel as f64 / (draws * 200) as f64
    }

    #[test]
    fn rate_matches_in_expectation() {
        let mut m = masker();
        for (whole_word, span) in [
            (false, None),
            (true, None),
            (false, Some(SpanConfig::default())),
            (true, Some(SpanConfig::default())),
        ] {
            m.whole_word = whole_word;
            m.span = span;
            let r = rate_over(&m, 400);
            assert!(
                (r - 0.15).abs() < 0.01,
                "whole_word {whole_word} span {span:?}: rate {r}"
            );
        }
    }

    #[test]
    fn replacements_are_80_10_10() {
        let m = masker();
        let (ids, words) = seq(200, 0);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut n, mut masked, mut random, mut kept) = (0, 0, 0, 0);
        for _ in 0..500 {
            let (input, labels) = m.apply(&ids, &words, &mut rng);
            for i in 0..ids.len() {
                if labels[i] == IGNORE {
                    assert_eq!(input[i], ids[i]);
                    continue;
                }
                assert_eq!(labels[i], i64::from(ids[i]));
                n += 1;
                if input[i] == MASK {
                    masked += 1;
                } else if input[i] == ids[i] {
                    kept += 1;
                } else {
                    assert!(input[i] as usize >= 5 && (input[i] as usize) < VOCAB);
                    random += 1;
                }
            }
        }
        let f = |c: usize| c as f64 / n as f64;
        assert!((f(masked) - 0.8).abs() < 0.02, "mask {}", f(masked));
        // A random draw can hit the original token (1/995), which then counts as kept.
        assert!((f(random) - 0.1).abs() < 0.015, "random {}", f(random));
        assert!((f(kept) - 0.1).abs() < 0.015, "kept {}", f(kept));
    }

    #[test]
    fn specials_and_padding_never_selected_and_one_always_is() {
        let mut m = masker();
        m.rate = 0.9;
        let (ids, words) = seq(30, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for span in [None, Some(SpanConfig::default())] {
            m.span = span;
            for _ in 0..200 {
                let sel = m.select(&ids, &words, &mut rng);
                for (i, &s) in sel.iter().enumerate() {
                    assert!(!(s && ids[i] < 5), "special at {i} selected");
                }
            }
        }
        m.rate = 0.0;
        m.span = None;
        let (ids, words) = seq(3, 5);
        for _ in 0..50 {
            let n = m
                .select(&ids, &words, &mut rng)
                .iter()
                .filter(|&&s| s)
                .count();
            assert_eq!(n, 1);
        }
        let only_specials = [CLS, SEP, PAD];
        assert!(m.select(&only_specials, &[], &mut rng).iter().all(|&s| !s));
    }

    #[test]
    fn whole_words_are_selected_together() {
        let mut m = masker();
        m.whole_word = true;
        let (ids, words) = seq(120, 0);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for span in [None, Some(SpanConfig::default())] {
            m.span = span;
            for _ in 0..200 {
                let sel = m.select(&ids, &words, &mut rng);
                for i in 1..ids.len() {
                    if words[i].is_some() && words[i] == words[i - 1] {
                        assert_eq!(sel[i], sel[i - 1], "word {:?} split", words[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn span_lengths_follow_the_truncated_geometric() {
        let cfg = SpanConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let lens: Vec<usize> = (0..20_000).map(|_| cfg.sample_len(&mut rng)).collect();
        assert!(lens.iter().all(|&l| (1..=10).contains(&l)));
        let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        // Exact mean for p = 0.2 truncated at 10: 3.797.
        assert!((mean - 3.80).abs() < 0.06, "mean span {mean}");
        // Span masking gives runs, token masking mostly isolated tokens.
        let mut m = masker();
        m.span = Some(cfg);
        let (ids, words) = seq(400, 0);
        let sel = m.select(&ids, &words, &mut rng);
        let runs = sel.windows(2).filter(|w| w[1] && !w[0]).count();
        let n = sel.iter().filter(|&&s| s).count();
        assert_eq!(n, 60);
        assert!(n as f64 / runs as f64 > 2.5, "{n} tokens in {runs} runs");
    }

    #[test]
    fn deterministic_given_the_seed() {
        for span in [None, Some(SpanConfig::default())] {
            let mut m = masker();
            m.span = span;
            m.whole_word = true;
            let (ids, words) = seq(100, 4);
            let a = m.apply(&ids, &words, &mut ChaCha8Rng::seed_from_u64(6));
            let b = m.apply(&ids, &words, &mut ChaCha8Rng::seed_from_u64(6));
            let c = m.apply(&ids, &words, &mut ChaCha8Rng::seed_from_u64(7));
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }
}
