//! A Hugging Face model directory whose `config.json` is the input and whose weights and
//! inputs are a committed fixture's: the config checked against real weights, the model
//! built, and `forward` run on the fixture's inputs. The input's first byte picks the
//! fixture; the rest is `config.json`.
#![no_main]
#[path = "common.rs"]
mod common;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$((
            $name,
            include_bytes!(concat!("../../fixtures/hf/", $name, "/model.safetensors")),
            include_bytes!(concat!("../../fixtures/hf/", $name, "/io.safetensors")),
        )),*]
    };
}

/// (name, model.safetensors, io.safetensors); the order is the seeds' first byte
/// (tests/fuzz/make_seeds.py writes the same list).
const FIXTURES: &[(&str, &[u8], &[u8])] = fixtures!(
    "bert_cls",
    "bert_mlm",
    "bert_model",
    "data2vec_audio",
    "hubert",
    "hubert_ln",
    "roberta_cls",
    "roberta_mlm",
    "roberta_model",
    "vit_classifier",
    "vit_mae_norm_pix",
    "vit_mae_raw",
    "vit_model",
    "w2v2_group",
    "w2v2_legacy",
    "w2v2_stable",
);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, config)) = data.split_first() else {
        return;
    };
    let (_, weights, io) = FIXTURES[pick as usize % FIXTURES.len()];
    let dir = common::scratch().join("model");
    std::fs::create_dir_all(&dir).expect("the model directory");
    std::fs::write(dir.join("config.json"), config).expect("writing config.json");
    std::fs::write(dir.join("model.safetensors"), weights).expect("writing the weights");
    let inputs = common::file("io.safetensors", io);
    let out = common::scratch().join("out.safetensors");
    let model = dir.to_str().unwrap();
    if let Err(e) = pretext::apply::forward(model, &inputs, &out, &Device::Cpu) {
        // The config's fault names it (or the directory); the inputs' fault names io.safetensors.
        common::names(&e, "pretext-fuzz-");
    }
});
