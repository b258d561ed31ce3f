//! `TextTokenizer`: a Hugging Face `tokenizers::Tokenizer` (a `tokenizer.json`) plus the special
//! ids MLM and classification need, resolved by name once.
//!
//! Two families are recognised by their special tokens:
//! - BERT / WordPiece: `[CLS] [SEP] [PAD] [MASK] [UNK]`;
//! - RoBERTa / byte-level BPE: `<s> </s> <pad> <mask> <unk>`.
//!
//! `train` builds either from raw text the way the reference tokenizers are built (BERT:
//! `BertNormalizer` + `BertPreTokenizer` + WordPiece `##` + `[CLS] $A [SEP]` + WordPiece decoder;
//! RoBERTa: `ByteLevel` pre-tokenizer and decoder + `<s> $A </s>`), so the saved file loads in
//! Python's `tokenizers` / `transformers` as well. The caller saves it into the run directory so
//! a run is self-contained.
//!
//! Truncation and padding stored in a loaded `tokenizer.json` are switched off: packing and
//! batching (`pack.rs`) decide lengths, not the file.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BpeTrainer;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::normalizers::utils::Lowercase;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, Trainer};

use crate::{Error, Result};

/// Which tokenizer family `TextTokenizer::train` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// BERT: WordPiece with `##` continuation, `[CLS] … [SEP]`.
    Wordpiece,
    /// RoBERTa: byte-level BPE (never an unknown token), `<s> … </s>`.
    Bpe,
}

/// Special-token names of a family, in the id order `train` assigns them (0, 1, …).
const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const ROBERTA_SPECIALS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// The special ids, resolved by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Specials {
    cls: u32,
    sep: u32,
    pad: u32,
    mask: u32,
    unk: Option<u32>,
}

/// One encoded text. `word_ids[i]` is the index of the pre-tokenizer word token `i` came from
/// (`None` for special tokens); whole-word masking groups on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub word_ids: Vec<Option<u32>>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer with its special ids.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    specials: Specials,
    /// Where it came from, for error messages ("trained" when built in memory).
    origin: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .finish()
    }
}

fn tk_err(origin: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::data(origin, format!("{what}: {e}"))
}

/// A `TemplateProcessing` post-processor (alone or in a `Sequence`) that `tokenizers` loads
/// but panics on at the first encoding is refused when the file is loaded: a template using
/// a special token `special_tokens` does not define, a `single` template using sequence `B`,
/// a special token with unequal `ids` and `tokens`. (Found by fuzzing.) Both are told by
/// their fields, as `tokenizers` reads them untagged: a wrong `type` does not hide them.
fn check_post_processor(pp: Option<&serde_json::Value>) -> std::result::Result<(), String> {
    let Some(pp) = pp else { return Ok(()) };
    if let Some(all) = pp.get("processors").and_then(|p| p.as_array()) {
        all.iter().try_for_each(|p| check_post_processor(Some(p)))?;
    }
    let defined = pp.get("special_tokens").and_then(|s| s.as_object());
    for (name, token) in defined.into_iter().flatten() {
        let len = |k: &str| token.get(k).and_then(|v| v.as_array()).map(|a| a.len());
        if len("ids") != len("tokens") {
            return Err(format!(
                "the special token `{name}` has {:?} ids but {:?} tokens",
                len("ids"),
                len("tokens")
            ));
        }
    }
    for which in ["single", "pair"] {
        let pieces = pp.get(which).and_then(|p| p.as_array());
        for piece in pieces.into_iter().flatten() {
            if which == "single"
                && piece.pointer("/Sequence/id").and_then(|i| i.as_str()) == Some("B")
            {
                return Err("the `single` template uses sequence `B`".into());
            }
            let Some(id) = piece.pointer("/SpecialToken/id").and_then(|i| i.as_str()) else {
                continue;
            };
            if !defined.is_some_and(|d| d.contains_key(id)) {
                return Err(format!(
                    "the `{which}` template uses the special token `{id}`, which \
                     `special_tokens` does not define"
                ));
            }
        }
    }
    Ok(())
}

/// Reads a `tokenizer.json` as the `tokenizers` library does, after the checks it lacks:
/// a regular file ([`crate::input`]), valid JSON (it panics on some invalid JSON), and a
/// post-processor it will not panic on ([`check_post_processor`]); should it panic on
/// something else, that is this file's error too. (Found by fuzzing: `tests/fuzz`.)
pub fn read_checked(path: &Path) -> Result<Tokenizer> {
    let text = crate::input::read_to_string(path)?;
    let not_a_tokenizer = |e: &dyn std::fmt::Display| {
        Error::data(path, format!("not a Hugging Face tokenizer.json: {e}"))
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| not_a_tokenizer(&e))?;
    check_post_processor(json.get("post_processor"))
        .map_err(|e| Error::data(path, format!("`post_processor`: {e}")))?;
    std::panic::catch_unwind(|| text.parse::<Tokenizer>())
        .map_err(|_| not_a_tokenizer(&"the tokenizers library failed on it (see above)"))?
        .map_err(|e| not_a_tokenizer(&e))
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`. Errors name the file: unreadable, not a tokenizer, or without
    /// the `[CLS] [SEP] [PAD] [MASK]` (or `<s> </s> <pad> <mask>`) tokens MLM needs.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_tokenizer(read_checked(path)?, &path.display().to_string())
    }

    /// Wraps an in-memory tokenizer; `origin` names it in errors.
    pub fn from_tokenizer(mut inner: Tokenizer, origin: &str) -> Result<Self> {
        inner
            .with_truncation(None)
            .map_err(|e| tk_err(origin, "cannot switch truncation off", e))?;
        inner.with_padding(None);
        let specials = resolve_specials(&inner).map_err(|missing| Error::data(origin, missing))?;
        Ok(TextTokenizer {
            inner,
            specials,
            origin: origin.to_string(),
        })
    }

    /// Trains a tokenizer on `texts` (deterministic for the same texts in the same order).
    /// `vocab_size` counts everything, special tokens included (for BPE also the 256 byte
    /// symbols, so it must exceed 261); the result may be smaller when the corpus runs out of
    /// merges. `lowercase` lowercases (and, for WordPiece, strips accents as BERT uncased does).
    pub fn train<I, S>(
        kind: TokenizerKind,
        vocab_size: usize,
        lowercase: bool,
        texts: I,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send,
        S: AsRef<str> + Send,
    {
        let origin = format!("{kind:?} tokenizer training");
        let fail = |e: tokenizers::Error| tk_err(&origin, "failed", e);
        let inner: Tokenizer = match kind {
            TokenizerKind::Wordpiece => {
                let specials: Vec<AddedToken> = BERT_SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(s.to_string(), true))
                    .collect();
                let normalizer = BertNormalizer::new(true, true, None, lowercase);
                // Ids of the specials are their positions in BERT_SPECIALS (the trainer puts
                // them first).
                let processor = BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2));
                let decoder = WordPieceDecoder::new("##".into(), true);
                // Trained as BPE over words whose non-initial characters are marked (see
                // `ContinuationMarked`), then turned into WordPiece `##` pieces.
                let mut trainer = ContinuationMarked(
                    BpeTrainerBuilder::new()
                        .vocab_size(vocab_size)
                        .min_frequency(0)
                        .show_progress(false)
                        .special_tokens(specials.clone())
                        .build(),
                );
                let mut bpe_tk = TokenizerBuilder::new()
                    .with_model(BPE::default())
                    .with_normalizer(Some(normalizer))
                    .with_pre_tokenizer(Some(BertPreTokenizer))
                    .with_post_processor(Some(processor.clone()))
                    .with_decoder(Some(decoder.clone()))
                    .build()
                    .map_err(fail)?;
                bpe_tk
                    .train(&mut trainer, texts.into_iter())
                    .map_err(fail)?;
                let vocab: serde_json::Map<String, serde_json::Value> = bpe_tk
                    .get_model()
                    .get_vocab()
                    .into_iter()
                    .map(|(token, id)| (unmark(&token), id.into()))
                    .collect();
                // Through serde: `WordPiece`'s builder wants an `ahash` map.
                let json = serde_json::json!({
                    "type": "WordPiece",
                    "unk_token": "[UNK]",
                    "continuing_subword_prefix": "##",
                    "max_input_chars_per_word": 100,
                    "vocab": vocab,
                });
                // From text: the model's tag is deserialised as a borrowed string.
                let model: WordPiece = serde_json::from_str(&json.to_string())
                    .map_err(|e| tk_err(&origin, "failed to build the WordPiece model", e))?;
                let mut tk = TokenizerBuilder::new()
                    .with_model(model)
                    .with_normalizer(Some(normalizer))
                    .with_pre_tokenizer(Some(BertPreTokenizer))
                    .with_post_processor(Some(processor))
                    .with_decoder(Some(decoder))
                    .build()
                    .map_err(fail)?;
                tk.add_special_tokens(specials).map_err(fail)?;
                Tokenizer::from(tk)
            }
            TokenizerKind::Bpe => {
                let specials: Vec<AddedToken> = ROBERTA_SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(s.to_string(), true).lstrip(*s == "<mask>"))
                    .collect();
                let mut trainer = BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(0)
                    .show_progress(false)
                    .special_tokens(specials)
                    .initial_alphabet(
                        tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
                            .into_iter()
                            .collect(),
                    )
                    .build();
                let processor = RobertaProcessing::new(("</s>".into(), 2), ("<s>".into(), 0))
                    .trim_offsets(true)
                    .add_prefix_space(false);
                let normalizer: Option<NormalizerWrapper> = lowercase.then(|| Lowercase.into());
                let mut tk = TokenizerBuilder::new()
                    .with_model(BPE::default())
                    .with_normalizer(normalizer)
                    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
                    .with_post_processor(Some(processor))
                    .with_decoder(Some(ByteLevel::default()))
                    .build()
                    .map_err(fail)?;
                tk.train(&mut trainer, texts.into_iter()).map_err(fail)?;
                Tokenizer::from(tk)
            }
        };
        let tk = Self::from_tokenizer(inner, &origin)?;
        let expect: &[&str] = match kind {
            TokenizerKind::Wordpiece => &BERT_SPECIALS,
            TokenizerKind::Bpe => &ROBERTA_SPECIALS,
        };
        for (i, name) in expect.iter().enumerate() {
            if tk.inner.token_to_id(name) != Some(i as u32) {
                return Err(Error::data(
                    &origin,
                    format!(
                        "expected {name} at id {i}, found {:?}",
                        tk.inner.token_to_id(name)
                    ),
                ));
            }
        }
        Ok(tk)
    }

    /// Writes `tokenizer.json` (pretty-printed); `from_file` on it gives identical encodings.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| Error::data(path, format!("cannot serialise the tokenizer: {e}")))?;
        crate::tensor_io::write_atomic(path, text.as_bytes())
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Number of ids, added tokens included (the embedding table's row count).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn cls_id(&self) -> u32 {
        self.specials.cls
    }

    pub fn sep_id(&self) -> u32 {
        self.specials.sep
    }

    pub fn pad_id(&self) -> u32 {
        self.specials.pad
    }

    pub fn mask_id(&self) -> u32 {
        self.specials.mask
    }

    /// `None` for a tokenizer without an unknown token (possible for byte-level BPE).
    pub fn unk_id(&self) -> Option<u32> {
        self.specials.unk
    }

    /// Every added token's id (specials and other added tokens) plus the five above, sorted:
    /// the ids MLM never selects and never draws as random replacements.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.inner.get_added_tokens_decoder().into_keys().collect();
        let s = &self.specials;
        ids.extend([s.cls, s.sep, s.pad, s.mask]);
        ids.extend(s.unk);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Encodes one text; with `add_special_tokens` the post-processor wraps it
    /// (`[CLS] … [SEP]` / `<s> … </s>`). No truncation.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tk_err(&self.origin, "encoding failed", e))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            word_ids: enc.get_word_ids().to_vec(),
        })
    }

    /// `encode` over many texts (in parallel; order kept).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        add_special_tokens: bool,
    ) -> Result<Vec<Encoded>> {
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encs = self
            .inner
            .encode_batch(inputs, add_special_tokens)
            .map_err(|e| tk_err(&self.origin, "encoding failed", e))?;
        Ok(encs
            .into_iter()
            .map(|enc| Encoded {
                ids: enc.get_ids().to_vec(),
                word_ids: enc.get_word_ids().to_vec(),
            })
            .collect())
    }

    /// Ids back to text (special tokens skipped when `skip_special_tokens`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tk_err(&self.origin, "decoding failed", e))
    }
}

/// Offset of the private-use plane (U+F0000) where non-initial characters of a word are moved
/// during WordPiece training.
const MARK: u32 = 0xF0000;

/// `tokenizers`' own `WordPieceTrainer` is not deterministic: it adds the `##x` symbols in the
/// iteration order of a randomly seeded hash map, and merge ties are broken by symbol id. Here
/// every character after the first of a word is moved to the private-use plane instead, so the
/// BPE trainer sees `##x` as an ordinary character `x'`: the whole alphabet then enters the
/// vocabulary sorted, before any merge, and training is deterministic. `unmark` turns the result
/// back into WordPiece tokens (`x'y'` → `##xy`). Characters outside the Basic Multilingual
/// Plane are left as they are (such a word may encode to `[UNK]`).
struct ContinuationMarked(BpeTrainer);

fn mark_word(word: &str) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| match (i, c as u32) {
            (0, _) => c,
            (_, u) if u < 0xFFFE => char::from_u32(MARK + u).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn unmark(token: &str) -> String {
    let marked = |c: char| (MARK..MARK + 0xFFFE).contains(&(c as u32));
    let plain: String = token
        .chars()
        .map(|c| {
            if marked(c) {
                char::from_u32(c as u32 - MARK).unwrap_or(c)
            } else {
                c
            }
        })
        .collect();
    match token.chars().next() {
        Some(c) if marked(c) => format!("##{plain}"),
        _ => plain,
    }
}

impl Trainer for ContinuationMarked {
    type Model = BPE;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, model: &mut BPE) -> tokenizers::Result<Vec<AddedToken>> {
        self.0.train(model)
    }

    fn feed<I, S, F>(&mut self, iterator: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        self.0.feed(iterator, |seq| {
            Ok(process(seq)?.iter().map(|w| mark_word(w)).collect())
        })
    }
}

/// Finds the family's specials by name; the error lists what is missing.
fn resolve_specials(tk: &Tokenizer) -> std::result::Result<Specials, String> {
    for names in [BERT_SPECIALS, ROBERTA_SPECIALS] {
        // Order in the arrays differs: look each role up by name.
        let (pad, unk, cls, sep, mask) = if names == BERT_SPECIALS {
            ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
        } else {
            ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
        };
        let id = |n: &str| tk.token_to_id(n);
        if let (Some(cls), Some(sep), Some(pad), Some(mask)) = (id(cls), id(sep), id(pad), id(mask))
        {
            return Ok(Specials {
                cls,
                sep,
                pad,
                mask,
                unk: id(unk),
            });
        }
    }
    let missing: Vec<&str> = BERT_SPECIALS
        .iter()
        .chain(ROBERTA_SPECIALS.iter())
        .filter(|n| !n.contains("unk") && !n.contains("UNK") && tk.token_to_id(n).is_none())
        .copied()
        .collect();
    Err(format!(
        "the tokenizer lacks the special tokens masked pretraining needs: neither \
         [CLS] [SEP] [PAD] [MASK] nor <s> </s> <pad> <mask> are all present (missing: {})",
        missing.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_using_an_undefined_special_token_is_refused_at_load() {
        let good = std::fs::read_to_string("tests/fixtures/hf/bert_model/tokenizer.json").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokenizer.json");
        // The template says `_CLS]`, special_tokens defines `[CLS]` (found by fuzzing:
        // `tokenizers` panics at the first encoding).
        let bad = good.replacen("\"id\": \"[CLS]\"", "\"id\": \"_CLS]\"", 1);
        assert_ne!(bad, good);
        std::fs::write(&path, bad).unwrap();
        let e = TextTokenizer::from_file(&path).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("`_CLS]`"), "{e}");
        std::fs::write(&path, good).unwrap();
        let tk = TextTokenizer::from_file(&path).unwrap();
        assert!(!tk
            .encode("to be or not to be", true)
            .unwrap()
            .ids
            .is_empty());
    }
}
