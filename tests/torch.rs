//! PyTorch checkpoints end to end: every committed fixture (written by torch and Lightning,
//! `fixtures/torch/make_torch_fixtures.py`) reads as `torch.load` shows it, converts to
//! safetensors bit for bit, and bad or hostile files are refused with clear errors. A 1 GiB
//! torch file on S3 and HTTP is inspected for a few KiB.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use ckptio::Location;
use ckptio::{Int, LazyTensor, Leaf, Node, StateTree};
use ckptio::{MaterializeOptions, materialize, materialize_tree};
use ckptio::{OpenOptions, open};
use serde_json::Value;
use support::cli::{ckptio, fails_with, fixture, local, python, python_reads, sha256};

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read(fixture("torch/expected.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The fixtures that hold a tree (not the version strings).
fn fixtures() -> Vec<(String, BTreeMap<String, Value>)> {
    expected()
        .into_iter()
        .filter_map(|(name, tree)| match tree {
            Value::Object(map) => Some((name, map.into_iter().collect())),
            _ => None,
        })
        .collect()
}

async fn read_tree(loc: &Location) -> StateTree {
    open(loc, OpenOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .tree
}

fn leaf_matches(leaf: &Leaf, want: &Value) -> bool {
    match (leaf, want) {
        (Leaf::None, Value::Null) => true,
        (Leaf::Bool(a), Value::Bool(b)) => a == b,
        (Leaf::Int(Int::Small(a)), Value::Number(b)) => b.as_i64() == Some(*a),
        (Leaf::Int(Int::Big(a)), Value::String(b)) => a == b,
        (Leaf::Float(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (Leaf::Str(a), Value::String(b)) => a == b,
        _ => false,
    }
}

#[tokio::test]
async fn every_fixture_reads_as_torch_load_shows_it() {
    for (name, want) in fixtures() {
        let tree = read_tree(&local(&fixture(&format!("torch/{name}")))).await;
        let ours: BTreeMap<String, LazyTensor> =
            tree.tensors().map(|(p, t)| (p, t.clone())).collect();
        let theirs: Vec<&String> = want
            .iter()
            .filter(|(_, v)| v.get("dtype").is_some())
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            {
                let mut t = theirs.clone();
                t.sort();
                t
            },
            "{name}: tensor paths"
        );
        let data: BTreeMap<String, ckptio::Tensor> =
            materialize_tree(&tree, MaterializeOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .collect();
        for (path, w) in &want {
            if let Some(dtype) = w.get("dtype") {
                let t = &data[path];
                assert_eq!(t.dtype.name(), dtype.as_str().unwrap(), "{name}: {path}");
                let shape: Vec<u64> = serde_json::from_value(w["shape"].clone()).unwrap();
                assert_eq!(t.shape, shape, "{name}: {path}");
                assert_eq!(sha256(&t.data), w["sha256"], "{name}: {path} bytes");
                continue;
            }
            let node = tree
                .get(path)
                .unwrap_or_else(|| panic!("{name}: `{path}` is missing"));
            if let Some(value) = w.get("value") {
                let Node::Leaf(leaf) = node else {
                    panic!("{name}: `{path}` is not a leaf")
                };
                assert!(
                    leaf_matches(leaf, value),
                    "{name}: {path}: {leaf:?} vs {value}"
                );
            }
        }
    }
}

#[tokio::test]
async fn unknown_classes_are_opaque_and_strict_mode_names_them() {
    let loc = local(&fixture("torch/training_state.pt"));
    let tree = read_tree(&loc).await;
    let Some(Node::Leaf(Leaf::Opaque(info))) = tree.get("info") else {
        panic!("the script's own dataclass is an opaque node")
    };
    assert_eq!(info.name, "RunInfo");
    let strict = OpenOptions {
        read: ckptio::ReadOptions {
            strict: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = open(&loc, strict).await.unwrap_err().to_string();
    assert!(
        err.contains("global `__main__.RunInfo` is not allowed in strict mode"),
        "{err}"
    );
}

#[tokio::test]
async fn convert_writes_bit_identical_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for (name, want) in fixtures() {
        let out = dir.path().join(format!("{name}.safetensors"));
        let src = fixture(&format!("torch/{name}"));
        let run = ckptio(
            dir.path(),
            &[
                "convert",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                "-q",
            ],
        )
        .await;
        assert!(
            run.status.success(),
            "{name}: {}",
            support::cli::stderr(&run)
        );
        let file = read_tree(&local(&out)).await;
        for (path, w) in want.iter().filter(|(_, w)| w.get("sha256").is_some()) {
            let bytes = support::read_tensor(&file, &ckptio::path::escape(path)).await;
            assert_eq!(sha256(&bytes), w["sha256"], "{name}: {path}");
        }
        written.push((name, want, out));
    }
    let Some(python) = python() else { return };
    for (name, want, out) in written {
        let theirs = python_reads(&python, std::slice::from_ref(&out)).await;
        for (path, w) in want.iter().filter(|(_, w)| w.get("sha256").is_some()) {
            let t = &theirs[path];
            let bytes: Vec<u8> = (0..t["hex"].as_str().unwrap().len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&t["hex"].as_str().unwrap()[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(sha256(&bytes), w["sha256"], "python reads {name}: {path}");
        }
    }
}

#[tokio::test]
async fn convert_to_a_torch_file_keeps_every_tensor_and_value_or_names_what_it_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    for (name, want) in fixtures() {
        let src = fixture(&format!("torch/{name}"));
        let source = read_tree(&local(&src)).await;
        let opaque = source
            .leaves()
            .find(|(_, l)| matches!(l, ckptio::Leaf::Opaque(_)))
            .map(|(p, _)| p);
        let unreadable = source
            .tensors()
            .any(|(_, t)| matches!(t.data, ckptio::TensorData::Unreadable(_)));
        let out = dir.path().join(format!("{name}.pt"));
        let mut args = vec![
            "convert",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "-q",
        ];
        if unreadable {
            args.push("--skip-unreadable");
        }
        let run = ckptio(dir.path(), &args).await;
        if let Some(path) = opaque {
            assert!(
                !run.status.success(),
                "{name}: an opaque object was written"
            );
            let err = support::cli::stderr(&run);
            assert!(
                err.contains("cannot be written to a torch file"),
                "{name}: {err}"
            );
            assert!(
                err.contains(&format!("`{path}`: an object of class")),
                "{name}: {err}"
            );
            assert!(!out.exists(), "{name}: a partial file was left");
            continue;
        }
        assert!(
            run.status.success(),
            "{name}: {}",
            support::cli::stderr(&run)
        );
        let written = read_tree(&local(&out)).await;
        for (path, w) in want.iter().filter(|(_, w)| w.get("sha256").is_some()) {
            if source.get(&ckptio::path::escape(path)).is_none_or(|n| {
                matches!(n, Node::Leaf(ckptio::Leaf::Tensor(t)) if matches!(t.data, ckptio::TensorData::Unreadable(_)))
            }) {
                continue;
            }
            let bytes = support::read_tensor(&written, &ckptio::path::escape(path)).await;
            assert_eq!(sha256(&bytes), w["sha256"], "{name}: {path}");
        }
        let values = |t: &StateTree| -> Vec<String> {
            t.leaves()
                .filter(|(_, l)| !matches!(l, ckptio::Leaf::Tensor(_)))
                .map(|(p, l)| format!("{p} {l:?}"))
                .collect()
        };
        assert_eq!(values(&written), values(&source), "{name}");
    }
}

#[tokio::test]
async fn a_hostile_pickle_is_refused_naming_the_global_and_nothing_runs() {
    let marker = Path::new("/tmp/ckptio-pwned");
    let _ = std::fs::remove_file(marker);
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("torch/hostile.pt");
    let src = src.to_str().unwrap();
    for args in [
        vec!["inspect", src],
        vec!["convert", src, "out.safetensors"],
    ] {
        fails_with(
            dir.path(),
            &args,
            &["hostile.pt", "refused to load global `posix.system`"],
        )
        .await;
    }
    assert!(!marker.exists(), "the pickle's command ran");
    assert!(!dir.path().join("out.safetensors").exists());
}

#[tokio::test]
async fn a_legacy_file_opens_under_any_name_and_a_plain_pickle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = std::fs::read(fixture("torch/legacy_state.pt")).unwrap();
    // By its name (the zip's tail is read first), and by its first bytes under another name.
    for name in ["state.pt", "pytorch_model.bin", "state"] {
        std::fs::write(dir.path().join(name), &legacy).unwrap();
        let checkpoint = open(&local(&dir.path().join(name)), OpenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checkpoint.format, ckptio::Format::TorchLegacy, "{name}");
        assert_eq!(
            checkpoint.format.to_string(),
            "torch (legacy pickle stream)"
        );
        let shared = materialize_tree(
            &checkpoint.tree.subtree("shared").unwrap(),
            MaterializeOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(shared.len(), 3, "{name}");
    }
}

#[tokio::test]
async fn a_plain_pickle_reads_as_a_tree_and_hostile_or_torch_ones_are_refused() {
    let plain = open(&local(&fixture("torch/plain.pkl")), OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(plain.format, ckptio::Format::Pickle);
    let tensors = materialize_tree(&plain.tree, MaterializeOptions::default())
        .await
        .unwrap();
    let w = &tensors.iter().find(|(p, _)| p == "w").unwrap().1;
    assert_eq!((w.dtype, &w.shape[..]), (ckptio::DType::F32, &[2, 3][..]));
    let floats: Vec<f32> = w
        .data
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(matches!(
        plain.tree.get("nested/1/1"),
        Some(Node::Leaf(Leaf::Int(Int::Small(3))))
    ));

    let dir = tempfile::tempdir().unwrap();
    fails_with(
        dir.path(),
        &[
            "inspect",
            fixture("torch/plain_torch.pkl").to_str().unwrap(),
        ],
        &[
            "plain_torch.pkl",
            "a plain pickle of torch tensors",
            "save it with torch.save",
        ],
    )
    .await;
    let marker = dir.path().join("ran");
    let command = format!("touch {}", marker.display());
    let mut hostile = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    hostile.extend((command.len() as u32).to_le_bytes());
    hostile.extend(command.as_bytes());
    hostile.extend(b"\x85R.");
    std::fs::write(dir.path().join("hostile.pkl"), hostile).unwrap();
    fails_with(
        dir.path(),
        &["inspect", "hostile.pkl"],
        &["hostile.pkl", "refused to load global `posix.system`"],
    )
    .await;
    assert!(!marker.exists(), "the pickle's command ran");
}

/// The legacy fixture with `edit` applied, written to `dir/name`.
fn broken_legacy(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let mut bytes = std::fs::read(fixture("torch/legacy_state.pt")).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_broken_legacy_file_is_refused_naming_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let size = std::fs::read(fixture("torch/legacy_state.pt"))
        .unwrap()
        .len();
    for (path, says) in [
        (
            broken_legacy(dir.path(), "cut.pt", |b| b.truncate(b.len() - 3)),
            format!("runs past the end of the {}-byte file", size - 3),
        ),
        (
            broken_legacy(dir.path(), "long.pt", |b| b.extend([0; 5])),
            format!("but the file has {} bytes", size + 5),
        ),
        (
            broken_legacy(dir.path(), "head.pt", |b| b.truncate(300)),
            "the pickle ends before its STOP opcode".to_owned(),
        ),
    ] {
        let err = open(&local(&path), OpenOptions::default())
            .await
            .unwrap_err()
            .to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains(&says), "{err}: {says}");
    }

    // A storage's element count that disagrees with the pickle is found when it is read.
    let original = open(
        &local(&fixture("torch/legacy_state.pt")),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let w = original.tree.tensor("model/w").unwrap();
    let at = support::byte_range(w).start as usize - 8;
    let path = broken_legacy(dir.path(), "count.pt", |b| b[at] ^= 1);
    let checkpoint = open(&local(&path), OpenOptions::default()).await.unwrap();
    let w = checkpoint.tree.tensor("model/w").unwrap().clone();
    let err = materialize(vec![("model/w".into(), w)], MaterializeOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("count.pt") && err.contains("begins with an element count of Some(13)"),
        "{err}"
    );
}

/// Offset of the central directory record of `name`.
fn central_record(zip: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    (0..zip.len() - 46)
        .find(|&i| {
            zip[i..].starts_with(b"PK\x01\x02") && zip[i + 46..].starts_with(needle) && {
                let len = u16::from_le_bytes([zip[i + 28], zip[i + 29]]) as usize;
                len == needle.len()
            }
        })
        .unwrap_or_else(|| panic!("no central record for {name}"))
}

/// Writes `bytes` as `name` in `dir` and returns its path.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Where the record `name`'s payload starts, and its size, from its central directory record
/// and local header.
fn payload(zip: &[u8], name: &str) -> (usize, usize) {
    let central = central_record(zip, name);
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()) as usize;
    let size = u32_at(central + 24);
    let local = u32_at(central + 42);
    (local + 30 + u16_at(local + 26) + u16_at(local + 28), size)
}

/// `good` with `patch` applied, written as `name` in `dir`; its path.
fn patched(dir: &Path, name: &str, good: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = good.to_vec();
    patch(&mut bytes);
    write(dir, name, &bytes)
}

/// The byte at `at` of the central directory record of `entry`.
fn record_byte(zip: &[u8], entry: &str, at: usize) -> usize {
    central_record(zip, entry) + at
}

#[tokio::test]
async fn bad_archives_fail_with_clear_errors() {
    let good = std::fs::read(fixture("torch/views.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Truncated: the end records are gone.
    let cut = write(d, "cut.pt", &good[..good.len() / 2]);
    fails_with(d, &["inspect", &cut], &["cut.pt", "zip"]).await;

    // A stored entry marked as deflated.
    let compressed = patched(d, "compressed.pt", &good, |z| {
        let at = record_byte(z, "views/data/0", 10);
        z[at] = 8;
    });
    fails_with(
        d,
        &["inspect", &compressed],
        &["compressed.pt", "`views/data/0` is compressed"],
    )
    .await;

    // A storage record renamed away: the tensor's storage is missing.
    let missing = patched(d, "missing.pt", &good, |z| {
        let at = record_byte(z, "views/data/0", 46 + "views/data/".len());
        z[at] = b'x';
    });
    fails_with(
        d,
        &["inspect", &missing],
        &["missing.pt", "has no record `views/data/0`"],
    )
    .await;

    // A directory record lies about its name's length.
    let lying = patched(d, "lying.pt", &good, |z| {
        let at = record_byte(z, "views/data/0", 28);
        z[at..at + 2].copy_from_slice(&[0xff, 0xff]);
    });
    fails_with(
        d,
        &["inspect", &lying],
        &["lying.pt", "points past the end"],
    )
    .await;

    // data.pkl with a flipped byte: its CRC no longer matches.
    let (pkl_at, pkl_size) = payload(&good, "views/data.pkl");
    let flipped = patched(d, "flipped.pt", &good, |z| z[pkl_at + 10] ^= 0x20);
    fails_with(
        d,
        &["inspect", &flipped],
        &["flipped.pt", "`views/data.pkl` is corrupt", "CRC-32"],
    )
    .await;

    // An unknown opcode, with the CRC made to match: the pickle itself is refused.
    let opcode = patched(d, "opcode.pt", &good, |z| {
        z[pkl_at + 2] = 0xff;
        let crc = crc32fast::hash(&z[pkl_at..pkl_at + pkl_size]);
        let at = record_byte(z, "views/data.pkl", 16);
        z[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    });
    fails_with(
        d,
        &["inspect", &opcode],
        &[
            "opcode.pt",
            "`views/data.pkl`",
            "pickle byte 2: unknown opcode 0xff",
        ],
    )
    .await;

    // A flipped byte in a storage: inspecting works, reading names the tensor and the record.
    let (storage_at, _) = payload(&good, "views/data/0");
    let corrupt_path = patched(d, "corrupt.pt", &good, |z| z[storage_at + 4] ^= 1);
    let run = ckptio(d, &["inspect", &corrupt_path]).await;
    assert!(run.status.success());
    fails_with(
        d,
        &[
            "convert",
            &corrupt_path,
            "out.safetensors",
            "-q",
            "--select",
            "base",
        ],
        &[
            "corrupt.pt",
            "tensor `base`",
            "`views/data/0` is corrupt",
            "CRC-32",
        ],
    )
    .await;
    assert!(
        !d.join("out.safetensors").exists(),
        "nothing half-written is left"
    );
    let run = ckptio(
        d,
        &[
            "convert",
            &corrupt_path,
            "out.safetensors",
            "-q",
            "--select",
            "base",
            "--no-verify",
        ],
    )
    .await;
    assert!(run.status.success(), "--no-verify reads it anyway");
}

/// A torch-layout zip as torch writes it (stored entries, payloads padded to 64 bytes with an
/// `FB` extra field, data descriptors), around `pkl`.
fn torch_zip(records: &[(&str, Bytes)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in records {
        let offset = out.len();
        let start = offset + 30 + name.len() + 4;
        let pad = start.next_multiple_of(64) - start;
        let crc = crc32fast::hash(data);
        out.extend(b"PK\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00");
        out.extend([0u8; 12]);
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(((pad + 4) as u16).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(b"FB");
        out.extend((pad as u16).to_le_bytes());
        out.extend(std::iter::repeat_n(b'Z', pad));
        out.extend(data.iter());
        out.extend(b"PK\x07\x08");
        out.extend(crc.to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        central.extend(b"PK\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00");
        central.extend(crc.to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend([0u8; 12]);
        central.extend((offset as u32).to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend((records.len() as u16).to_le_bytes());
    out.extend((records.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// 1 GiB: four F32 [8192, 8192] storages and a [1024] bias around torch's own data.pkl.
fn gib_file() -> (Vec<u8>, Bytes) {
    let pkl = Bytes::from(std::fs::read(fixture("torch/gib.data.pkl")).unwrap());
    let weight = support::pattern(8192 * 8192 * 4);
    let bias = support::pattern(1024 * 4);
    let mut records = vec![
        ("archive/data.pkl", pkl.clone()),
        ("archive/.format_version", Bytes::from_static(b"1")),
        ("archive/.storage_alignment", Bytes::from_static(b"64")),
        ("archive/byteorder", Bytes::from_static(b"little")),
    ];
    let names = [
        "archive/data/0",
        "archive/data/1",
        "archive/data/2",
        "archive/data/3",
    ];
    records.extend(names.iter().map(|n| (*n, weight.clone())));
    records.push(("archive/data/4", bias.clone()));
    records.push(("archive/version", Bytes::from_static(b"3\n")));
    (torch_zip(&records), pkl)
}

async fn a_gib_pt_is_inspected_for_its_directory_and_pickle(backend: support::Backend) {
    if backend.read_only() {
        return;
    }
    let (file, pkl) = gib_file();
    let size = file.len() as u64;
    // 10 records (data.pkl, 4 small ones, 5 storages), each a central record and its name.
    let central = 10 * (46 + 24);
    backend.seed("gib.pt", file).await;

    let (loc, counts) = backend.location("gib.pt").counted();
    let tree = read_tree(&loc).await;
    assert_eq!(tree.tensors().count(), 5);
    let (requests, moved) = (counts.gets() + counts.heads(), counts.bytes());
    assert!(
        requests <= 4,
        "[{}] {requests} requests to inspect",
        backend.name
    );
    let budget = central + pkl.len() as u64 + (128 << 10);
    assert!(
        moved <= budget,
        "[{}] inspecting moved {moved} bytes of {size}; the budget is {budget}",
        backend.name
    );

    let one = |path: &str| {
        vec![(
            path.to_owned(),
            tree.tensors().find(|(p, _)| p == path).unwrap().1.clone(),
        )]
    };
    let got = materialize(one("head.bias"), MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(got[0].1.data, support::pattern(4096));
    assert_eq!(
        counts.gets() + counts.heads(),
        requests + 1,
        "[{}] one request",
        backend.name
    );
    let extra = counts.bytes() - moved - 4096;
    assert!(
        extra <= 128,
        "[{}] {extra} bytes beyond the tensor",
        backend.name
    );

    let before = counts.bytes();
    let got = materialize(one("layers.2.weight"), MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        sha256(&got[0].1.data),
        sha256(&support::pattern(8192 * 8192 * 4))
    );
    let extra = counts.bytes() - before - (256 << 20);
    assert!(
        extra <= 128,
        "[{}] {extra} bytes beyond the tensor",
        backend.name
    );
}

#[tokio::test]
async fn a_gib_pt_on_s3_is_inspected_for_its_directory_and_pickle() {
    support::run(
        "s3s",
        "torch-gib",
        a_gib_pt_is_inspected_for_its_directory_and_pickle,
    )
    .await;
}

#[tokio::test]
async fn a_gib_pt_over_http_is_inspected_for_its_directory_and_pickle() {
    support::run(
        "http",
        "torch-gib",
        a_gib_pt_is_inspected_for_its_directory_and_pickle,
    )
    .await;
}

#[tokio::test]
async fn a_gib_pt_in_memory_is_inspected_for_its_directory_and_pickle() {
    support::run(
        "memory",
        "torch-gib",
        a_gib_pt_is_inspected_for_its_directory_and_pickle,
    )
    .await;
}

/// A copy of a committed DCP fixture in a temporary directory.
fn dcp_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(&format!("torch/{name}"))).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[tokio::test]
async fn a_row_range_of_a_sharded_tensor_reads_only_the_chunks_it_overlaps() {
    let dir = dcp_copy("dcp_sharded");
    let (loc, counts) = local(dir.path()).counted();
    let tree = read_tree(&loc).await;
    let Some(Node::Leaf(Leaf::Tensor(w))) = tree.get("model/w") else {
        panic!("model/w is a tensor")
    };
    let ckptio::TensorData::Pieces(pieces) = &w.data else {
        panic!("model/w is assembled from pieces")
    };
    assert_eq!(pieces.boxes.len(), 2, "two ranks, two chunks");
    // Rank 1's file is replaced after opening: reading only rank 0's rows cannot notice.
    std::fs::write(dir.path().join("__1_0.distcp"), b"not what was listed").unwrap();
    let before = counts.bytes();
    let top = w.rows(1..3).unwrap();
    let got = materialize(vec![("w".into(), top)], MaterializeOptions::default())
        .await
        .unwrap();
    let want: Vec<u8> = (6..18).flat_map(|v| (v as f32).to_le_bytes()).collect();
    assert_eq!(got[0].1.shape, [2, 6]);
    assert_eq!(got[0].1.data, want);
    let chunk = std::fs::metadata(dir.path().join("__0_0.distcp"))
        .unwrap()
        .len();
    assert!(
        counts.bytes() - before <= chunk,
        "only rank 0's file was read"
    );
    // Rows from both halves need rank 1's file, which changed.
    let err = materialize(
        vec![("w".into(), w.rows(3..5).unwrap())],
        MaterializeOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("__1_0.distcp"), "{err}");
}

#[tokio::test]
async fn a_dcp_directory_without_its_metadata_or_a_data_file_fails_clearly() {
    let dir = dcp_copy("dcp_single");
    std::fs::remove_file(dir.path().join("__0_0.distcp")).unwrap();
    let path = format!("{}/", dir.path().display());
    fails_with(
        dir.path(),
        &["inspect", &path],
        &["__0_0.distcp", "missing"],
    )
    .await;
    std::fs::remove_file(dir.path().join(".metadata")).unwrap();
    fails_with(dir.path(), &["inspect", &path], &["not found"]).await;
}

/// Each way torch writes DCP: two ranks' shards, safetensors blobs, ZStandard-compressed items.
async fn dcp_reads_the_same_as_on_disk(backend: support::Backend) {
    for dcp in ["dcp_sharded", "dcp_safetensors", "dcp_zstd"] {
        let local_tree = read_tree(&local(&fixture(&format!("torch/{dcp}")))).await;
        backend
            .seed_dir(dcp, &fixture(&format!("torch/{dcp}")))
            .await;
        let tree = read_tree(&backend.location(&format!("{dcp}/"))).await;
        let paths = |t: &StateTree| t.leaves().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(paths(&tree), paths(&local_tree), "{dcp} [{}]", backend.name);
        let ours = materialize_tree(&tree, MaterializeOptions::default()).await;
        let ours = ours.unwrap_or_else(|e| panic!("{dcp} [{}] {e}", backend.name));
        let theirs = materialize_tree(&local_tree, MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(ours, theirs, "{dcp} [{}]", backend.name);
    }
}

#[tokio::test]
async fn a_dcp_checkpoint_reads_the_same_on_every_backend() {
    for name in support::BACKENDS {
        support::run(name, "torch-dcp", dcp_reads_the_same_as_on_disk).await;
    }
}

/// Lightning's sharded strategies (FSDP, DeepSpeed) save `epoch=1-step=8.ckpt` as a DCP
/// directory: named like a file, it is opened as the directory it is.
async fn a_directory_named_like_a_torch_file_opens_as_a_directory(backend: support::Backend) {
    let name = "epoch=1-step=8.ckpt";
    backend.seed_dir(name, &fixture("torch/dcp_sharded")).await;
    let local_tree = read_tree(&local(&fixture("torch/dcp_sharded"))).await;
    for uri in [name.to_owned(), format!("{name}/")] {
        let checkpoint = open(&backend.location(&uri), OpenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("[{}] {uri}: {e}", backend.name));
        assert!(
            matches!(checkpoint.format, ckptio::Format::Dcp { .. }),
            "[{}] {uri}: {:?}",
            backend.name,
            checkpoint.format
        );
        let paths = |t: &StateTree| t.leaves().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(
            paths(&checkpoint.tree),
            paths(&local_tree),
            "[{}]",
            backend.name
        );
    }
    let err = open(&backend.location("nothing.ckpt"), OpenOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ckptio::Error::NotFound { .. }),
        "[{}] {err}",
        backend.name
    );
}

#[tokio::test]
async fn a_sharded_lightning_checkpoint_opens_on_every_backend() {
    for name in support::BACKENDS {
        support::run(
            name,
            "torch-ckpt-dir",
            a_directory_named_like_a_torch_file_opens_as_a_directory,
        )
        .await;
    }
}

#[tokio::test]
async fn a_torch_file_under_any_name_is_found_by_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    std::fs::copy(fixture("torch/state_dict.pt"), &path).unwrap();
    let checkpoint = open(&local(&path), OpenOptions::default()).await.unwrap();
    assert_eq!(checkpoint.format, ckptio::Format::Torch);
    assert_eq!(checkpoint.tree.tensors().count(), 7);
}

/// Where the first record called `name` of the first archive in `file` has its payload, and
/// its size: the first local header and central record of that name (a DCP data file
/// concatenates archives whose records share names; the first starts at byte 0).
fn first_payload(file: &[u8], name: &str) -> (usize, usize) {
    let local = (0..file.len() - 30)
        .find(|&i| {
            file[i..].starts_with(b"PK\x03\x04") && file[i + 30..].starts_with(name.as_bytes())
        })
        .unwrap_or_else(|| panic!("no local header for {name}"));
    let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]) as usize;
    let central = central_record(file, name);
    let size = u32::from_le_bytes(file[central + 24..central + 28].try_into().unwrap()) as usize;
    (local + 30 + u16_at(local + 26) + u16_at(local + 28), size)
}

/// Opens the DCP directory `dir` with `read` and materializes every tensor.
async fn read_dcp(dir: &Path, read: ckptio::ReadOptions) -> ckptio::Result<()> {
    let options = OpenOptions {
        read,
        ..Default::default()
    };
    let tree = open(&local(dir), options).await?.tree;
    materialize_tree(&tree, MaterializeOptions::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn no_verify_reaches_the_chunks_of_a_dcp_checkpoint() {
    let dir = dcp_copy("dcp_sharded");
    let path = dir.path().join("__0_0.distcp");
    let mut file = std::fs::read(&path).unwrap();
    let (storage, _) = first_payload(&file, "archive/data/0");
    file[storage] ^= 0x01;
    std::fs::write(&path, file).unwrap();
    let err = read_dcp(dir.path(), Default::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("__0_0.distcp") && text.contains("is corrupt") && text.contains("CRC-32"),
        "{text}"
    );
    let unchecked = ckptio::ReadOptions {
        verify: false,
        ..Default::default()
    };
    read_dcp(dir.path(), unchecked)
        .await
        .expect("--no-verify reads the flipped chunk");
}

#[tokio::test]
async fn verify_reads_each_data_file_of_a_dcp_checkpoint_once_and_names_a_flipped_byte() {
    let dir = dcp_copy("dcp_sharded");
    let (loc, counts) = local(dir.path()).counted();
    read_tree(&loc).await;
    let opened = counts.gets();
    let checked = ckptio::verify(&loc, OpenOptions::default()).await.unwrap();
    assert_eq!(
        counts.gets() - opened,
        opened + 2,
        "opened again, then the chunks of 3 tensors in 2 data files"
    );
    assert_eq!(
        (checked.tensors, checked.checked),
        (3, 3),
        "every chunk is a torch.save archive with its CRC-32s"
    );

    let path = dir.path().join("__0_0.distcp");
    let mut file = std::fs::read(&path).unwrap();
    let (storage, _) = first_payload(&file, "archive/data/0");
    file[storage] ^= 0x01;
    std::fs::write(&path, file).unwrap();
    let err = ckptio::verify(&local(dir.path()), OpenOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("__0_0.distcp") && text.contains("CRC-32"),
        "{text}"
    );
}

#[tokio::test]
async fn verify_reads_the_compressed_chunks_of_a_dcp_checkpoint() {
    let src = local(&fixture("torch/dcp_zstd"));
    let tensors = read_tree(&src).await.tensors().count();
    let checked = ckptio::verify(&src, OpenOptions::default()).await.unwrap();
    assert_eq!((checked.tensors, checked.checked), (tensors, tensors));
}

#[tokio::test]
async fn strict_reaches_the_chunks_of_a_dcp_checkpoint() {
    let dir = dcp_copy("dcp_sharded");
    let path = dir.path().join("__0_0.distcp");
    let mut file = std::fs::read(&path).unwrap();
    let (pkl, size) = first_payload(&file, "archive/data.pkl");
    // The first chunk's backward hooks become an OrderedDicX: unknown, but inert.
    let at = pkl
        + file[pkl..pkl + size]
            .windows(11)
            .position(|w| w == b"OrderedDict")
            .expect("the chunk pickles an OrderedDict");
    file[at + 10] = b'X';
    let crc = crc32fast::hash(&file[pkl..pkl + size]);
    let central = central_record(&file, "archive/data.pkl");
    file[central + 16..central + 20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, file).unwrap();
    read_dcp(dir.path(), Default::default())
        .await
        .expect("an unknown class is an inert node by default");
    let strict = ckptio::ReadOptions {
        strict: true,
        ..Default::default()
    };
    let err = read_dcp(dir.path(), strict).await.unwrap_err();
    assert!(matches!(err, ckptio::Error::Unsafe { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("global `collections.OrderedDicX` is not allowed in strict mode"),
        "{err}"
    );
}

#[tokio::test]
async fn a_directory_without_a_checkpoint_says_so_and_lists_what_it_holds() {
    let dir = dcp_copy("dcp_single");
    std::fs::remove_file(dir.path().join(".metadata")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
    for uri in [
        format!("{}/", dir.path().display()),
        dir.path().display().to_string(),
    ] {
        let err = open(&local(Path::new(&uri)), OpenOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ckptio::Error::NoCheckpoint { .. }), "{err:?}");
        let text = err.to_string();
        for part in [
            "holds no checkpoint ckptio reads",
            "__0_0.distcp",
            "notes.txt",
            "without `.metadata` is a save that did not finish",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("not found"), "{text}");
    }
}

#[tokio::test]
async fn tensors_ckptio_does_not_read_are_shown_and_refused_by_name() {
    let loc = local(&fixture("torch/unreadable.pt"));
    let tree = read_tree(&loc).await;
    let shown: BTreeMap<String, (String, Vec<u64>, Option<String>)> = tree
        .tensors()
        .map(|(p, t)| {
            let what = match &t.data {
                ckptio::TensorData::Unreadable(u) => Some(u.what.to_string()),
                _ => None,
            };
            (p, (t.dtype.name().to_owned(), t.shape.clone(), what))
        })
        .collect();
    let what = |path: &str| shown[path].2.clone().unwrap_or_default();
    assert_eq!(shown.len(), 7, "every tensor is listed: {shown:?}");
    assert!(
        what("q").contains("quantized") && what("q").contains("qint8"),
        "{}",
        what("q")
    );
    assert!(what("qc").contains("per_channel_affine"), "{}", what("qc"));
    assert_eq!(
        (shown["q"].0.as_str(), shown["q"].1.as_slice()),
        ("I8", &[3][..])
    );
    assert!(what("sparse").contains("sparse_coo"), "{}", what("sparse"));
    assert!(what("csr").contains("sparse_csr"), "{}", what("csr"));
    assert_eq!(shown["sparse"].1, [2, 2], "the dense shape");
    assert!(
        what("nested").contains("nested tensor of 2"),
        "{}",
        what("nested")
    );
    assert!(what("meta").contains("meta tensor"), "{}", what("meta"));
    assert_eq!(shown["meta"].1, [2, 3]);
    assert!(shown["ok"].2.is_none());

    let one = |path: &str| {
        vec![(
            path.to_owned(),
            tree.tensors().find(|(p, _)| p == path).unwrap().1.clone(),
        )]
    };
    let err = materialize(one("q"), MaterializeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ckptio::Error::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string().contains("tensor `q` is a quantized tensor"),
        "{err}"
    );
    materialize(one("ok"), MaterializeOptions::default())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let src = fixture("torch/unreadable.pt");
    let src = src.to_str().unwrap();
    fails_with(
        dir.path(),
        &["convert", src, "out.safetensors"],
        &[
            "6 tensor(s) ckptio does not read",
            "`q` (a quantized",
            "--skip-unreadable",
        ],
    )
    .await;
    let run = ckptio(
        dir.path(),
        &["convert", src, "out.safetensors", "--skip-unreadable"],
    )
    .await;
    assert!(run.status.success(), "{}", support::cli::stderr(&run));
    let out = read_tree(&local(&dir.path().join("out.safetensors"))).await;
    assert_eq!(out.tensors().map(|(p, _)| p).collect::<Vec<_>>(), ["ok"]);
}

#[tokio::test]
async fn a_file_saved_without_crcs_reads_and_verify_says_nothing_was_compared() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("torch/no_crc.pt");
    let run = ckptio(dir.path(), &["verify", src.to_str().unwrap()]).await;
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", support::cli::stderr(&run));
    assert!(said.contains("no checksum recorded"), "{said}");
    let run = ckptio(
        dir.path(),
        &["verify", fixture("torch/state_dict.pt").to_str().unwrap()],
    )
    .await;
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("every tensor matched its checksum"), "{said}");
}

#[tokio::test]
async fn a_size_that_lies_about_the_archive_is_an_error_not_a_view_without_a_checksum() {
    let good = std::fs::read(fixture("torch/views.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = central_record(&good, "views/data/0");
    let size_at = |z: &[u8]| u32::from_le_bytes(z[central + 24..central + 28].try_into().unwrap());
    let (storage_at, _) = payload(&good, "views/data/0");
    let claim = |z: &mut Vec<u8>, size: u32| {
        z[central + 20..central + 24].copy_from_slice(&size.to_le_bytes());
        z[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    };
    // A little more than the truth, with a corrupted byte: no longer a whole storage to check.
    let slightly = patched(d, "slightly.pt", &good, |z| {
        let truth = size_at(z);
        claim(z, truth + 8);
        z[storage_at] ^= 1;
    });
    fails_with(
        d,
        &["convert", &slightly, "out.safetensors", "-q"],
        &["slightly.pt", "views/data/0", "a lying size"],
    )
    .await;
    // Far more than the archive holds: refused when the directory is read.
    let hugely = patched(d, "hugely.pt", &good, |z| claim(z, 0x7fff_ffff));
    fails_with(
        d,
        &["inspect", &hugely],
        &["hugely.pt", "claims 2147483647 bytes"],
    )
    .await;
}

#[tokio::test]
async fn expanded_views_are_verified_by_their_stored_bytes_and_converted_in_runs() {
    let src = local(&fixture("torch/expanded.pt"));
    let checked = ckptio::verify(&src, OpenOptions::default()).await.unwrap();
    // One stored F32, and a column of four: 20 bytes read for 5 MiB of tensors.
    assert_eq!((checked.tensors, checked.bytes), (2, 20));

    let dir = tempfile::tempdir().unwrap();
    let out = local(&dir.path().join("expanded.safetensors"));
    let tensors = read_tree(&src).await.into_tensors();
    let options = ckptio::WriteOptions {
        materialize: ckptio::MaterializeOptions {
            to_f32: false,
            memory_budget: 64 << 10,
        },
        ..Default::default()
    };
    ckptio::write_safetensors(tensors, &out, &options)
        .await
        .unwrap();
    let want = &expected()["expanded.pt"];
    let file = read_tree(&out).await;
    for path in ["one", "column"] {
        let bytes = support::read_tensor(&file, path).await;
        assert_eq!(sha256(&bytes), want[path]["sha256"], "{path}");
    }
}

#[tokio::test]
async fn a_dcp_tensor_that_claims_more_than_its_chunks_hold_is_refused_before_it_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("torch/dcp_lying");
    fails_with(
        dir.path(),
        &["inspect", src.to_str().unwrap()],
        &[
            "model.body.0.bias",
            "its chunks hold 8 elements, not its 1073741824",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_rebuild_call_that_contains_itself_is_an_error_and_listing_its_folder_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("torch/cycle.pt"), dir.path().join("cycle.pt")).unwrap();
    let path = dir.path().join("cycle.pt");
    fails_with(
        dir.path(),
        &["inspect", path.to_str().unwrap()],
        &["cycle.pt", "contains itself"],
    )
    .await;
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        ckptio(dir.path(), &["ls", dir.path().to_str().unwrap()]),
    )
    .await
    .expect("ls ends");
    assert!(listed.status.success(), "{}", support::cli::stderr(&listed));
}

#[tokio::test]
async fn a_corrupt_compressed_dcp_item_is_named_by_its_file_and_bytes() {
    let dir = dcp_copy("dcp_zstd");
    let data = dir.path().join("__0_0.distcp");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, bytes).unwrap();
    let out = dir.path().join("out.safetensors");
    let run = ckptio(
        dir.path(),
        &[
            "convert",
            dir.path().to_str().unwrap(),
            out.to_str().unwrap(),
            "-q",
        ],
    )
    .await;
    let err = support::cli::stderr(&run);
    assert!(!run.status.success());
    assert!(err.contains("__0_0.distcp (bytes "), "{err}");
    assert!(
        !err.contains("inline:") && !err.contains("memory:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_torch_file_held_in_memory_reads_as_it_does_from_its_location() {
    for (name, _) in fixtures() {
        let path = fixture(&format!("torch/{name}"));
        let Ok(bytes) = std::fs::read(&path).map(Bytes::from) else {
            continue; // a DCP directory
        };
        if !bytes.starts_with(b"PK") {
            continue; // a legacy file
        }
        let from_file = read_tree(&local(&path)).await;
        let in_memory = ckptio::open_bytes(bytes, &name, Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(in_memory.format, ckptio::Format::Torch, "{name}");
        let want = materialize_tree(&from_file, MaterializeOptions::default())
            .await
            .unwrap();
        let got = materialize_tree(&in_memory.tree, MaterializeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: BTreeMap<String, ckptio::Tensor> = got.into_iter().collect();
        assert_eq!(want.len(), got.len(), "{name}: tensors");
        for (path, w) in &want {
            let g = &got[path];
            assert_eq!((w.dtype, &w.shape), (g.dtype, &g.shape), "{name}: {path}");
            assert_eq!(w.data, g.data, "{name}: {path} bytes");
        }
    }
}

#[tokio::test]
async fn bytes_in_memory_that_are_not_a_whole_checkpoint_are_refused_by_name() {
    let file = std::fs::read(fixture("torch/state_dict.pt")).unwrap();
    let cut = Bytes::copy_from_slice(&file[..file.len() - 10]);
    let err = ckptio::open_bytes(cut, "item.pt", Default::default()).unwrap_err();
    assert!(matches!(err, ckptio::Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("item.pt"), "{err}");

    let hostile = Bytes::from(std::fs::read(fixture("torch/hostile.pt")).unwrap());
    let err = ckptio::open_bytes(hostile, "hostile.pt", Default::default()).unwrap_err();
    assert!(err.to_string().contains("posix.system"), "{err}");

    let legacy = Bytes::from(std::fs::read(fixture("torch/legacy.pt")).unwrap());
    let err = ckptio::open_bytes(legacy, "legacy.pt", Default::default()).unwrap_err();
    assert!(matches!(err, ckptio::Error::Unsupported { .. }), "{err}");

    let mut lying = std::fs::read(fixture("tiny.safetensors")).unwrap();
    lying.truncate(lying.len() - 1);
    let err = ckptio::open_bytes(lying.into(), "tiny.safetensors", Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("tiny.safetensors")
            && matches!(err, ckptio::Error::Corrupt { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn each_chunk_of_a_dcp_tensor_costs_one_request() {
    let dir = dcp_copy("dcp_sharded");
    let (loc, counts) = local(dir.path()).counted();
    let tree = read_tree(&loc).await;
    let w = tree.tensor("model/w").expect("model/w is a tensor").clone();
    let before = counts.gets();
    let got = materialize(vec![("w".into(), w.clone())], MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(counts.gets() - before, 2, "two chunks, in two files");
    let want: Vec<u8> = (0..w.numel())
        .flat_map(|v| (v as f32).to_le_bytes())
        .collect();
    assert_eq!(got[0].1.data, want);
}

#[tokio::test]
async fn every_tensor_of_a_dcp_checkpoint_comes_in_one_request_per_data_file() {
    let dir = dcp_copy("dcp_sharded");
    let (loc, counts) = local(dir.path()).counted();
    let tree = read_tree(&loc).await;
    let tensors: Vec<(String, LazyTensor)> = tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    assert_eq!(tensors.len(), 3);
    let before = counts.gets();
    let got = materialize(tensors, MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(counts.gets() - before, 2, "3 tensors in 2 data files");
    let want = materialize(
        read_tree(&local(&fixture("torch/dcp_sharded")))
            .await
            .tensors()
            .map(|(p, t)| (p, t.clone()))
            .collect(),
        MaterializeOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_same_tree_written_twice_is_the_same_bytes() {
    let tree = open(
        &local(&fixture("torch/state_dict.pt")),
        OpenOptions::default(),
    )
    .await
    .unwrap()
    .tree;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["a.pt", "b.pt"] {
        let path = dir.path().join(name);
        ckptio::write_torch(&tree, &local(&path), &ckptio::WriteOptions::default())
            .await
            .unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    // torch names a file by its records too (`.data/serialization_id`); so a store that keeps
    // each block once keeps a second save of unchanged tensors once.
    assert!(files[0] == files[1], "two saves of one tree differ");
}
