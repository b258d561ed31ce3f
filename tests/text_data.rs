//! The text data side on the committed samples (data/shakespeare-sample, data/fortunes-sample):
//! tokenizer training and reload, corpus readers and their errors, packing, masking.

use std::path::{Path, PathBuf};

use pretext::modality::text::corpus::{
    class_names, label_indices, read_jsonl, read_text_dir, read_text_file, JsonlFields, TextSplit,
};
use pretext::modality::text::mask::{MlmMasker, SpanConfig, IGNORE};
use pretext::modality::text::pack::{encode_labelled, pack_blocks, pad_batch};
use pretext::modality::text::tokenizer::{TextTokenizer, TokenizerKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shakespeare_train() -> Vec<pretext::modality::text::corpus::Document> {
    read_text_dir(
        root().join("data/shakespeare-sample/train"),
        TextSplit::Paragraph,
    )
    .unwrap()
}

fn hamlet() -> String {
    std::fs::read_to_string(root().join("data/shakespeare-sample/test/hamlet_gut.txt")).unwrap()
}

fn train(kind: TokenizerKind, vocab: usize) -> TextTokenizer {
    let docs = shakespeare_train();
    TextTokenizer::train(kind, vocab, true, docs.iter().map(|d| d.text.as_str())).unwrap()
}

fn check_roundtrip(tok: &TextTokenizer, dir: &Path) {
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    let back = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!(back.special_ids(), tok.special_ids());
    let text = hamlet();
    let paragraphs: Vec<&str> = text.split("\n\n").take(200).collect();
    assert_eq!(
        back.encode_batch(&paragraphs, true).unwrap(),
        tok.encode_batch(&paragraphs, true).unwrap()
    );
}

#[test]
fn wordpiece_trains_saves_and_reloads() {
    let tok = train(TokenizerKind::Wordpiece, 2000);
    let dir = tempfile::tempdir().unwrap();
    // The corpus is small: WordPiece may stop a little short of the asked size, never above.
    assert!(
        (1800..=2000).contains(&tok.vocab_size()),
        "vocab {}",
        tok.vocab_size()
    );
    let ids = |n: &str| tok.inner().token_to_id(n).unwrap();
    assert_eq!(
        (
            tok.pad_id(),
            tok.unk_id(),
            tok.cls_id(),
            tok.sep_id(),
            tok.mask_id()
        ),
        (0, Some(1), 2, 3, 4)
    );
    assert_eq!(ids("[MASK]"), 4);
    assert_eq!(tok.special_ids(), vec![0, 1, 2, 3, 4]);

    let enc = tok.encode("Thane of Cawdor, unsexed!", true).unwrap();
    assert_eq!(enc.ids.first(), Some(&2));
    assert_eq!(enc.ids.last(), Some(&3));
    assert_eq!(enc.word_ids.first(), Some(&None));
    assert_eq!(enc.word_ids.last(), Some(&None));
    assert_eq!(enc.ids.len(), enc.word_ids.len());
    // A rare word is split into pieces that share one word id.
    let pieces = tok.inner().encode("unsexed", false).unwrap();
    assert!(pieces.get_tokens().len() > 1, "{:?}", pieces.get_tokens());
    assert!(pieces.get_tokens()[1].starts_with("##"));
    let enc = tok.encode("unsexed", false).unwrap();
    assert!(enc.word_ids.iter().all(|&w| w == Some(0)));
    // Lowercased: the same ids either way.
    assert_eq!(
        tok.encode("MACBETH", false).unwrap(),
        tok.encode("macbeth", false).unwrap()
    );
    assert_eq!(
        tok.decode(&tok.encode("the king", true).unwrap().ids, true)
            .unwrap(),
        "the king"
    );

    check_roundtrip(&tok, dir.path());
    // Deterministic: a second training gives the same file.
    let again = train(TokenizerKind::Wordpiece, 2000);
    let (a, b) = (
        again.inner().to_string(false).unwrap(),
        tok.inner().to_string(false).unwrap(),
    );
    assert!(a == b, "two trainings on the same texts differ");
}

#[test]
fn bpe_trains_saves_and_reloads() {
    let tok = train(TokenizerKind::Bpe, 1000);
    assert_eq!(tok.vocab_size(), 1000);
    assert_eq!(
        (
            tok.cls_id(),
            tok.pad_id(),
            tok.sep_id(),
            tok.unk_id(),
            tok.mask_id()
        ),
        (0, 1, 2, Some(3), 4)
    );
    let enc = tok
        .encode("Fair is foul, and foul is fair: ünïcödé", true)
        .unwrap();
    assert_eq!(enc.ids.first(), Some(&0));
    assert_eq!(enc.ids.last(), Some(&2));
    // Byte level: nothing is unknown, and decoding gives the (lowercased) text back.
    assert!(!enc.ids.contains(&3));
    assert_eq!(
        tok.decode(&enc.ids, true).unwrap(),
        "fair is foul, and foul is fair: ünïcödé"
    );
    let dir = tempfile::tempdir().unwrap();
    check_roundtrip(&tok, dir.path());
    let again = train(TokenizerKind::Bpe, 1000);
    let (a, b) = (
        again.inner().to_string(false).unwrap(),
        tok.inner().to_string(false).unwrap(),
    );
    assert!(a == b, "two trainings on the same texts differ");
}

#[test]
fn tokenizer_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let e = TextTokenizer::from_file(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.json"), "{e}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
    let e = TextTokenizer::from_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("tokenizer"), "{e}");
}

/// The real MiniLM tokenizer, when `scripts/fetch-data.sh minilm` has run.
#[test]
fn minilm_tokenizer_if_fetched() {
    let path = root().join("data/models/all-MiniLM-L6-v2/tokenizer.json");
    if !path.exists() {
        eprintln!("skipped: {} not fetched", path.display());
        return;
    }
    let tok = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(
        (
            tok.pad_id(),
            tok.unk_id(),
            tok.cls_id(),
            tok.sep_id(),
            tok.mask_id()
        ),
        (0, Some(100), 101, 102, 103)
    );
    // The file's truncation (128) is off: long texts are not cut here.
    let long = "word ".repeat(300);
    assert_eq!(tok.encode(&long, true).unwrap().ids.len(), 302);
    let enc = tok.encode("Hello, world!", true).unwrap();
    assert_eq!(enc.ids, vec![101, 7592, 1010, 2088, 999, 102]);
}

#[test]
fn corpus_reads_files_folders_and_jsonl() {
    let dir = root().join("data/shakespeare-sample/train");
    let files = read_text_dir(&dir, TextSplit::File).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|d| {
            d.origin
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "macbeth_gut.txt",
            "tempest_gut.txt",
            "twelfth_night_gut.txt"
        ]
    );
    assert!(files
        .iter()
        .all(|d| d.label.is_none() && d.origin.line.is_none()));
    let paragraphs = shakespeare_train();
    assert!(paragraphs.len() > 1000, "{} paragraphs", paragraphs.len());
    assert!(paragraphs
        .iter()
        .all(|d| !d.text.trim().is_empty() && !d.text.contains("\n\n")));
    let first = &paragraphs[0];
    assert_eq!(first.origin.line, Some(1));
    assert!(first.text.starts_with("MACBETH"), "{}", first.text);

    let train = read_jsonl(
        root().join("data/fortunes-sample/train.jsonl"),
        &JsonlFields::default(),
    )
    .unwrap();
    let test = read_jsonl(
        root().join("data/fortunes-sample/test.jsonl"),
        &JsonlFields::default(),
    )
    .unwrap();
    assert_eq!((train.len(), test.len()), (601, 150));
    let classes = class_names(&train).unwrap();
    assert_eq!(
        classes,
        [
            "computers",
            "men-women",
            "politics",
            "science",
            "songs-poems",
            "work"
        ]
    );
    let labels = label_indices(&test, &classes).unwrap();
    assert_eq!(labels.len(), 150);
    assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 37);
}

#[test]
fn corpus_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    // Not UTF-8: a Latin-1 "é" (0xe9) after 7 good bytes.
    let latin = dir.path().join("latin1.txt");
    std::fs::write(&latin, b"line 1\ncaf\xe9\n").unwrap();
    let e = read_text_file(&latin, TextSplit::File)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("latin1.txt") && e.contains("byte offset 10") && e.contains("0xe9"),
        "{e}"
    );
    let e = read_text_dir(dir.path(), TextSplit::Paragraph)
        .unwrap_err()
        .to_string();
    assert!(e.contains("byte offset 10"), "{e}");

    let jsonl = dir.path().join("set.jsonl");
    let fields = JsonlFields::default();
    std::fs::write(
        &jsonl,
        "{\"text\": \"a\", \"label\": \"x\"}\n\n{\"text\": \"b\"\n",
    )
    .unwrap();
    let e = read_jsonl(&jsonl, &fields).unwrap_err().to_string();
    assert!(
        e.contains("set.jsonl") && e.contains("line 3") && e.contains("not valid JSON"),
        "{e}"
    );
    std::fs::write(&jsonl, "{\"text\": \"a\"}\n{\"body\": \"b\"}\n").unwrap();
    let e = read_jsonl(&jsonl, &fields).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("no `text` field"), "{e}");
    // Configurable field names; integer labels.
    std::fs::write(
        &jsonl,
        "{\"body\": \"a\", \"y\": 3}\n{\"body\": \"b\", \"y\": \"7\"}\n",
    )
    .unwrap();
    let custom = JsonlFields {
        text: "body".into(),
        label: "y".into(),
    };
    let docs = read_jsonl(&jsonl, &custom).unwrap();
    assert_eq!(docs[0].label.as_deref(), Some("3"));
    assert_eq!(docs[1].origin.to_string(), format!("{}:2", jsonl.display()));
    // A test label the training set does not have.
    let e = label_indices(&docs, &["3".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`7`") && e.contains(":2"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.md"), "not text data").unwrap();
    let e = read_text_dir(empty.path(), TextSplit::File)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no *.txt file"), "{e}");
}

#[test]
fn packing_gives_full_blocks_with_specials() {
    let tok = train(TokenizerKind::Wordpiece, 2000);
    let docs = shakespeare_train();
    let max_len = 128;
    let blocks = pack_blocks(&docs, &tok, max_len).unwrap();
    let n = blocks.len();
    assert!(n > 100, "{n} blocks");
    assert_eq!(blocks.ids.len(), n * max_len);
    assert_eq!(blocks.attention_mask.len(), n * max_len);
    assert_eq!(blocks.word_ids.len(), n * max_len);

    let stream: usize = tok
        .encode_batch(&docs, false)
        .unwrap()
        .iter()
        .map(|e| e.len())
        .sum::<usize>()
        + docs.len()
        - 1;
    let content = blocks.num_tokens() - 2 * n;
    // Every token but a dropped tail (under half a block) is in a block.
    assert!(
        content <= stream && stream - content < (max_len - 2) / 2,
        "{content} of {stream}"
    );

    let mut last_word = None;
    for i in 0..n {
        let b = blocks.get(i);
        let real = b.attention_mask.iter().filter(|&&m| m == 1).count();
        assert!(
            b.attention_mask[..real].iter().all(|&m| m == 1),
            "mask not a prefix"
        );
        if i + 1 < n {
            assert_eq!(real, max_len, "only the last block may be padded");
        }
        assert_eq!(b.ids[0], tok.cls_id());
        assert_eq!(b.ids[real - 1], tok.sep_id());
        assert!(b.ids[real..].iter().all(|&t| t == tok.pad_id()));
        assert!(b.word_ids[real..].iter().all(|w| w.is_none()));
        assert!(!b.ids[1..real - 1].contains(&tok.cls_id()));
        for (&id, &w) in b.ids.iter().zip(b.word_ids).take(real) {
            // Word ids: absent exactly on specials, never decreasing along the stream.
            assert_eq!(w.is_none(), tok.special_ids().contains(&id));
            if let Some(w) = w {
                assert!(last_word.is_none_or(|l| w >= l));
                last_word = Some(w);
            }
        }
    }

    // A corpus shorter than a block still gives one (padded) block.
    let small = pack_blocks(&["To be, or not to be"], &tok, max_len).unwrap();
    assert_eq!(small.len(), 1);
    assert!(small.num_tokens() < max_len);

    // Classification examples and dynamic padding.
    let train = read_jsonl(
        root().join("data/fortunes-sample/train.jsonl"),
        &JsonlFields::default(),
    )
    .unwrap();
    let classes = class_names(&train).unwrap();
    let set = encode_labelled(&train, &tok, 64, &classes).unwrap();
    assert_eq!(set.ids.len(), 601);
    assert!(set
        .ids
        .iter()
        .all(|s| s.len() <= 64 && s[0] == tok.cls_id() && s.last() == Some(&tok.sep_id())));
    assert!(
        set.ids.iter().any(|s| s.len() == 64),
        "some fortunes are longer than 64 tokens"
    );
    let rows: Vec<&[u32]> = set.ids[..8].iter().map(|s| s.as_slice()).collect();
    let batch = pad_batch(&rows, tok.pad_id());
    let longest = rows.iter().map(|r| r.len()).max().unwrap();
    assert_eq!((batch.batch, batch.seq_len), (8, longest));
    assert_eq!(batch.ids.len(), 8 * longest);
    for (r, row) in rows.iter().enumerate() {
        let ids = &batch.ids[r * longest..(r + 1) * longest];
        let mask = &batch.attention_mask[r * longest..(r + 1) * longest];
        assert_eq!(&ids[..row.len()], *row);
        assert!(ids[row.len()..].iter().all(|&t| t == tok.pad_id()));
        assert_eq!(mask.iter().map(|&m| m as usize).sum::<usize>(), row.len());
    }
}

#[test]
fn masking_real_blocks() {
    let tok = train(TokenizerKind::Wordpiece, 2000);
    let docs = shakespeare_train();
    let blocks = pack_blocks(&docs, &tok, 64).unwrap();
    let specials = tok.special_ids();
    for (whole_word, span) in [
        (false, None),
        (true, None),
        (true, Some(SpanConfig::default())),
    ] {
        let mut masker = MlmMasker::new(&tok);
        masker.whole_word = whole_word;
        masker.span = span;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (mut selected, mut eligible) = (0, 0);
        for i in 0..blocks.len() {
            let b = blocks.get(i);
            let (input, labels) = masker.apply(b.ids, b.word_ids, &mut rng);
            assert!(
                labels.iter().any(|&l| l != IGNORE),
                "a block without a target"
            );
            for t in 0..b.ids.len() {
                let special = specials.contains(&b.ids[t]);
                eligible += usize::from(!special);
                if labels[t] == IGNORE {
                    assert_eq!(input[t], b.ids[t]);
                } else {
                    assert!(!special, "special or padding selected");
                    selected += 1;
                }
                if whole_word
                    && t > 0
                    && b.word_ids[t].is_some()
                    && b.word_ids[t] == b.word_ids[t - 1]
                {
                    assert_eq!(labels[t] == IGNORE, labels[t - 1] == IGNORE, "word split");
                }
            }
        }
        let rate = selected as f64 / eligible as f64;
        assert!(
            (rate - 0.15).abs() < 0.015,
            "whole_word {whole_word} span {span:?}: rate {rate}"
        );
    }
}
