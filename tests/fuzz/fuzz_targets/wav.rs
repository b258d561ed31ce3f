//! WAV files: headers, sample formats, rates, lengths, non-finite samples.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("input.wav", data);
    match pretext::modality::audio::wav::read_wav(&path) {
        Err(e) => common::names(&e, "input.wav"),
        Ok(w) => assert!(w.samples.iter().all(|s| s.is_finite()), "non-finite samples"),
    }
});
