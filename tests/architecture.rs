//! The crate's shape, checked: data flows one way (no module imports a stage after it), codecs
//! are pure, a format reaches another format only through the shared codecs, and only
//! `location` looks at the scheme. It reads the sources as text: `crate::` paths outside
//! comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use, bottom up.
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("dtype", &[]),
    ("streams", &[]),
    ("location", &["error"]),
    ("fetch", &["error", "location", "streams"]),
    ("tree", &["error", "dtype"]),
    ("materialize", &["error", "dtype", "tree", "streams"]),
    ("upload", &["error", "location", "fetch"]),
    (
        "format",
        &[
            "error", "dtype", "streams", "location", "fetch", "tree", "upload",
        ],
    ),
    (
        "save",
        &[
            "error",
            "dtype",
            "location",
            "fetch",
            "tree",
            "materialize",
            "upload",
            "format",
        ],
    ),
    ("copy", &["error", "location", "fetch", "upload", "format"]),
    (
        "verify",
        &["error", "location", "tree", "format", "materialize"],
    ),
    (
        "checkpointer",
        &["error", "location", "fetch", "tree", "format", "save"],
    ),
];

/// The pure codecs: bytes in, structs out. No I/O, no runtime, no store.
const CODECS: &[&str] = &[
    "format/safetensors/header.rs",
    "format/safetensors/index.rs",
    "format/zip/mod.rs",
    "format/pickle/mod.rs",
    "format/pickle/vm.rs",
    "format/pickle/convert.rs",
    "format/torch/codec.rs",
    "format/torch/pickled.rs",
    "format/pickle/emit.rs",
    "format/zip/writer.rs",
    "format/dcp/metadata.rs",
    "format/ckptio/manifest.rs",
    "format/torch/legacy.rs",
    "format/zstd.rs",
    "format/orbax/ocdbt.rs",
    "format/orbax/zarr.rs",
    "format/orbax/metadata.rs",
    "format/gguf/header.rs",
    "format/gguf/ggml.rs",
    "format/gguf/quant.rs",
];

/// What a codec may use.
const CODEC_USES: &[&str] = &["error", "dtype", "tree", "format"];

/// What a format folder may use of the other formats: the shared codecs, and torch's archive
/// reader (a DCP data file concatenates `torch.save` archives).
const SHARED: &[&str] = &[
    "zip",
    "pickle",
    "torch::codec",
    "torch::archive",
    "safetensors::header",
    "zstd",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The source of `path` without comments and `#[cfg(test)]` modules (tests may reach anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b::c` path in `code`, as `a::b::c` (three segments at most; `{…}` groups
/// opened).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        paths(rest, "", &mut out);
    }
    out
}

fn paths(text: &str, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(group) = text.strip_prefix('{') {
        let end = matching_brace(group);
        for item in split_top(&group[..end]) {
            paths(item.trim(), prefix, out);
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        if !prefix.is_empty() {
            out.insert(prefix.to_owned());
        }
        return;
    }
    let path = if prefix.is_empty() {
        ident.clone()
    } else {
        format!("{prefix}::{ident}")
    };
    let after = &text[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) if path.matches("::").count() < 2 => paths(more, &path, out),
        _ => {
            out.insert(path);
        }
    }
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// Each library source file (relative to `src/`, `/`-separated) and the crate paths it uses.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter(|f| !f.starts_with(src().join("bin")))
        .map(|f| {
            let name = f
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (name, crate_paths(&code(&f)))
        })
        .collect()
}

fn top(file: &str) -> &str {
    file.split(['/', '.']).next().unwrap()
}

#[test]
fn the_path_parser_sees_groups_and_nested_paths() {
    let found = crate_paths(
        "use crate::{error::{Error, Result}, tree::Tensor};\nlet x = crate::format::torch::codec::f();",
    );
    let want: BTreeSet<String> = [
        "error::Error",
        "error::Result",
        "tree::Tensor",
        "format::torch::codec",
    ]
    .map(String::from)
    .into();
    assert_eq!(found, want);
}

#[test]
fn every_module_uses_only_the_stages_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (file, paths) in uses() {
        let module = top(&file);
        let Some(may) = allowed.get(module) else {
            assert!(
                matches!(module, "lib" | "testing"),
                "{file}: module `{module}` has no layer; add it to LAYERS"
            );
            continue;
        };
        for path in paths {
            let used = path.split("::").next().unwrap();
            // The unit tests' helpers (compiled only for them) serve every stage.
            if used != module && used != "testing" && !may.contains(&used) {
                wrong.push(format!("{file} uses crate::{path}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the flow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn codecs_are_pure() {
    let uses = uses();
    let mut wrong = Vec::new();
    for codec in CODECS {
        let paths = uses
            .get(*codec)
            .unwrap_or_else(|| panic!("{codec} is gone: update CODECS"));
        for path in paths {
            let used = path.split("::").next().unwrap();
            let io = path.starts_with("format::object") || path.starts_with("format::probe");
            if !CODEC_USES.contains(&used) || io {
                wrong.push(format!("{codec} uses crate::{path}"));
            }
        }
        let text = code(&src().join(codec));
        for word in ["tokio", "object_store", "async fn", ".await"] {
            if text.contains(word) {
                wrong.push(format!("{codec} mentions `{word}`"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "codecs that are not pure:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn formats_reach_each_other_only_through_shared_codecs() {
    let mut wrong = Vec::new();
    for (file, paths) in uses() {
        let Some(rest) = file.strip_prefix("format/") else {
            continue;
        };
        let Some((folder, _)) = rest.split_once('/') else {
            continue; // format/mod.rs, probe.rs, object.rs pick readers: they may.
        };
        for path in paths {
            let Some(other) = path.strip_prefix("format::") else {
                continue;
            };
            let target = other.split("::").next().unwrap();
            let shared = SHARED
                .iter()
                .any(|s| other == *s || other.starts_with(&format!("{s}::")) || *s == target);
            if target != folder && !shared && !matches!(target, "ReadOptions" | "Format" | "object")
            {
                wrong.push(format!("{file} uses crate::{path}"));
            }
        }
    }
    assert!(wrong.is_empty(), "formats tangled:\n{}", wrong.join("\n"));
}

#[test]
fn only_location_looks_at_the_scheme() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let wrong: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src().join("location")))
        .filter(|f| code(f).contains("Scheme::"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "scheme matched outside location: {wrong:?}"
    );
}

#[test]
fn the_binary_uses_only_the_public_api() {
    let mut files = Vec::new();
    rust_files(&src().join("bin"), &mut files);
    for f in files {
        let text = code(&f);
        assert!(
            !text.contains("__fuzz"),
            "{}: uses the fuzz entry points",
            f.display()
        );
    }
}
