//! Hugging Face layouts, as transformers, huggingface_hub and accelerate write them
//! (`fixtures/hf/make_hf_fixtures.py`): model directories, shard indexes of safetensors or
//! torch shards and their variants, and accelerate `save_state` directories, each opened as
//! one checkpoint and read bit for bit, locally and on every backend.

mod support;

use std::collections::BTreeMap;

use ckptio::{Format, Location, OpenOptions, StateTree, open};
use serde_json::Value;
use support::cli::{ckptio, fails_with, fixture, local, sha256};

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read(fixture("hf/expected.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

async fn opened(loc: &Location) -> ckptio::Checkpoint {
    open(loc, OpenOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every tensor `want` lists is in `tree`, with its dtype, shape and bytes.
async fn matches(name: &str, tree: &StateTree, want: &Value) {
    let want = want.as_object().unwrap();
    assert_eq!(tree.tensors().count(), want.len(), "{name}: tensor count");
    for (path, w) in want {
        let (_, t) = tree
            .tensors()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{name}: no `{path}`"));
        assert_eq!(t.dtype.name(), w["dtype"], "{name}: {path}");
        let shape: Vec<u64> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{name}: {path}");
        let bytes = support::read_tensor(tree, path).await;
        assert_eq!(sha256(&bytes), w["sha256"], "{name}: {path}");
    }
}

#[tokio::test]
async fn model_directories_open_as_their_weights_whatever_the_files() {
    let want = expected();
    let cases = [
        ("model", Format::Safetensors),
        ("variant", Format::ShardedSafetensors { shards: 6 }),
        ("bin", Format::ShardedTorch { shards: 3 }),
        ("bin_variant", Format::ShardedTorch { shards: 3 }),
        ("bin_single", Format::Torch),
    ];
    for (name, format) in cases {
        let checkpoint = opened(&local(&fixture(&format!("hf/{name}")))).await;
        assert_eq!(checkpoint.format, format, "{name}");
        matches(name, &checkpoint.tree, &want[name]).await;
    }
}

#[tokio::test]
async fn indexes_of_torch_shards_and_variants_are_read_as_indexes() {
    let want = expected();
    for (dir, index) in [
        ("bin", "pytorch_model.bin.index.json"),
        ("bin_variant", "pytorch_model.bin.index.fp16.json"),
        ("variant", "model.safetensors.index.fp16.json"),
    ] {
        let checkpoint = opened(&local(&fixture(&format!("hf/{dir}/{index}")))).await;
        matches(index, &checkpoint.tree, &want[dir]).await;
    }
}

#[tokio::test]
async fn an_accelerate_state_directory_is_one_tree_with_a_subtree_per_file() {
    let want = expected();
    let checkpoint = opened(&local(&fixture("hf/accelerate_state"))).await;
    let files = want["accelerate_files"].as_array().unwrap().len();
    assert_eq!(checkpoint.format, Format::StateFiles { files });
    for stem in ["model", "optimizer", "scheduler", "random_states_0"] {
        assert!(checkpoint.tree.root().contains_key(stem), "{stem}");
    }
    assert!(checkpoint.tree.get("optimizer/param_groups/0/lr").is_some());
    matches(
        "accelerate_state",
        &checkpoint.tree,
        &want["accelerate_state"],
    )
    .await;
}

#[tokio::test]
async fn a_directory_of_other_files_is_refused_listing_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("hf/model/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "a model card").unwrap();
    fails_with(
        dir.path(),
        &["inspect", dir.path().to_str().unwrap()],
        &["config.json", "README.md"],
    )
    .await;
}

async fn hf_layouts_read_the_same_as_on_disk(backend: support::Backend) {
    for name in ["bin", "accelerate_state"] {
        let dir = fixture(&format!("hf/{name}"));
        let local_tree = opened(&local(&dir)).await.tree;
        backend.seed_dir(&format!("hf/{name}"), &dir).await;
        let tree = opened(&backend.location(&format!("hf/{name}/"))).await.tree;
        let want = &expected()[if name == "bin" {
            "bin"
        } else {
            "accelerate_state"
        }];
        matches(&format!("{name} [{}]", backend.name), &tree, want).await;
        assert_eq!(
            tree.tensors().count(),
            local_tree.tensors().count(),
            "[{}]",
            backend.name
        );
    }
}

#[tokio::test]
async fn hf_layouts_read_the_same_on_every_backend() {
    for name in support::BACKENDS {
        support::run(name, "hf-layouts", hf_layouts_read_the_same_as_on_disk).await;
    }
}

#[tokio::test]
async fn convert_turns_a_model_directory_of_torch_shards_into_one_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    let run = ckptio(
        dir.path(),
        &[
            "convert",
            fixture("hf/bin").to_str().unwrap(),
            out.to_str().unwrap(),
            "-q",
        ],
    )
    .await;
    assert!(run.status.success(), "{}", support::cli::stderr(&run));
    let checkpoint = opened(&local(&out)).await;
    matches("converted", &checkpoint.tree, &expected()["bin"]).await;
}
