//! The crate's layer order (docs/architecture.md, "Layers") holds: every `crate::…` a
//! top-level module names outside its unit tests is a module of a lower layer, and every
//! top-level module has its place in the order. And files stay small: none in `src/`
//! over 600 lines (split by concern when one grows).

use std::collections::BTreeMap;
use std::path::Path;

/// From the ground up; modules on one line share a layer and do not name each other.
const LAYERS: &[&[&str]] = &[
    &["error", "clock", "prehashed"],
    &["mcp"],
    &["config"],
    &["telemetry"],
    &["security", "transform"],
    &["upstream"],
    &["cache"],
    &["state"],
    &["live"],
    &["federation", "transport"],
    &["proxy"],
    &["admin", "lifecycle"],
    &["control", "app"],
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's code (its `#[cfg(test)] mod` left out) names.
fn named_modules(text: &str, known: &BTreeMap<&str, usize>) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = Vec::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b};`: every first segment of the group.
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name = word(part.trim());
                if known.contains_key(name.as_str()) {
                    out.push(name);
                }
            }
        } else {
            let name = word(rest);
            if known.contains_key(name.as_str()) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn every_module_names_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i)))
        .collect();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        if !path.is_dir() && path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let Some(&own) = rank.get(name.as_str()) else {
            problems.push(format!(
                "src/{name}: not in the layer order (add it to docs/architecture.md and this test)"
            ));
            continue;
        };
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for dep in named_modules(&text, &rank) {
                if dep != name && rank[dep.as_str()] >= own {
                    problems.push(format!(
                        "{}: names crate::{dep} (layer {}), but {name} is layer {own}",
                        file.strip_prefix(&src).unwrap().display(),
                        rank[dep.as_str()]
                    ));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut big: Vec<_> = files
        .iter()
        .map(|f| (std::fs::read_to_string(f).unwrap().lines().count(), f))
        .filter(|(n, _)| *n > 600)
        .map(|(n, f)| format!("{}: {n} lines", f.strip_prefix(&src).unwrap().display()))
        .collect();
    big.sort();
    assert!(
        big.is_empty(),
        "split these by concern:\n{}",
        big.join("\n")
    );
}
