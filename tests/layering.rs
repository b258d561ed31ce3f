//! The direction of dependency inside `src/`, enforced:
//!
//! ```text
//! error ← device, limits ← input ← tensor_io ← params, plot ← backbone ← train ← modality
//!       ← objective ← head, hf ← recipe ← run ← apply, inspect ← cli
//! ```
//!
//! A module may use only modules to its left: the backbone knows nothing of modalities,
//! `hf/` (model files in and out) never reaches into the pipeline (`recipe`, `run`), and
//! only the CLI sees everything. `head` and `hf` are peers and do not use each other.
//! Everything about one modality is one folder, `src/modality/<m>/`: its `recipe.rs` (its
//! recipe section and checks) belongs to the recipe layer and its `run/` folder (how the
//! pipeline reads, batches and trains it) to the run layer; the rest to the modality layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const RANKS: &[(&str, usize)] = &[
    ("error", 0),
    ("device", 1),
    ("limits", 1),
    ("draws", 1),
    ("dist", 1),
    ("input", 2),
    ("tensor_io", 3),
    ("plot", 4),
    ("params", 4),
    ("backbone", 5),
    ("train", 6),
    ("modality", 7),
    ("objective", 8),
    ("head", 9),
    ("hf", 9),
    ("recipe", 10),
    ("run", 11),
    ("apply", 12),
    ("inspect", 12),
    ("cli", 13),
];

fn rank(module: &str) -> Option<usize> {
    RANKS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer of a module path inside `src/` (`["modality", "image", "run", ...]`): its
/// top-level module, except that a modality's `recipe.rs` belongs to the recipe layer and
/// its `run/` folder to the run layer, so that everything about one modality is one folder.
fn layer(path: &[String]) -> String {
    match path {
        [m, _, sub, ..] if m == "modality" && sub == "run" => "run".into(),
        [m, _, sub, ..] if m == "modality" && sub == "recipe" => "recipe".into(),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The module paths a source text names through `crate::` (`use crate::{a::X, b::{c, d}};`
/// gives `a::X`, `b::c`, `b::d`), each cut to its first three segments. Comments are skipped.
fn crate_paths(text: &str) -> BTreeSet<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        use_tree(&code[i + "crate::".len()..], Vec::new(), &mut found);
    }
    found.retain(|p| !p.is_empty() && !p[0].is_empty());
    found
}

/// Reads one use tree from the start of `rest` with `prefix` before it; returns how many
/// bytes it read.
fn use_tree(rest: &str, mut prefix: Vec<String>, found: &mut BTreeSet<Vec<String>>) -> usize {
    let mut at = 0;
    loop {
        let s = &rest[at..];
        let skipped = s.len() - s.trim_start().len();
        at += skipped;
        let s = &rest[at..];
        if let Some(inner) = s.strip_prefix('{') {
            at += 1;
            let mut used = 0;
            loop {
                used += use_tree(&inner[used..], prefix.clone(), found);
                let tail = &inner[used..];
                let ws = tail.len() - tail.trim_start().len();
                used += ws;
                match inner[used..].chars().next() {
                    Some(',') => used += 1,
                    Some('}') => return at + used + 1,
                    _ => return at + used,
                }
            }
        }
        let ident: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        at += ident.len();
        prefix.push(ident);
        match rest[at..].strip_prefix("::") {
            Some(_) => at += 2,
            None => break,
        }
    }
    prefix.truncate(3);
    found.insert(prefix);
    at
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let segments: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        let module = layer(&segments);
        if module == "lib" || module == "main" {
            continue;
        }
        let own = rank(&module).unwrap_or_else(|| {
            panic!("src/{module} has no place in RANKS: add it to the layering")
        });
        let text = std::fs::read_to_string(file).unwrap();
        if module == "modality" {
            // A modality's data and encoder code must not reach up into its own recipe or
            // run code through relative paths either.
            for upward in ["super::run", "super::recipe", "self::run", "use run::"] {
                if text.contains(upward) {
                    broken.push(format!("src/{} uses {upward}", rel.display()));
                }
            }
        }
        for path in crate_paths(&text) {
            let used = layer(&path);
            if used == module || used == "Error" || used == "Result" {
                continue;
            }
            let r = rank(&used)
                .unwrap_or_else(|| panic!("{} uses unknown crate::{used}", rel.display()));
            if r >= own {
                broken.push(format!(
                    "src/{} uses crate::{} (layer {used})",
                    rel.display(),
                    path.join("::")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layering broken:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_parser_sees_braced_and_plain_paths() {
    let found = crate_paths(
        "use crate::{error::X, hf};\nlet x = crate::run::start();\n// crate::cli\n\
         use crate::modality::{image::run::prepare, text::{recipe, TextEncoder}};\n",
    );
    let layers: BTreeSet<String> = found.iter().map(|p| layer(p)).collect();
    assert_eq!(
        layers.into_iter().collect::<Vec<_>>(),
        ["error", "hf", "modality", "recipe", "run"]
    );
    assert!(found.contains(&vec![
        "modality".into(),
        "text".into(),
        "TextEncoder".into()
    ]));
}

#[test]
fn the_cli_takes_its_device_from_the_device_flag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("cli.rs")];
    if src.join("cli").is_dir() {
        rust_files(&src.join("cli"), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("Device::Cpu"),
            "{} hard-codes Device::Cpu; use the verb's --device",
            file.display()
        );
    }
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|&(_, n)| n > 600)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split these into modules with one job each: {long:?}"
    );
}
