//! Orbax checkpoints end to end: the committed fixtures (written by jax and orbax-checkpoint,
//! `fixtures/orbax/make_orbax_fixtures.py`) read as Orbax restores them — OCDBT and per-array
//! layouts, sharded arrays in chunks, a CheckpointManager step's checkpointable — convert to
//! safetensors bit for bit, and broken databases are refused naming the file.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use ckptio::{Format, Int, Leaf, Node, OpenOptions, materialize_tree, open};
use serde_json::Value;
use support::cli::{ckptio, copy_dir, fixture, local, sha256, stderr};

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read(fixture("orbax/expected.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn every_fixture_reads_as_orbax_restores_it() {
    for (name, want) in expected() {
        let Value::Object(want) = want else { continue };
        let checkpoint = open(
            &local(&fixture(&format!("orbax/{name}"))),
            OpenOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(matches!(checkpoint.format, Format::Orbax { .. }), "{name}");
        let tensors: BTreeMap<String, ckptio::Tensor> =
            materialize_tree(&checkpoint.tree, Default::default())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .collect();
        for (path, w) in &want {
            if let Some(value) = w.get("value") {
                let got = checkpoint
                    .tree
                    .get(path)
                    .unwrap_or_else(|| panic!("{name}: {path}"));
                match (got, value) {
                    (Node::Leaf(Leaf::Int(Int::Small(i))), Value::Number(n)) => {
                        assert_eq!(Some(*i), n.as_i64(), "{name}: {path}")
                    }
                    (Node::Leaf(Leaf::Float(f)), Value::Number(n)) => {
                        assert_eq!(Some(*f), n.as_f64(), "{name}: {path}")
                    }
                    (Node::Leaf(Leaf::Str(s)), Value::String(w)) => {
                        assert_eq!(s, w, "{name}: {path}")
                    }
                    other => panic!("{name}: {path}: {other:?}"),
                }
                continue;
            }
            let t = tensors
                .get(path)
                .unwrap_or_else(|| panic!("{name}: no tensor {path}"));
            assert_eq!(t.dtype.name(), w["dtype"], "{name}: {path}");
            let shape: Vec<u64> = serde_json::from_value(w["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{name}: {path}");
            assert_eq!(sha256(&t.data), w["sha256"], "{name}: {path}");
        }
        let leaves = checkpoint.tree.leaves().count();
        assert_eq!(leaves, want.len(), "{name}: every leaf, no more");
    }
}

#[tokio::test]
async fn a_manager_step_opens_its_default_checkpointable_and_converts_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let step = fixture("orbax/manager/2");
    let checkpoint = open(&local(&step), OpenOptions::default()).await.unwrap();
    assert_eq!(checkpoint.metadata["orbax.checkpointable"], "default");
    let out = ckptio(
        dir.path(),
        &["convert", step.to_str().unwrap(), "out.safetensors", "-q"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let converted = open(
        &local(&dir.path().join("out.safetensors")),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let want = expected();
    let tensors = materialize_tree(&converted.tree, Default::default())
        .await
        .unwrap();
    assert_eq!(tensors.len(), 9);
    for (path, t) in tensors {
        // A safetensors name is the whole path, one key: `/` is escaped in tree paths.
        let path = path.replace("%2F", "/");
        assert_eq!(
            sha256(&t.data),
            want["manager/2"][&path]["sha256"],
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_orbax_checkpoint_converts_to_the_ckptio_layout_whole_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("orbax/standard");
    let out = ckptio(dir.path(), &["verify", src.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ckptio(
        dir.path(),
        &["convert", src.to_str().unwrap(), "ckpt", "-q"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let original = open(&local(&src), OpenOptions::default()).await.unwrap();
    let converted = open(&local(&dir.path().join("ckpt")), OpenOptions::default())
        .await
        .unwrap();
    assert!(matches!(converted.format, Format::Ckptio { .. }));
    // The whole tree: the same tensors, bit for bit, and the same values (`step`, `opt_state`'s
    // list) at the same paths.
    let want = materialize_tree(&original.tree, Default::default())
        .await
        .unwrap();
    let got = materialize_tree(&converted.tree, Default::default())
        .await
        .unwrap();
    assert_eq!(got, want);
    assert!(matches!(
        converted.tree.get("step"),
        Some(Node::Leaf(Leaf::Int(Int::Small(7))))
    ));
    assert!(matches!(
        converted.tree.get("opt_state/1"),
        Some(Node::List(_))
    ));
}

/// A copy of the `standard` fixture in `dir`, with `edit` applied to the file it names.
fn broken(dir: &Path, edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let src = fixture("orbax/standard");
    let dst = dir.join("standard");
    copy_dir(&src, &dst);
    edit(&dst);
    dst
}

#[tokio::test]
async fn broken_databases_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(path, bytes).unwrap();
    };
    type Edit = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "manifest",
            Box::new(move |d: &Path| flip(&d.join("manifest.ocdbt"))),
            "CRC-32C",
        ),
        (
            "node",
            Box::new(move |d: &Path| {
                let data = std::fs::read_dir(d.join("d"))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                flip(&data.path());
            }),
            "CRC-32C",
        ),
        (
            "metadata",
            Box::new(|d: &Path| std::fs::write(d.join("_METADATA"), b"{\"x\": 1}").unwrap()),
            "_METADATA",
        ),
    ];
    for (i, (what, edit, says)) in cases.into_iter().enumerate() {
        let case = dir.path().join(i.to_string());
        let path = broken(&case, edit);
        let err = open(&local(&path), OpenOptions::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("standard") && err.contains(says),
            "{what}: {err}"
        );
    }
}

#[tokio::test]
async fn a_load_against_an_abstract_state_reports_what_does_not_match() {
    use ckptio::{DType, LazyTensor, StateTree};

    let checkpoint = open(&local(&fixture("orbax/standard")), OpenOptions::default())
        .await
        .unwrap();
    let abstract_state = |kernel: &[u64]| {
        let mut t = StateTree::new();
        for (path, dtype, shape) in [
            ("params/dense/kernel", DType::F32, kernel),
            ("params/dense/bias", DType::BF16, &[4][..]),
            ("params/embed", DType::I32, &[5, 2][..]),
            ("params/big", DType::F32, &[32, 32][..]),
        ] {
            t.insert(
                path,
                Node::from(LazyTensor::abstract_(dtype, shape.to_vec())),
            )
            .unwrap();
        }
        t
    };
    let report = checkpoint
        .tree
        .match_expected(&abstract_state(&[3, 4]), false)
        .unwrap();
    assert_eq!(report.matched.tensors().count(), 4);
    let err = checkpoint
        .tree
        .match_expected(&abstract_state(&[4, 3]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`params/dense/kernel`: expected F32 [4, 3], found F32 [3, 4]"),
        "{err}"
    );
}
