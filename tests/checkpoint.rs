//! The ckptio checkpoint layout: save → load round trips on every backend that can write, two
//! writers of one checkpoint (exactly one commits), and corruption named by `verify`.

mod support;

use ckptio::format::ckptio::{CkptioCheckpoint, verify};
use ckptio::format::{OpenOptions, open};
use ckptio::materialize::{MaterializeOptions, materialize_tree};
use ckptio::save::checkpoint::{SaveOptions, save};
use ckptio::tree::StateTree;
use support::cli::fixture;

async fn training_state() -> StateTree {
    let loc = ckptio::location::resolve(
        fixture("torch/training_state.pt").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    open(&loc, OpenOptions::default()).await.unwrap().tree
}

fn leaves(tree: &StateTree) -> Vec<String> {
    tree.leaves().map(|(p, l)| format!("{p} {l:?}")).collect()
}

async fn round_trip(backend: support::Backend) {
    if backend.read_only() {
        return;
    }
    let tree = training_state().await;
    let dir = backend.location("ckpt/");
    let small = SaveOptions {
        max_file_size: 512,
        ..SaveOptions::default()
    };
    let manifest = save(&dir, &tree, &small)
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", backend.name));
    assert!(manifest.files.len() > 1, "512-byte files: several");

    let back = open(&dir, OpenOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", backend.name))
        .tree;
    let (ours, theirs) = (leaves(&back), leaves(&tree));
    assert_eq!(ours.len(), theirs.len(), "[{}]", backend.name);
    for (a, b) in ours.iter().zip(&theirs) {
        if !a.contains("Tensor(") {
            assert_eq!(a, b, "[{}]", backend.name);
        }
    }
    let want = materialize_tree(&tree, MaterializeOptions::default())
        .await
        .unwrap();
    let got = materialize_tree(&back, MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(got, want, "[{}] identical tensors", backend.name);
    let checked = verify(&dir, Default::default()).await.unwrap();
    assert_eq!(checked.tensors, want.len());

    let again = save(&dir, &tree, &small).await.unwrap_err();
    assert!(
        again.to_string().contains("already committed"),
        "[{}] {again}",
        backend.name
    );
}

#[tokio::test]
async fn save_then_load_round_trips_on_every_writable_backend() {
    for name in support::BACKENDS {
        support::run(name, "ckpt-round-trip", round_trip).await;
    }
}

#[tokio::test]
async fn of_two_writers_of_one_checkpoint_exactly_one_commits() {
    let tree = training_state().await;
    let dir = tempfile::tempdir().unwrap();
    let loc = ckptio::location::resolve(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let options = SaveOptions::default();
    let (a, b) = tokio::join!(save(&loc, &tree, &options), save(&loc, &tree, &options));
    assert!(a.is_ok() != b.is_ok(), "exactly one commits: {a:?} / {b:?}");
    let err = a.err().or(b.err()).unwrap().to_string();
    assert!(err.contains("already committed"), "{err}");
    // The loser cleaned up: only the winner's files and the manifest remain.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let checkpoint = CkptioCheckpoint::open(&loc, Default::default())
        .await
        .unwrap();
    assert_eq!(
        names.len(),
        checkpoint.manifest().files.len() + 1,
        "{names:?}"
    );
}

#[tokio::test]
async fn a_flipped_byte_is_named_by_verify_and_by_materialize() {
    let tree = training_state().await;
    let dir = tempfile::tempdir().unwrap();
    let loc = ckptio::location::resolve(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let manifest = save(&loc, &tree, &SaveOptions::default()).await.unwrap();
    let file = &manifest.files[0];
    let path = dir.path().join(&file.name);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = verify(&loc, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&file.name) && err.contains("CRC-32C"), "{err}");
    assert!(err.contains("tensor `"), "{err}");
    let back = open(&loc, OpenOptions::default()).await.unwrap().tree;
    let err = materialize_tree(&back, MaterializeOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&file.name) && err.contains("is corrupt"),
        "{err}"
    );
}
