//! The safetensors reader (headers, byte ranges, dtypes, non-finite values) and the
//! checkpoint loader on top of it.
#![no_main]
#[path = "common.rs"]
mod common;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("input.safetensors", data);
    match pretext::tensor_io::read(&path, &Device::Cpu) {
        Err(e) => common::names(&e, "input.safetensors"),
        Ok(_) => {
            if let Err(e) = pretext::train::checkpoint::load(&path, &Device::Cpu) {
                common::names(&e, "input.safetensors");
            }
        }
    }
});
