//! A Hugging Face model directory's `config.json`: every family's parser, the sizes it
//! implies, and the loader up to the (absent) weights.
#![no_main]
#[path = "common.rs"]
mod common;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("config.json", data);
    let dir = path.parent().unwrap().to_str().unwrap();
    if let Err(e) = pretext::hf::source::load_any(dir, &Device::Cpu) {
        // Either the config's fault (naming it) or the weights' absence (naming the dir).
        common::names(&e, "pretext-fuzz-");
    }
});
