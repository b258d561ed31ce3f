//! Recipe files: TOML, every section's keys and checks, and the memory estimate.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::scratch();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Beside the real recipes, so the data paths of the seeds resolve as theirs do.
    let file = &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/fuzz.toml");
    match pretext::recipe::load_str(text, file, &[]) {
        Err(e) => common::names(&e, "fuzz.toml"),
        Ok(loaded) => {
            let _ = pretext::recipe::memory::estimate(&loaded.recipe);
            // What `run` writes into a run directory reads back as the same recipe.
            let again = pretext::recipe::to_toml(&loaded.recipe);
            if let Err(e) = pretext::recipe::load_str(&again, file, &[]) {
                panic!("a resolved recipe does not load again: {e}\n{again}");
            }
        }
    }
});
