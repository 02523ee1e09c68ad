//! The library's layers, checked from its source: a module may use its own layer and the layers
//! below it, never one above, so that no change can quietly bring back an import cycle. The order is
//! the one `src/lib.rs` lists; `kernels/` may use nothing outside the standard library, rayon, libc and
//! the `gemm` crate, by `use` or by a path written out.

use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, bottom to top; modules on one line are independent of each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["kernels"],
    &["rng"],
    &["files"],
    &["ops"],
    &["cache"],
    &["weights"],
    &["nn"],
    &["tokenizer"],
    &["batch"],
    &["model"],
    &["loss", "pooling", "metrics", "plot", "generation", "bitext"],
    &["pipelines", "train", "masking"],
    &["search", "pretraining", "finetune"],
    &["vocab"],
];

/// What `kernels/` may use besides itself.
const KERNEL_CRATES: &[&str] = &[
    "std", "core", "rayon", "libc", "gemm", "crate", "super", "self",
];

/// The library's dependencies, as Rust names them (`candle-core` -> `candle_core`).
fn dependencies() -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(manifest).unwrap();
    let section = text.split("[dependencies]").nth(1).unwrap_or("");
    let section = section.split("\n[").next().unwrap_or("");
    section
        .lines()
        .filter_map(|line| line.split(['=', '.']).next())
        .map(|name| name.trim().replace('-', "_"))
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect()
}

/// A dependency outside [`KERNEL_CRATES`] that `line` names by a path (`candle_core::...`).
fn foreign_path<'a>(line: &str, dependencies: &'a [String]) -> Option<&'a str> {
    dependencies
        .iter()
        .filter(|d| !KERNEL_CRATES.contains(&d.as_str()))
        .find(|d| {
            line.match_indices(&format!("{d}::")).any(|(at, _)| {
                !line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
        .map(String::as_str)
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib").then_some(name)
}

/// The lines of code in `text`, comments left out (a `//` line, or what follows `//` on a line).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let code = line.split("//").next().unwrap_or("").trim();
        (!code.is_empty()).then_some((i + 1, code))
    })
}

/// Every `crate::NAME` a line mentions, as NAME.
fn crate_paths(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::` itself, not the tail of another word (`some_crate::`).
            line[..*at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(at, _)| {
            line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn violations() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let dependencies = dependencies();
    assert!(
        dependencies.iter().any(|d| d == "candle_core"),
        "read the dependencies: {dependencies:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = rank(&module) else {
            found.push(format!(
                "{}: module `{module}` is in no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line_number, line) in code_lines(&text) {
            let at = format!("{}:{line_number}", file.display());
            for target in crate_paths(line) {
                if target == module {
                    continue;
                }
                match rank(&target) {
                    Some(r) if r < own => {}
                    Some(_) => {
                        found.push(format!("{at}: `{module}` uses `{target}` (not below it)"))
                    }
                    None if target.chars().next().is_some_and(char::is_uppercase) => {} // a re-export
                    None => found.push(format!("{at}: `crate::{target}` is in no layer")),
                }
            }
            if module == "kernels" {
                if let Some(name) = foreign_path(line, &dependencies) {
                    found.push(format!("{at}: kernels use `{name}`"));
                }
                if let Some(used) = line.strip_prefix("use ") {
                    let root: String = used
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !KERNEL_CRATES.contains(&root.as_str()) {
                        found.push(format!("{at}: kernels use `{root}`"));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_layers() {
    let found = violations();
    assert!(
        found.is_empty(),
        "imports against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_layer_of_the_list_is_a_module_of_the_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for module in LAYERS.iter().flat_map(|layer| layer.iter()) {
        let exists =
            src.join(format!("{module}.rs")).is_file() || src.join(module).join("mod.rs").is_file();
        assert!(exists, "layer `{module}` has no module in src/");
    }
}

#[test]
fn the_checker_sees_a_path_against_the_layers() {
    // The parsing the checks above rely on.
    assert_eq!(crate_paths("use crate::model::BertModel;"), ["model"]);
    assert_eq!(
        crate_paths("let x = crate::kernels::cpu::avx512f() && my_crate::y;"),
        ["kernels"]
    );
    assert!(rank("kernels") < rank("model"));
    assert_eq!(
        code_lines("// use crate::model;\nlet a = 1; // crate::x")
            .map(|(_, l)| l)
            .collect::<Vec<_>>(),
        ["let a = 1;"]
    );
}
