//! `tokenizer.json` files, loaded as a run or `hf:` model would, then used once.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pretext::modality::text::tokenizer::TextTokenizer;

fuzz_target!(|data: &[u8]| {
    let path = common::file("tokenizer.json", data);
    match TextTokenizer::from_file(&path) {
        Err(e) => common::names(&e, "tokenizer.json"),
        Ok(tk) => {
            if let Ok(enc) = tk.encode("To be, or not to be: that is the question.", true) {
                let _ = tk.decode(&enc.ids, true);
            }
        }
    }
});
