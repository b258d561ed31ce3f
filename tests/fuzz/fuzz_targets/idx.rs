//! IDX image and label files, raw or gzip-compressed.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pretext::modality::image::idx;

fuzz_target!(|data: &[u8]| {
    let path = common::file("input-idx-ubyte", data);
    if let Err(e) = idx::read_idx_images(&path) {
        common::names(&e, "input-idx-ubyte");
    }
    if let Err(e) = idx::read_idx_labels(&path) {
        common::names(&e, "input-idx-ubyte");
    }
});
