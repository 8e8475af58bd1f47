//! Running the `ckptio` binary and a Python with safetensors, for the end-to-end suites.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

/// A local path as a location.
pub fn local(path: &Path) -> ckptio::Location {
    ckptio::resolve(path.to_str().unwrap(), &Default::default()).unwrap()
}

/// The SHA-256 of `data`, in lowercase hex (how the fixtures' expected.json record bytes).
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the directory `src` to `dst`, recursively.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// A committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub async fn ckptio(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ckptio"))
        .current_dir(dir)
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_GCE_CHECK", "true")
        .output()
        .await
        .expect("run ckptio");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs ckptio expecting a failure whose message holds every one of `expected`.
pub async fn fails_with(dir: &Path, args: &[&str], expected: &[&str]) {
    let out = ckptio(dir, args).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    for want in expected {
        assert!(err.contains(want), "{args:?}: expected `{want}` in {err}");
    }
}

/// The Python that can read safetensors, if the environment has one.
pub fn python() -> Option<String> {
    let python = std::env::var("CKPTIO_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let required = std::env::var("CKPTIO_TEST_REQUIRE")
        .is_ok_and(|l| l.split(',').any(|n| n.trim() == "python"));
    assert!(
        python.is_some() || !required,
        "python is required (CKPTIO_TEST_REQUIRE) but CKPTIO_TEST_PYTHON is not set"
    );
    if python.is_none() {
        eprintln!("skipped: CKPTIO_TEST_PYTHON is not set");
    }
    python
}

/// Every tensor of the safetensors files `files` as Python's safetensors reads them (raw
/// dtype, shape and bytes), merged.
pub async fn python_reads(python: &str, files: &[PathBuf]) -> BTreeMap<String, Value> {
    let script = r#"
import json, sys
from safetensors import deserialize
out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for name, t in deserialize(f.read()):
            out[name] = {"dtype": t["dtype"], "shape": list(t["shape"]), "hex": bytes(t["data"]).hex()}
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}
