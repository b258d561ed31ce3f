//! The text token cache (`modality::text::shards`) and the streamed corpus
//! (`modality::text::stream`) on the committed samples: blocks packed from the mapped shards
//! equal `pack_blocks`'s, a cache is reused until a file or the tokenizer changes, a damaged or
//! unfinished cache is never taken for a complete one, and a tokenizer trained from the stream
//! equals one trained from the documents in memory.

use std::path::{Path, PathBuf};

use pretext::modality::text::corpus::{read_jsonl, read_text_dir, JsonlFields, TextSplit};
use pretext::modality::text::pack::{pack_blocks, BlockBatches, TokenBlocks};
use pretext::modality::text::shards::{MappedBlocks, TokenStream};
use pretext::modality::text::stream::Corpus;
use pretext::modality::text::tokenizer::{TextTokenizer, TokenizerKind};
use pretext::train::loader::MakeBatch;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shakespeare() -> PathBuf {
    root().join("data/shakespeare-sample/train")
}

fn fortunes() -> PathBuf {
    root().join("data/fortunes-sample/train.jsonl")
}

fn wordpiece(corpus: &Corpus) -> TextTokenizer {
    corpus
        .train_tokenizer(TokenizerKind::Wordpiece, 2000, true)
        .unwrap()
        .0
}

/// Every block of `blocks`, in order and in a shuffled order, against `expected`.
fn assert_same_blocks(blocks: &MappedBlocks, expected: &TokenBlocks) {
    assert_eq!(blocks.len(), expected.len());
    let all: Vec<usize> = (0..blocks.len()).collect();
    assert_eq!(&blocks.gather(&all).unwrap(), expected);
    let shuffled: Vec<usize> = all.iter().map(|i| (i * 7 + 3) % all.len()).collect();
    assert_eq!(
        blocks.gather(&shuffled).unwrap(),
        expected.gather(&shuffled)
    );
}

#[test]
fn mapped_blocks_equal_pack_blocks_on_the_shakespeare_sample() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = Corpus::text(&shakespeare(), None).unwrap();
    let tok = wordpiece(&corpus);
    let docs = read_text_dir(shakespeare(), TextSplit::File).unwrap();
    // One shard, and a shard per document (blocks then straddle shards).
    for shard_tokens in [u64::MAX, 1] {
        let dir = tempfile::tempdir_in(cache.path()).unwrap();
        let stream =
            TokenStream::open_or_build_sharded(dir.path(), &corpus, &tok, shard_tokens).unwrap();
        assert_eq!(stream.documents(), 3);
        // One cache serves every max_len.
        for max_len in [64, 16, 128, 3] {
            let again = TokenStream::open_or_build(dir.path(), &corpus, &tok).unwrap();
            assert!(again.reused());
            assert_eq!(again.dir(), stream.dir());
            let blocks = MappedBlocks::new(again, &tok, max_len).unwrap();
            assert_same_blocks(&blocks, &pack_blocks(&docs, &tok, max_len).unwrap());
        }
    }
}

#[test]
fn many_small_shards_of_a_jsonl_corpus_equal_pack_blocks() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = Corpus::jsonl(&fortunes(), JsonlFields::default(), None);
    let tok = wordpiece(&corpus);
    let docs = read_jsonl(fortunes(), &JsonlFields::default()).unwrap();
    let stream = TokenStream::open_or_build_sharded(cache.path(), &corpus, &tok, 500).unwrap();
    assert_eq!(stream.documents() as usize, docs.len());
    let blocks = MappedBlocks::new(stream, &tok, 32).unwrap();
    let expected = pack_blocks(&docs, &tok, 32).unwrap();
    assert_same_blocks(&blocks, &expected);
    // The training loader's batches.
    let batches = BlockBatches(std::sync::Arc::new(blocks));
    assert_eq!(
        batches.make(&[5, 1], &[0, 0]).unwrap(),
        expected.gather(&[5, 1])
    );
    let e = batches
        .make(&[expected.len()], &[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("requested from"), "{e}");
}

#[test]
fn the_stream_reads_what_the_readers_read_with_a_limit() {
    let fields = JsonlFields::default();
    let all = read_jsonl(fortunes(), &fields).unwrap();
    let streamed: Vec<_> = Corpus::jsonl(&fortunes(), fields.clone(), Some(7))
        .documents()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(streamed, all[..7]);
    let streamed: Vec<_> = Corpus::text(&shakespeare(), None)
        .unwrap()
        .documents()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        streamed,
        read_text_dir(shakespeare(), TextSplit::File).unwrap()
    );
}

#[test]
fn jsonl_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, b"\xef\xbb\xbf{\"text\": \"a\"}\r\n\n{\"text\": 3}\n").unwrap();
    let corpus = Corpus::jsonl(&path, JsonlFields::default(), None);
    let docs: Vec<_> = corpus.documents().collect();
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[0].as_ref().unwrap().text, "a");
    let e = docs[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 3"), "{e}");
    std::fs::write(&path, b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}\n").unwrap();
    let e = Corpus::jsonl(&path, JsonlFields::default(), None)
        .documents()
        .find_map(|d| d.err())
        .unwrap()
        .to_string();
    assert!(
        e.contains("not UTF-8") && e.contains("offset 24") && e.contains("line 2"),
        "{e}"
    );
    // The trainer sees the error, not a tokenizer of half the corpus.
    let e = corpus
        .train_tokenizer(TokenizerKind::Wordpiece, 200, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn a_tokenizer_trained_from_the_stream_equals_one_trained_in_memory() {
    let docs = read_text_dir(shakespeare(), TextSplit::File).unwrap();
    let corpus = Corpus::text(&shakespeare(), None).unwrap();
    for (kind, vocab) in [(TokenizerKind::Wordpiece, 2000), (TokenizerKind::Bpe, 1000)] {
        let in_memory =
            TextTokenizer::train(kind, vocab, true, docs.iter().map(|d| d.text.as_str())).unwrap();
        let (streamed, n) = corpus.train_tokenizer(kind, vocab, true).unwrap();
        assert_eq!(n, docs.len());
        assert_eq!(
            streamed.inner().to_string(false).unwrap(),
            in_memory.inner().to_string(false).unwrap(),
            "{kind:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_changed_file_or_tokenizer_makes_a_new_cache_and_a_saved_tokenizer_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = (tmp.path().join("data"), tmp.path().join("cache"));
    copy_dir(&shakespeare(), &data);
    let corpus = Corpus::text(&data, None).unwrap();
    let tok = wordpiece(&corpus);
    let first = TokenStream::open_or_build(&cache, &corpus, &tok).unwrap();
    assert!(!first.reused());

    // A resumed run loads the tokenizer its run directory saved: the same cache.
    tok.save(tmp.path().join("tokenizer.json")).unwrap();
    let saved = TextTokenizer::from_file(tmp.path().join("tokenizer.json")).unwrap();
    let again = TokenStream::open_or_build(&cache, &corpus, &saved).unwrap();
    assert!(again.reused());
    assert_eq!(again.dir(), first.dir());

    let other = corpus
        .train_tokenizer(TokenizerKind::Wordpiece, 1500, true)
        .unwrap()
        .0;
    let by_other = TokenStream::open_or_build(&cache, &corpus, &other).unwrap();
    assert!(!by_other.reused());
    assert_ne!(by_other.dir(), first.dir());

    // A file rewritten: a new cache holding the new text.
    let file = data.join("tempest_gut.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\nExeunt omnes.\n")).unwrap();
    let changed = TokenStream::open_or_build(&cache, &corpus, &tok).unwrap();
    assert!(!changed.reused());
    assert_ne!(changed.dir(), first.dir());
    let docs = read_text_dir(&data, TextSplit::File).unwrap();
    let blocks = MappedBlocks::new(changed, &tok, 64).unwrap();
    assert_same_blocks(&blocks, &pack_blocks(&docs, &tok, 64).unwrap());
}

#[test]
fn a_damaged_or_unfinished_cache_is_rebuilt_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = Corpus::text(&shakespeare(), None).unwrap();
    let tok = wordpiece(&corpus);
    let docs = read_text_dir(shakespeare(), TextSplit::File).unwrap();
    let expected = pack_blocks(&docs, &tok, 64).unwrap();
    let dir = TokenStream::open_or_build(tmp.path(), &corpus, &tok)
        .unwrap()
        .dir()
        .to_path_buf();

    // A shard cut short: rebuilt.
    let ids = dir.join("shard-00000.ids");
    let len = std::fs::metadata(&ids).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ids)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let rebuilt = TokenStream::open_or_build(tmp.path(), &corpus, &tok).unwrap();
    assert!(!rebuilt.reused());
    assert_same_blocks(&MappedBlocks::new(rebuilt, &tok, 64).unwrap(), &expected);

    // A build killed before its manifest (a staging folder of a process that is gone, or a
    // folder without manifest): never read; the staging folder is removed.
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let stale = tmp.path().join(format!(".{name}.building4000000000"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("shard-00000.ids"), b"half").unwrap();
    let rebuilt = TokenStream::open_or_build(tmp.path(), &corpus, &tok).unwrap();
    assert!(!rebuilt.reused());
    assert_eq!(rebuilt.dir(), dir);
    assert_same_blocks(&MappedBlocks::new(rebuilt, &tok, 64).unwrap(), &expected);
    assert!(!stale.exists());
}
