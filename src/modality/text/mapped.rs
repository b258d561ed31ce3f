//! Blocks packed on demand from a mapped token stream ([`super::shards`]): what the
//! training loader gathers a batch from, without the corpus's blocks in memory.

use super::pack::{self, BlockSource, TokenBlocks};
use super::shards::TokenStream;
use super::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// The blocks `pack::pack_blocks` makes of a corpus, packed on demand from its mapped
/// [`TokenStream`]: block `i` is the same ids, attention mask and word ids.
#[derive(Debug)]
pub struct MappedBlocks {
    stream: TokenStream,
    tok: TextTokenizer,
    /// Tokens per block, specials included.
    pub seq_len: usize,
    chunk: usize,
    n: usize,
}

impl MappedBlocks {
    pub fn new(stream: TokenStream, tok: &TextTokenizer, max_len: usize) -> Result<Self> {
        let chunk = pack::chunk_len(max_len)?;
        let tokens = usize::try_from(stream.len()).map_err(|_| {
            Error::data(
                stream.dir(),
                "the token stream is too long for this machine",
            )
        })?;
        Ok(MappedBlocks {
            n: pack::block_count(tokens, chunk),
            stream,
            tok: tok.clone(),
            seq_len: max_len,
            chunk,
        })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The token stream behind the blocks.
    pub fn stream(&self) -> &TokenStream {
        &self.stream
    }

    /// The blocks `indices`, in that order, in memory.
    pub fn gather(&self, indices: &[usize]) -> Result<TokenBlocks> {
        let mut out = TokenBlocks::with_capacity(self.seq_len, indices.len());
        let (mut ids, mut words) = (
            Vec::with_capacity(self.chunk),
            Vec::with_capacity(self.chunk),
        );
        for &i in indices {
            if i >= self.n {
                return Err(Error::data(
                    self.stream.dir(),
                    format!("block {i} requested from {} blocks", self.n),
                ));
            }
            let start = (i * self.chunk) as u64;
            let end = (start + self.chunk as u64).min(self.stream.len());
            ids.clear();
            words.clear();
            self.stream.read(start..end, &mut ids, &mut words);
            pack::push_block(&mut out, &self.tok, &ids, &words);
        }
        Ok(out)
    }
}

impl BlockSource for MappedBlocks {
    fn gather_blocks(&self, indices: &[usize]) -> Result<TokenBlocks> {
        self.gather(indices)
    }
}
