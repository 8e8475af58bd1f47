//! GGUF end to end: the committed fixtures (written by the `gguf` package,
//! `fixtures/gguf/make_gguf_fixtures.py`) read as that package's reader shows them, quantized
//! blocks dequantize bit-identically to its `dequantize`, and bad files are refused with
//! clear errors. Remote stores are covered by the conformance suite.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use ckptio::{Format, MaterializeOptions, OpenOptions, materialize, open};
use serde_json::Value;
use support::cli::{ckptio, fails_with, fixture, local, sha256, stderr};

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read(fixture("gguf/expected.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

fn shape(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect()
}

async fn read(t: &ckptio::LazyTensor, to_f32: bool) -> ckptio::Tensor {
    let options = MaterializeOptions {
        to_f32,
        ..Default::default()
    };
    let mut out = materialize(vec![("t".into(), t.clone())], options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    out.pop().unwrap().1
}

#[tokio::test]
async fn every_fixture_reads_as_the_gguf_package_reads_it() {
    for (file, want) in expected() {
        let checkpoint = open(
            &local(&fixture(&format!("gguf/{file}"))),
            OpenOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(checkpoint.format, Format::Gguf);
        let tensors = want["tensors"].as_object().unwrap();
        assert_eq!(checkpoint.tree.tensors().count(), tensors.len(), "{file}");
        for (name, w) in tensors {
            let t = checkpoint
                .tree
                .tensor(name)
                .unwrap_or_else(|| panic!("{name}"));
            let scheme = t.quantized.map_or(t.dtype.name(), |q| q.scheme.name());
            assert_eq!(scheme, w["ggml_type"].as_str().unwrap(), "{file}: {name}");
            let values_shape = t
                .quantized
                .map_or(t.shape.clone(), |q| q.values_shape(&t.shape));
            assert_eq!(values_shape, shape(&w["shape"]), "{file}: {name}");
            let raw = read(t, false).await;
            assert_eq!(sha256(&raw.data), w["raw_sha256"], "{file}: {name} raw");
            if let Some(f32_sha) = w.get("f32_sha256") {
                let values = read(t, true).await;
                assert_eq!(values.dtype, ckptio::DType::F32);
                assert_eq!(values.shape, values_shape, "{file}: {name}");
                assert_eq!(&sha256(&values.data), f32_sha, "{file}: {name} values");
                if let Some(lazy) = t.dequantized() {
                    assert_eq!(
                        (lazy.dtype, &lazy.shape),
                        (ckptio::DType::F32, &values_shape)
                    );
                    assert_eq!(
                        read(&lazy, false).await,
                        values,
                        "{file}: {name} dequantized"
                    );
                }
            }
        }
        for (key, value) in want["metadata"].as_object().unwrap() {
            let got = &checkpoint.metadata[key];
            match value {
                Value::String(s) => assert_eq!(got, s, "{file}: {key}"),
                other => {
                    let parsed: Value = serde_json::from_str(got).unwrap();
                    assert_eq!(&parsed, other, "{file}: {key}");
                }
            }
        }
        assert_eq!(checkpoint.metadata["gguf.version"], "3");
    }
}

#[tokio::test]
async fn rows_of_quantized_blocks_dequantize_as_the_rows_of_their_values() {
    let path = fixture("gguf/tiny.gguf");
    let checkpoint = open(&local(&path), OpenOptions::default()).await.unwrap();
    for name in ["q4_k", "q8_0", "q8_0_3d"] {
        let t = checkpoint.tree.tensor(name).unwrap();
        let whole = read(&t.dequantized().unwrap(), false).await;
        let row = whole.data.len() / t.shape[0] as usize;
        let last = t.shape[0] - 1;
        for lazy in [
            t.rows(last..last + 1).unwrap().dequantized().unwrap(),
            t.dequantized().unwrap().rows(last..last + 1).unwrap(),
        ] {
            let part = read(&lazy, false).await;
            assert_eq!(part.data, whole.data[row * last as usize..], "{name}");
        }
    }
    let one_dim = checkpoint.tree.tensor("q4_0_1d").unwrap();
    assert!(one_dim.rows(0..1).is_none(), "a row of blocks is not cut");
}

#[tokio::test]
async fn schemes_ckptio_does_not_decode_materialize_raw_and_refuse_values() {
    let path = fixture("gguf/tiny.gguf");
    let checkpoint = open(&local(&path), OpenOptions::default()).await.unwrap();
    let iq = checkpoint.tree.tensor("iq4_nl").unwrap();
    assert!(iq.dequantized().is_none());
    assert_eq!(read(iq, false).await.shape, [2, 36]);
    let options = MaterializeOptions {
        to_f32: true,
        ..Default::default()
    };
    let err = materialize(vec![("iq4_nl".into(), iq.clone())], options)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tiny.gguf") && err.contains("IQ4_NL"), "{err}");
}

/// A broken copy of tiny.gguf, written to a temporary directory.
fn broken(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let mut bytes = std::fs::read(fixture("gguf/tiny.gguf")).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn bad_files_are_refused_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (
            broken(dir.path(), "short.gguf", |b| b.truncate(200)),
            "runs past the end",
        ),
        (
            // Past the last tensor's padding, into its blocks.
            broken(dir.path(), "data_cut.gguf", |b| b.truncate(b.len() - 40)),
            "runs past the end of the",
        ),
        (
            broken(dir.path(), "lying.gguf", |b| {
                b[16..24].copy_from_slice(&u64::MAX.to_le_bytes())
            }),
            "metadata entries",
        ),
        (
            broken(dir.path(), "v1.gguf", |b| {
                b[4..8].copy_from_slice(&1u32.to_le_bytes())
            }),
            "GGUF version 1",
        ),
    ];
    for (path, says) in cases {
        let err = open(&local(&path), OpenOptions::default())
            .await
            .unwrap_err()
            .to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(name) && err.contains(says),
            "{err} should say {says}"
        );
    }
}

#[tokio::test]
async fn inspect_shows_schemes_and_metadata_and_convert_dequantizes_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("gguf/tiny.gguf");
    let src = src.to_str().unwrap();
    let out = ckptio(dir.path(), &["inspect", src]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("GGUF, 21 tensors"), "{text}");
    assert!(text.contains("general.name: tiny"), "{text}");
    assert!(
        text.contains(r#"tokenizer.ggml.tokens: ["<s>","</s>","hé","x y"]"#),
        "{text}"
    );
    let q4k = text.lines().find(|l| l.starts_with("q4_k ")).unwrap();
    assert!(
        q4k.contains("Q4_K") && q4k.contains("[2, 512]") && q4k.contains("576 B"),
        "{q4k}"
    );

    fails_with(
        dir.path(),
        &["convert", src, "out.safetensors", "-q"],
        &["tiny.gguf", "quantized blocks", "--dequantize"],
    )
    .await;
    fails_with(
        dir.path(),
        &["convert", src, "out.safetensors", "--dequantize", "-q"],
        &[
            "`iq4_nl` (IQ4_NL blocks, which ckptio does not dequantize)",
            "--skip-unreadable",
        ],
    )
    .await;
    let out = ckptio(
        dir.path(),
        &[
            "convert",
            src,
            "out.safetensors",
            "--dequantize",
            "--skip-unreadable",
            "-q",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let converted = open(
        &local(&dir.path().join("out.safetensors")),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let original = open(&local(Path::new(src)), OpenOptions::default())
        .await
        .unwrap();
    assert!(converted.tree.tensor("iq4_nl").is_none());
    for name in ["q4_k", "q6_k", "q5_0", "f16", "i64"] {
        let t = original.tree.tensor(name).unwrap();
        let want = match t.dequantized() {
            Some(values) => read(&values, false).await,
            None => read(t, false).await,
        };
        let got = read(converted.tree.tensor(name).unwrap(), false).await;
        assert_eq!(got, want, "{name}");
    }
}
