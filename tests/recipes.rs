//! Every recipe and model preset in the repository parses, validates, and dry-runs one
//! batch through its model.

use std::path::Path;

use pretext::recipe;

#[test]
fn every_recipe_checks_and_dry_runs() {
    let mut n = 0;
    let dirs = ["recipes", "benches/recipes"];
    let entries = dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            // Recipes whose data the fetch script provides are dry-run only when fetched.
            if recipe::check_paths(&loaded.recipe, &path).is_ok() {
                let report = pretext::run::dry_run(&loaded).unwrap_or_else(|e| panic!("{e}"));
                assert!(report.contains("is valid"), "{report}");
            }
            n += 1;
        }
    }
    // The shipped recipes and the three step-benchmark workloads.
    assert!(n >= 13, "only {n} recipes found");
}

#[test]
fn every_preset_file_is_shipped_and_valid() {
    let mut files: Vec<String> = std::fs::read_dir("models")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut built_in: Vec<String> = recipe::PRESETS.iter().map(|(n, _)| n.to_string()).collect();
    built_in.sort();
    assert_eq!(
        files, built_in,
        "models/*.toml and the presets built into the binary differ"
    );
    let quickstart = std::fs::read_to_string("recipes/quickstart.toml").unwrap();
    assert!(quickstart.contains("preset = \"vit-mini\""));
    for name in built_in {
        let text = quickstart.replace("preset = \"vit-mini\"", &format!("preset = \"{name}\""));
        let loaded = recipe::load_str(&text, Path::new("preset-test.toml"), &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.recipe.model.preset.as_deref(), Some(name.as_str()));
        assert!(
            loaded.recipe.model.encoder_config().validate().is_ok(),
            "{name}"
        );
    }
}
