//! The direction of dependency inside `src/`, enforced:
//!
//! ```text
//! error ← device, tensor_io ← params ← backbone ← train ← modality ← objective
//!       ← head, hf ← recipe ← run ← apply, inspect ← cli
//! ```
//!
//! A module may use only modules to its left: the backbone knows nothing of modalities,
//! `hf/` (model files in and out) never reaches into the pipeline (`recipe`, `run`), and
//! only the CLI sees everything. `head` and `hf` are peers and do not use each other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const RANKS: &[(&str, usize)] = &[
    ("error", 0),
    ("device", 1),
    ("tensor_io", 1),
    ("params", 2),
    ("backbone", 3),
    ("train", 4),
    ("modality", 5),
    ("objective", 6),
    ("head", 7),
    ("hf", 7),
    ("recipe", 8),
    ("run", 9),
    ("apply", 10),
    ("inspect", 10),
    ("cli", 11),
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

/// The top-level modules a source text names through `crate::` paths, braces included
/// (`use crate::{a::X, b};`). Comments are skipped.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        found.insert(ident(&inner[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
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
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = rank(&module).unwrap_or_else(|| {
            panic!("src/{module} has no place in RANKS: add it to the layering")
        });
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_modules(&text) {
            if used == module || used == "Error" || used == "Result" {
                continue;
            }
            let r = rank(&used)
                .unwrap_or_else(|| panic!("{} uses unknown crate::{used}", rel.display()));
            if r >= own {
                broken.push(format!("src/{} uses crate::{used}", rel.display()));
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
    let found =
        crate_modules("use crate::{error::X, hf};\nlet x = crate::run::start();\n// crate::cli\n");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["error", "hf", "run"]
    );
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
