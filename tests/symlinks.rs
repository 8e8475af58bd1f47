//! Symbolic links never take ckptio outside a local checkpoint: removal unlinks links instead
//! of following them, downloads replace planted links instead of writing through them, and
//! reads, listings and copies stay inside the checkpoint's directory (a Hugging Face cache
//! snapshot's links into its model's blobs included).

#![cfg(unix)]

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;

use ckptio::{Checkpointer, CheckpointerOptions, OpenOptions, open};
use support::cli::{ckptio, fails_with, fixture, local};

/// A directory outside the checkpoint, holding a file that must survive.
fn precious(root: &Path) -> std::path::PathBuf {
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), "keep me").unwrap();
    outside
}

async fn ckptio_ok(dir: &Path, args: &[&str]) -> String {
    let run = ckptio(dir, args).await;
    assert!(
        run.status.success(),
        "{args:?}: {}",
        support::cli::stderr(&run)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A ckptio checkpoint of the tiny fixture at `dir`.
async fn checkpoint(work: &Path, dir: &Path) {
    let src = fixture("tiny.safetensors");
    let args = [
        "convert",
        src.to_str().unwrap(),
        dir.to_str().unwrap(),
        "-q",
    ];
    ckptio_ok(work, &args).await;
}

#[tokio::test]
async fn rm_removes_links_as_links_and_never_what_they_point_to() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = precious(tmp.path());
    let ckpt = tmp.path().join("ckpt");
    checkpoint(tmp.path(), &ckpt).await;
    symlink(&outside, ckpt.join("linked-dir")).unwrap();
    symlink(outside.join("precious.txt"), ckpt.join("linked-file")).unwrap();
    ckptio_ok(tmp.path(), &["rm", ckpt.to_str().unwrap()]).await;
    assert!(!ckpt.exists(), "the checkpoint is gone");
    assert_eq!(
        std::fs::read_to_string(outside.join("precious.txt")).unwrap(),
        "keep me"
    );
}

#[tokio::test]
async fn a_checkpointer_removing_old_checkpoints_never_follows_a_link_out() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = precious(tmp.path());
    let run = tmp.path().join("run");
    for step in [10, 20] {
        checkpoint(tmp.path(), &run.join(format!("step-{step}"))).await;
    }
    symlink(&outside, run.join("step-10").join("escape")).unwrap();
    let checkpointer = Checkpointer::new(local(&run), CheckpointerOptions::default());
    checkpointer.delete_existing().await.unwrap();
    assert!(!run.join("step-10").exists() && !run.join("step-20").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("precious.txt")).unwrap(),
        "keep me"
    );
}

#[tokio::test]
async fn get_replaces_a_planted_part_link_instead_of_writing_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = precious(tmp.path());
    let victim = outside.join("precious.txt");
    let dest = tmp.path().join("model.safetensors");
    symlink(&victim, tmp.path().join("model.safetensors.part")).unwrap();
    symlink(&victim, tmp.path().join("model.safetensors.part.json")).unwrap();
    let src = fixture("tiny.safetensors");
    ckptio_ok(
        tmp.path(),
        &["get", src.to_str().unwrap(), dest.to_str().unwrap(), "-q"],
    )
    .await;
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[tokio::test]
async fn a_shard_linked_from_outside_the_checkpoint_is_refused_naming_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    for entry in std::fs::read_dir(fixture("hf/variant")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let shard = "model.fp16-00002-of-00006.safetensors";
    std::fs::rename(model.join(shard), elsewhere.join(shard)).unwrap();
    symlink(elsewhere.join(shard), model.join(shard)).unwrap();
    fails_with(
        tmp.path(),
        &["inspect", model.to_str().unwrap()],
        &[shard, "outside", "symbolic links"],
    )
    .await;

    // A link that stays inside the checkpoint is followed.
    std::fs::create_dir_all(model.join("blobs")).unwrap();
    std::fs::remove_file(model.join(shard)).unwrap();
    std::fs::rename(elsewhere.join(shard), model.join("blobs").join(shard)).unwrap();
    symlink(Path::new("blobs").join(shard), model.join(shard)).unwrap();
    let opened = open(&local(&model), OpenOptions::default()).await.unwrap();
    assert_eq!(opened.tree.tensors().count(), 28);
}

#[tokio::test]
async fn cp_of_a_directory_never_carries_away_what_a_link_points_to() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = precious(tmp.path());
    let ckpt = tmp.path().join("ckpt");
    checkpoint(tmp.path(), &ckpt).await;
    symlink(&outside, ckpt.join("loot")).unwrap();
    symlink(outside.join("precious.txt"), ckpt.join("loot.txt")).unwrap();
    let dest = tmp.path().join("copy");
    ckptio_ok(
        tmp.path(),
        &[
            "cp",
            ckpt.to_str().unwrap(),
            &format!("{}/", dest.display()),
            "-q",
        ],
    )
    .await;
    let mut copied: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    copied.sort();
    assert!(copied.contains(&"manifest.json".to_owned()), "{copied:?}");
    assert!(
        !copied.iter().any(|n| n.starts_with("loot")),
        "a linked file was copied: {copied:?}"
    );
}

#[tokio::test]
async fn a_hub_cache_snapshot_reads_through_its_links_into_the_models_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("hub/models--org--tiny");
    let blobs = repo.join("blobs");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::copy(fixture("hf/model/model.safetensors"), blobs.join("4f2e")).unwrap();
    std::fs::copy(fixture("hf/model/config.json"), blobs.join("9a1c")).unwrap();
    symlink("../../blobs/4f2e", snapshot.join("model.safetensors")).unwrap();
    symlink("../../blobs/9a1c", snapshot.join("config.json")).unwrap();
    for target in [snapshot.clone(), snapshot.join("model.safetensors")] {
        let opened = open(&local(&target), OpenOptions::default()).await.unwrap();
        assert_eq!(opened.tree.tensors().count(), 28, "{}", target.display());
    }
}

#[tokio::test]
async fn a_file_named_on_the_command_line_may_itself_be_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("here.safetensors");
    symlink(
        std::fs::canonicalize(fixture("tiny.safetensors")).unwrap(),
        &link,
    )
    .unwrap();
    let said = ckptio_ok(tmp.path(), &["inspect", link.to_str().unwrap()]).await;
    assert!(said.contains("3 tensors"), "{said}");
}
