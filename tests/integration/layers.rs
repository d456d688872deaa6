//! The layers point one way (docs/ARCHITECTURE.md, "Layers"): every `crate::<module>`
//! a source file of `src/` names is checked against the layer order below. Comments
//! and `#[cfg(test)]` code are not counted (a test may build a demo collection).
//! This is the tool the architecture's "no circle, nothing upward" rule is checked by.

use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may name those of lower
/// layers only; modules of one layer never name each other.
const LAYERS: &[&[&str]] = &[
    // Leaves: name nothing of the crate.
    &["metrics", "fetch", "client", "host"],
    &["storage"],
    &["snapshot", "demo"],
    &["backup"],
    &["cluster"],
    &["service"],
    // Adapters: one protocol each, never each other.
    &["api", "grpc", "fs", "cli"],
    &["config"],
    &["daemon"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file of `src/` belongs to (`src/fs/stored.rs` → `fs`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
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

/// The modules named as `crate::<name>` in `text`, outside comments and after
/// the file's `#[cfg(test)]` tests.
fn named_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match code.find("//") {
            Some(at) => &code[..at],
            None => code,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn layers_point_one_way() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let module = module_of(&src, file);
        // The binary's entry point and the library root name everything.
        if module == "main" || module == "lib" || file.ends_with("tests.rs") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            checked += 1;
            if named == module {
                continue;
            }
            match layer_of(&named) {
                Some(layer) if layer < own => {}
                _ => wrong.push(format!(
                    "{}: `{module}` names `crate::{named}`",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(checked > 100, "the check found only {checked} names");
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_name() {
    // The parser the rule relies on: names in code count, names in comments and
    // tests do not.
    let text = "use crate::api::x;\n// crate::grpc in a comment\nlet a = crate::fs::y; // crate::cli\n#[cfg(test)]\nmod tests { use crate::demo; }\n";
    assert_eq!(named_modules(text), ["api", "fs"]);
    assert!(layer_of("api") > layer_of("service"));
}
