//! safetensors end to end: the committed fixtures (written by Python's safetensors), `inspect`
//! and `convert` as users run them, round trips checked by Python's safetensors itself, and one
//! clear error per kind of bad input.
//!
//! Python checks need `CKPTIO_TEST_PYTHON` (a Python with safetensors and numpy; the test
//! script sets it); they are skipped without it unless `CKPTIO_TEST_REQUIRE` lists `python`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ckptio::{MaterializeOptions, materialize_tree};
use serde_json::Value;
use support::Backend;
use support::cli::{ckptio, fails_with, fixture, python, python_reads, stderr};

/// Converts the fixture `src` into shards of at most `max` bytes named after `dst` in `dir`,
/// through the CLI.
async fn convert_sharded(dir: &std::path::Path, src: &std::path::Path, dst: &str, max: &str) {
    let src = src.to_str().unwrap();
    let out = ckptio(dir, &["convert", src, dst, "--max-shard-size", max]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn every_dtype_fixture_reads_bit_exact_and_widens_as_python_wrote() {
    let expected: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(fixture("dtypes.expected.json")).unwrap()).unwrap();
    let loc = ckptio::resolve(
        fixture("dtypes.safetensors").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let file = ckptio::open(&loc, Default::default()).await.unwrap();
    for (name, want) in &expected {
        let bytes = support::read_tensor(&file.tree, name).await;
        assert_eq!(hex(&bytes), want["bytes"].as_str().unwrap(), "{name}");
    }
    let widened = materialize_tree(
        &file.tree,
        MaterializeOptions {
            to_f32: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for (name, tensor) in widened {
        let Some(values) = expected[&name]["f32"].as_array() else {
            continue;
        };
        let got: Vec<f64> = tensor
            .data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
            .collect();
        let want: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got, want, "{name} widened to F32");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn inspect_json_lists_every_tensor_and_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let out = ckptio(
        dir.path(),
        &[
            "inspect",
            "--json",
            fixture("tiny.safetensors").to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3);
    let bias = tensors.iter().find(|t| t["path"] == "head.bias").unwrap();
    assert_eq!(
        (
            bias["dtype"].as_str(),
            bias["shape"].clone(),
            bias["nbytes"].as_u64()
        ),
        (Some("F32"), serde_json::json!([3]), Some(12))
    );
    assert_eq!(
        doc["tree"]["embed.weight"]["shape"],
        serde_json::json!([4, 3])
    );
    assert_eq!(doc["metadata"]["producer"], "ckptio fixtures");
    assert_eq!(doc["format"], "safetensors");
}

#[tokio::test]
async fn inspect_stats_show_one_get() {
    let dir = tempfile::tempdir().unwrap();
    let out = ckptio(
        dir.path(),
        &[
            "inspect",
            "--stats",
            fixture("tiny.safetensors").to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stderr(&out).contains("stats: 1 GET, 0 HEAD"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn convert_round_trips_through_python_single_and_sharded() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("dtypes.safetensors");
    let original = python_reads(&python, std::slice::from_ref(&src)).await;

    let out = ckptio(
        dir.path(),
        &["convert", src.to_str().unwrap(), "one.safetensors"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        python_reads(&python, &[dir.path().join("one.safetensors")]).await,
        original
    );

    convert_sharded(dir.path(), &src, "model.safetensors", "16").await;
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let mut shards: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| dir.path().join(s.as_str().unwrap()))
        .collect();
    shards.sort();
    shards.dedup();
    assert!(shards.len() > 1, "the 16-byte limit makes several shards");
    assert_eq!(
        python_reads(&python, &shards).await,
        original,
        "python reads the shards"
    );
    assert_eq!(index["metadata"]["total_size"], 65);
    let shard = ckptio::open(
        &ckptio::resolve(shards[0].to_str().unwrap(), &Default::default()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let meta = &shard.metadata;
    assert_eq!(
        meta.get("producer").map(String::as_str),
        Some("ckptio fixtures"),
        "source metadata kept"
    );
    assert_eq!(
        meta.get("format").map(String::as_str),
        Some("pt"),
        "a format for Hugging Face loaders"
    );
    assert!(
        !meta.contains_key("total_size"),
        "index bookkeeping stays in the index"
    );

    // And back: the sharded checkpoint converts to one file again.
    let out = ckptio(
        dir.path(),
        &[
            "convert",
            "model.safetensors.index.json",
            "again.safetensors",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        python_reads(&python, &[dir.path().join("again.safetensors")]).await,
        original
    );
    let again = ckptio::resolve(
        dir.path().join("again.safetensors").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let again = ckptio::open(&again, Default::default()).await.unwrap();
    assert!(
        !again.metadata.contains_key("total_size"),
        "no stale total_size from the index"
    );
}

#[tokio::test]
async fn convert_with_select_and_ignore_keeps_the_chosen_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("dtypes.safetensors");
    let out = ckptio(
        dir.path(),
        &[
            "convert",
            src.to_str().unwrap(),
            "f8.safetensors",
            "--select",
            "f8_*",
            "--ignore",
            "*e8m0",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let loc = ckptio::resolve(
        dir.path().join("f8.safetensors").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let file = ckptio::open(&loc, Default::default()).await.unwrap();
    let mut names: Vec<_> = file.tree.tensors().map(|(p, _)| p).collect();
    names.sort();
    assert_eq!(names, ["f8_e4m3", "f8_e5m2"]);
}

#[tokio::test]
async fn convert_to_and_from_a_remote_store() {
    let Some(python) = python() else { return };
    for name in ["s3s", "moto", "http"] {
        let Some(b) = Backend::from_env(name, "convert-remote") else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = |flag: &str| -> Vec<String> {
            b.options
                .iter()
                .flat_map(|(k, v)| [flag.to_owned(), format!("{k}={v}")])
                .collect()
        };
        let src = fixture("dtypes.safetensors");
        let remote = b.uri("out/model.safetensors");
        let mut up: Vec<String> = [
            "convert",
            src.to_str().unwrap(),
            &remote,
            "--max-shard-size",
            "32",
        ]
        .map(str::to_owned)
        .to_vec();
        up.extend(opts("--dst-option"));
        let out = ckptio(
            dir.path(),
            &up.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        assert!(out.status.success(), "[{name}] {}", stderr(&out));
        let index = b.uri("out/model.safetensors.index.json");
        let mut down: Vec<String> = ["convert", &index, "back.safetensors"]
            .map(str::to_owned)
            .to_vec();
        down.extend(opts("--src-option"));
        let out = ckptio(
            dir.path(),
            &down.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        assert!(out.status.success(), "[{name}] {}", stderr(&out));
        let original = python_reads(&python, std::slice::from_ref(&src)).await;
        assert_eq!(
            python_reads(&python, &[dir.path().join("back.safetensors")]).await,
            original,
            "[{name}]"
        );
        b.cleanup().await;
    }
}

/// A file: header JSON and `data_len` data bytes.
fn file(json: &str, data_len: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

#[tokio::test]
async fn bad_files_give_distinct_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let mut huge = 1_000_000_000_000u64.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.safetensors",
            good[..good.len() - 5].to_vec(),
            "ends at byte",
        ),
        (
            "cut-header.safetensors",
            good[..40].to_vec(),
            "runs past the end",
        ),
        (
            "huge-header.safetensors",
            huge,
            "exceeds the 100000000-byte limit",
        ),
        (
            "not-json.safetensors",
            file("{not json", 0),
            "header is not a JSON object",
        ),
        (
            "overlap.safetensors",
            file(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                6,
            ),
            "tensor `b` starts at data offset 2, expected 4",
        ),
        (
            "shape.safetensors",
            file(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            "tensor `w`: F32 × [3] needs 12 bytes but its offsets span 8",
        ),
        ("tiny.bin", vec![1, 2, 3], "too short"),
    ];
    for (name, bytes, expected) in &cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        fails_with(
            dir.path(),
            &["inspect", name],
            &[name, "not a valid safetensors file", expected],
        )
        .await;
    }
    // What other formats get: a broken zip and a legacy torch file are read as torch files
    // (tests/torch.rs has the rest), a GGUF file as GGUF (tests/gguf.rs).
    for (name, bytes, what) in [
        (
            "model.pt",
            b"PK\x03\x04rest of a zip".to_vec(),
            "not a valid zip archive",
        ),
        (
            "weights.bin",
            b"PK\x03\x04rest of a zip".to_vec(),
            "not a valid zip archive",
        ),
        (
            "old.pt",
            b"\x80\x02\x8a\x0a".to_vec(),
            "`the magic number`: pickle byte 2: a length of 10 bytes runs past the end",
        ),
        (
            "m.gguf",
            b"GGUF\x03\x00\x00\x00".to_vec(),
            "the tensor count at byte 8 runs past the end of the 8-byte file",
        ),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        fails_with(dir.path(), &["inspect", name], &[name, what]).await;
    }
    fails_with(
        dir.path(),
        &["inspect", "absent.safetensors"],
        &["absent.safetensors: not found"],
    )
    .await;
}

#[tokio::test]
async fn a_shard_missing_from_the_index_names_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny.safetensors");
    convert_sharded(dir.path(), &src, "m.safetensors", "20").await;
    std::fs::remove_file(dir.path().join("m-00002-of-00003.safetensors")).unwrap();
    let missing = ["shard `m-00002-of-00003.safetensors`", "is missing"];
    fails_with(
        dir.path(),
        &["inspect", "m.safetensors.index.json"],
        &missing,
    )
    .await;

    std::fs::write(
        dir.path().join("bad.safetensors.index.json"),
        br#"{"weight_map":{"a":"../../etc/passwd"}}"#,
    )
    .unwrap();
    fails_with(
        dir.path(),
        &["inspect", "bad.safetensors.index.json"],
        &["is not a file next to the index"],
    )
    .await;
}

#[tokio::test]
async fn a_shard_is_opened_only_when_one_of_its_tensors_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("dtypes.safetensors");
    convert_sharded(dir.path(), &src, "m.safetensors", "8").await;
    let index = ckptio::resolve(
        dir.path()
            .join("m.safetensors.index.json")
            .to_str()
            .unwrap(),
        &Default::default(),
    )
    .unwrap();
    let (index, counts) = index.counted();
    let select = |globs: &[&str]| ckptio::OpenOptions {
        select: globs.iter().map(|g| (*g).to_owned()).collect(),
        ..Default::default()
    };
    let none = ckptio::open(&index, select(&["no such tensor"]))
        .await
        .unwrap_err();
    // What there is comes from the index's names: no shard is opened to say so.
    assert!(
        none.to_string().contains(
            "m.safetensors.index.json: select `no such tensor` matches nothing; its top level: "
        ) && none.to_string().contains("bf16"),
        "{none}"
    );
    assert_eq!(counts.gets(), 1, "the index alone");
    let one = ckptio::open(&index, select(&["bf16"])).await.unwrap();
    let (_, bf16) = one.tree.tensors().next().unwrap();
    assert_eq!(bf16.shape, [4]);
    assert_eq!(
        counts.gets(),
        1 + 2,
        "the index again, and one shard header for one tensor"
    );
    let all = ckptio::open(&index, Default::default()).await.unwrap();
    let ckptio::Format::ShardedSafetensors { shards } = all.format else {
        panic!("{}", all.format)
    };
    assert!(shards > 3);
    assert_eq!(
        counts.gets(),
        1 + 2 + 1 + shards as u64,
        "every shard, once"
    );
    assert_eq!(all.tree.tensors().count(), 13);
}
