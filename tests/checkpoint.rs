//! The ckptio checkpoint layout: save → load round trips on every backend that can write, two
//! writers of one checkpoint (exactly one commits), and corruption named by `verify`.

mod support;

use ckptio::StateTree;
use ckptio::{MaterializeOptions, materialize_tree};
use ckptio::{OpenOptions, open, verify};
use ckptio::{SaveOptions, save};
use support::cli::{copy_dir, fixture};

async fn training_state() -> StateTree {
    let loc = ckptio::resolve(
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

async fn two_writers(backend: support::Backend) {
    if backend.read_only() || !backend.caps.list_recursive {
        return;
    }
    let tree = training_state().await;
    let loc = backend.location("ckpt/");
    let options = SaveOptions::default();
    let (a, b) = tokio::join!(save(&loc, &tree, &options), save(&loc, &tree, &options));
    let outcome = |r: &ckptio::Result<_>| match r {
        Ok(_) => "committed".to_owned(),
        Err(e) => e.to_string(),
    };
    // Servers that ignore If-None-Match (Garage) or check it before writing (s3s-fs) give no
    // atomic create: there the read-back narrows the race but cannot close it, so both may
    // report success. SeaweedFS and moto refuse the second writer.
    let atomic = !matches!(backend.name, "s3s" | "garage");
    assert!(
        a.is_ok() != b.is_ok() || (!atomic && a.is_ok()),
        "[{}] exactly one commits: {} / {}",
        backend.name,
        outcome(&a),
        outcome(&b)
    );
    if let Some(err) = a.err().or(b.err()) {
        assert!(
            err.to_string().contains("already committed"),
            "[{}] {err}",
            backend.name
        );
    }
    // The loser cleaned up: only the winner's files and the manifest remain.
    let checkpoint = open(&loc, Default::default()).await.unwrap();
    let back = materialize_tree(&checkpoint.tree, MaterializeOptions::default()).await;
    assert!(
        back.is_ok(),
        "[{}] the committed checkpoint loads",
        backend.name
    );
    let left = names(&loc).await;
    if atomic {
        assert_eq!(
            left.len(),
            match checkpoint.format {
                ckptio::Format::Ckptio { files } => files + 1,
                other => panic!("{other}"),
            },
            "[{}] {left:?}",
            backend.name
        );
    }
}

#[tokio::test]
async fn of_two_writers_of_one_checkpoint_exactly_one_commits() {
    for name in support::BACKENDS {
        support::run(name, "ckpt-two-writers", two_writers).await;
    }
}

#[tokio::test]
async fn a_flipped_byte_is_named_by_verify_and_by_materialize() {
    for sha256 in [false, true] {
        flipped_byte(sha256).await;
    }
}

async fn flipped_byte(sha256: bool) {
    let tree = training_state().await;
    let dir = tempfile::tempdir().unwrap();
    let loc = ckptio::resolve(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let options = SaveOptions {
        sha256,
        ..SaveOptions::default()
    };
    let saved = save(&loc, &tree, &options).await.unwrap();
    let algorithm = if sha256 { "SHA-256" } else { "CRC-32C" };
    let file = &saved.files[0];
    let path = dir.path().join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = verify(&loc, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(file.as_str()) && err.contains(algorithm),
        "{err}"
    );
    assert!(err.contains("tensor `"), "{err}");
    let back = open(&loc, OpenOptions::default()).await.unwrap().tree;
    let err = materialize_tree(&back, MaterializeOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(file.as_str()) && err.contains("is corrupt"),
        "{err}"
    );
}

/// 256 MiB of U8 tensors (64 × 4 MiB) as a local safetensors file.
fn big_source(dir: &std::path::Path) -> std::path::PathBuf {
    let tensors: Vec<(String, u64)> = (0..64).map(|i| (format!("layer.{i}"), 4 << 20)).collect();
    let path = dir.join("big.safetensors");
    std::fs::write(&path, support::safetensors_file(&tensors)).unwrap();
    path
}

/// Objects under `dir` (recursive), by name.
async fn copy_onto_committed(backend: support::Backend) {
    if backend.read_only() || !backend.caps.list_recursive {
        return;
    }
    let tree = training_state().await;
    let (src, dst) = (backend.location("run-a/"), backend.location("run-b/"));
    let options = SaveOptions::default();
    for step in ["step-1/", "step-2/"] {
        save(&src.join(step), &tree, &options).await.unwrap();
    }
    save(&dst.join("step-2/"), &tree, &options).await.unwrap();
    let before = names(&dst).await;

    let err = ckptio::copy_dir(&src, &dst, Default::default(), 4)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ckptio::Error::AlreadyCommitted { uri } if uri.ends_with("run-b/step-2")),
        "[{}] {err}",
        backend.name
    );
    assert_eq!(
        names(&dst).await,
        before,
        "[{}] nothing written",
        backend.name
    );

    // A fresh destination takes the whole root, markers included.
    let copied = ckptio::copy_dir(&src, &backend.location("run-c/"), Default::default(), 4)
        .await
        .unwrap();
    assert_eq!(
        copied.objects,
        names(&src).await.len(),
        "[{}]",
        backend.name
    );
    verify(&backend.location("run-c/step-1/"), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_copy_never_replaces_a_committed_checkpoint() {
    for name in support::BACKENDS {
        support::run(name, "ckpt-copy-onto", copy_onto_committed).await;
    }
}

async fn denied_save(backend: support::Backend) {
    if backend.read_only() {
        return;
    }
    // Azure's key is base64: a wrong one must still be a well-formed one.
    let (key, wrong) = if backend.base.starts_with("az://") {
        ("access_key", "bm90LXRoZS1rZXktYXQtYWxs")
    } else {
        ("secret_access_key", "not-the-secret-at-all")
    };
    let options = backend.options.clone().with(key, wrong);
    let resolve = |key: &str| ckptio::resolve(&backend.uri(key), &options).unwrap();
    let tree = training_state().await;
    let saved = save(&resolve("denied/"), &tree, &SaveOptions::default()).await;
    let copied = ckptio::copy_object(
        &ckptio::resolve(
            fixture("torch/training_state.pt").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap(),
        &resolve("denied.pt"),
        Default::default(),
    )
    .await;
    for (what, err) in [("save", saved.err()), ("copy", copied.err())] {
        assert!(
            matches!(err, Some(ckptio::Error::PermissionDenied { .. })),
            "[{}] {what}: {err:?}",
            backend.name
        );
    }
}

async fn no_bucket_save(backend: support::Backend) {
    if backend.read_only() {
        return;
    }
    let scheme = backend.base.split("://").next().unwrap();
    let uri = format!("{scheme}://ckptio-no-such-bucket/run/step-1/");
    let dir = ckptio::resolve(&uri, &backend.options).unwrap();
    let err = save(&dir, &training_state().await, &SaveOptions::default())
        .await
        .map(|saved| saved.uri)
        .expect_err(backend.name);
    assert!(
        matches!(&err, ckptio::Error::NoContainer { .. })
            && err
                .to_string()
                .contains("its bucket or container does not exist"),
        "[{}] {err}",
        backend.name
    );
}

#[tokio::test]
async fn a_save_into_a_missing_bucket_says_so() {
    // Not s3s-fs: it takes a PUT into a bucket that does not exist and makes the bucket (as
    // SeaweedFS does unless told not to: scripts/servers tells it).
    for name in ["moto", "garage", "seaweedfs", "azure"] {
        support::run(name, "ckpt-no-bucket", no_bucket_save).await;
    }
}

#[tokio::test]
async fn an_upload_with_a_wrong_secret_is_a_permission_error() {
    // The servers that check signatures (moto accepts any).
    for name in ["s3s", "garage", "seaweedfs", "azure"] {
        support::run(name, "ckpt-denied", denied_save).await;
    }
}

async fn names(dir: &ckptio::Location) -> Vec<String> {
    use futures::TryStreamExt;
    let objects: Vec<_> = dir
        .store()
        .list(Some(dir.path()))
        .try_collect()
        .await
        .unwrap_or_default();
    objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_owned))
        .collect()
}

async fn killed_mid_save(backend: support::Backend) {
    use ckptio::{Checkpointer, CheckpointerOptions};
    if backend.read_only() || !backend.caps.list_recursive {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = big_source(work.path());
    let src = src.to_str().unwrap();
    let convert = |name: &str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ckptio"));
        cmd.args([
            "convert",
            src,
            &backend.uri(name),
            "--max-shard-size",
            "32MiB",
            "-q",
        ])
        .args(
            backend
                .option_args()
                .into_iter()
                .map(|a| if a == "-o" { "--dst-option".into() } else { a }),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_GCE_CHECK", "true")
        .kill_on_drop(true);
        cmd
    };
    let done = convert("runs/step-1").status().await.unwrap();
    assert!(done.success(), "[{}] the first save", backend.name);

    // The second save is killed as soon as its first data file lands (others in flight).
    let mut child = convert("runs/step-2").spawn().unwrap();
    let step2 = backend.location("runs/step-2/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while names(&step2).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "[{}] no data file landed",
            backend.name
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "[{}] finished before it could be killed",
            backend.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let left = names(&step2).await;
    assert!(
        !left.iter().any(|n| n == "manifest.json"),
        "[{}] {left:?}",
        backend.name
    );

    let ckpt = Checkpointer::new(
        backend.location("runs/"),
        CheckpointerOptions {
            save: SaveOptions {
                max_file_size: 32 << 20,
                ..SaveOptions::default()
            },
            ..CheckpointerOptions::default()
        },
    );
    assert_eq!(ckpt.latest().await.unwrap(), Some(1), "[{}]", backend.name);
    let listed = ckpt.list().await.unwrap();
    assert!(
        listed.iter().any(|e| e.index == 2 && !e.committed),
        "[{}] the killed save is listed as partial: {listed:?}",
        backend.name
    );
    let (index, previous) = ckpt.load_latest().await.unwrap().unwrap();
    assert_eq!(index, 1);
    let one = previous.tree.select(&["layer.63"]).unwrap();
    let got = materialize_tree(&one, MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        got[0].1.data.len(),
        4 << 20,
        "[{}] the previous checkpoint loads",
        backend.name
    );

    // Saving index 2 again: the partial one is cleared first, and it commits.
    let manifest = ckpt.save(2, &previous.tree, false).await.unwrap().unwrap();
    assert_eq!(ckpt.latest().await.unwrap(), Some(2), "[{}]", backend.name);
    let mut left = names(&step2).await;
    left.sort();
    let mut want: Vec<String> = manifest.files.clone();
    want.push("manifest.json".into());
    want.sort();
    assert_eq!(
        left, want,
        "[{}] nothing of the killed save is left",
        backend.name
    );
    if backend.name == "local" {
        let dir = std::path::Path::new("/").join(step2.path().as_ref());
        let staging: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains('#'))
            .collect();
        assert!(staging.is_empty(), "upload staging files left: {staging:?}");
    }
}

#[tokio::test]
async fn a_save_killed_mid_upload_leaves_the_previous_checkpoint_latest() {
    for name in ["local", "s3s", "moto", "garage", "seaweedfs", "s3"] {
        support::run(name, "ckpt-killed", killed_mid_save).await;
    }
}

/// Runs the CLI with the backend's options for `flag` (`-o`, `--dst-option`; none for "").
async fn cli(backend: &support::Backend, flag: &str, args: &[&str]) -> std::process::Output {
    let options = backend
        .option_args()
        .into_iter()
        .filter(|_| !flag.is_empty())
        .map(|a| if a == "-o" { flag.to_owned() } else { a });
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ckptio"))
        .args(args)
        .args(options)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_GCE_CHECK", "true")
        .output()
        .await
        .unwrap()
}

async fn cp_ls_verify_rm(backend: support::Backend) {
    // Each CLI run is a process of its own: a memory store would not outlive it.
    if backend.read_only() || !backend.caps.list_recursive || backend.name == "memory" {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("step-7");
    let local_uri = format!("{}/", local.display());
    let ok = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "[{}] {what}: {}",
            backend.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let src = fixture("torch/fabric.ckpt");
    let out = cli(
        &backend,
        "",
        &[
            "convert",
            src.to_str().unwrap(),
            local.to_str().unwrap(),
            "-q",
        ],
    )
    .await;
    ok(&out, "convert --to ckptio (the default)");
    let remote = backend.uri("runs/step-7/");
    // Shared `-o` options configure the remote side; the local one takes none of them.
    let out = cli(&backend, "-o", &["cp", &local_uri, &remote, "-q"]).await;
    ok(&out, "cp a checkpoint directory");
    let out = cli(&backend, "-o", &["verify", &remote]).await;
    let said = ok(&out, "verify the copy");
    assert!(
        said.contains("ok (ckptio checkpoint"),
        "[{}] {said}",
        backend.name
    );
    let out = cli(&backend, "-o", &["ls", &backend.uri("runs/")]).await;
    let said = ok(&out, "ls");
    assert!(
        said.contains("step-7") && said.contains("committed"),
        "[{}] {said}",
        backend.name
    );
    let out = cli(&backend, "-o", &["ls", &backend.uri("runs/"), "--latest"]).await;
    assert!(
        ok(&out, "ls --latest").trim_end().ends_with("runs/step-7"),
        "[{}]",
        backend.name
    );
    let out = cli(&backend, "-o", &["rm", &remote]).await;
    ok(&out, "rm");
    assert!(
        names(&backend.location("runs/step-7/")).await.is_empty(),
        "[{}] removed",
        backend.name
    );
    let out = cli(&backend, "-o", &["ls", &backend.uri("runs/"), "--latest"]).await;
    assert!(
        !out.status.success(),
        "[{}] nothing left to be latest",
        backend.name
    );
    let out = cli(&backend, "-o", &["ls", &backend.uri("runs/")]).await;
    assert!(ok(&out, "ls of nothing").is_empty(), "[{}]", backend.name);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no numbered checkpoints (step-N) under"),
        "[{}] {said}",
        backend.name
    );
}

#[tokio::test]
async fn cp_ls_verify_and_rm_work_on_every_writable_backend() {
    for name in support::BACKENDS {
        support::run(name, "ckpt-cli", cp_ls_verify_rm).await;
    }
}

#[tokio::test]
async fn the_checkpointer_counts_only_what_is_committed_and_keeps_the_last_n() {
    use ckptio::{Checkpointer, CheckpointerOptions, Kind};
    let dir = tempfile::tempdir().unwrap();
    let root = ckptio::resolve(&format!("{}/", dir.path().display()), &Default::default()).unwrap();
    let tree = training_state().await;
    let ckpt = Checkpointer::new(
        root,
        CheckpointerOptions {
            period: 10,
            keep_last: Some(2),
            ..CheckpointerOptions::default()
        },
    );
    assert_eq!(ckpt.latest().await.unwrap(), None);
    assert!(
        ckpt.save(5, &tree, false).await.unwrap().is_none(),
        "off period"
    );
    for step in [10, 20, 30] {
        assert!(ckpt.save(step, &tree, false).await.unwrap().is_some());
    }
    assert!(
        ckpt.save(35, &tree, true).await.unwrap().is_some(),
        "forced"
    );
    let indices = |l: Vec<ckptio::Entry>| l.iter().map(|e| e.index).collect::<Vec<_>>();
    assert_eq!(
        indices(ckpt.list().await.unwrap()),
        [30, 35],
        "keep the last 2"
    );

    // Other systems' checkpoints: a DCP directory with and without its .metadata, whole and
    // cut torch files.
    let copy_dcp = |to: &str, with_metadata: bool| {
        let to = dir.path().join(to);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(fixture("torch/dcp_single")).unwrap() {
            let e = e.unwrap();
            if with_metadata || e.file_name() != ".metadata" {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    copy_dcp("step-40", true);
    assert_eq!(ckpt.latest().await.unwrap(), Some(40));
    copy_dcp("step-50", false);
    assert_eq!(
        ckpt.latest().await.unwrap(),
        Some(40),
        "a DCP without .metadata is partial"
    );
    let good = std::fs::read(fixture("torch/views.pt")).unwrap();
    std::fs::write(dir.path().join("step-60.pt"), &good).unwrap();
    assert_eq!(ckpt.latest().await.unwrap(), Some(60));
    std::fs::write(dir.path().join("step-70.pt"), &good[..good.len() / 2]).unwrap();
    assert_eq!(
        ckpt.latest().await.unwrap(),
        Some(60),
        "a cut torch file is skipped"
    );
    let (index, loaded) = ckpt.load_latest().await.unwrap().unwrap();
    assert_eq!((index, loaded.tree.tensors().count()), (60, 20));

    let kinds: Vec<(u64, Kind, bool)> = ckpt
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.index, e.kind, e.committed))
        .collect();
    assert_eq!(
        kinds,
        [
            (30, Kind::Ckptio, true),
            (35, Kind::Ckptio, true),
            (40, Kind::Dcp, true),
            (50, Kind::Unknown, false),
            (60, Kind::File, true),
            (70, Kind::File, true),
        ]
    );
    ckpt.remove(40).await.unwrap();
    assert!(
        !dir.path().join("step-40").exists(),
        "removed, directory and all"
    );
    ckpt.delete_existing().await.unwrap();
    assert!(ckpt.list().await.unwrap().is_empty());
}

#[derive(Default)]
struct Counted {
    total: std::sync::atomic::AtomicU64,
    advanced: std::sync::atomic::AtomicU64,
    finished: std::sync::atomic::AtomicU64,
}

impl ckptio::Progress for Counted {
    fn started(&self, _: &str, total: u64) {
        self.total.store(total, std::sync::atomic::Ordering::SeqCst);
    }
    fn advanced(&self, bytes: u64) {
        self.advanced
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
    }
    fn finished(&self) {
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_save_reports_every_tensor_byte_and_its_commit() {
    use std::sync::atomic::Ordering::SeqCst;
    let tree = training_state().await;
    let bytes: u64 = tree.tensors().map(|(_, t)| t.nbytes()).sum();
    let progress = std::sync::Arc::new(Counted::default());
    let loc = ckptio::resolve("memory://ckpt-progress/run/", &Default::default()).unwrap();
    let options = SaveOptions {
        max_file_size: 300,
        progress: progress.clone(),
        ..SaveOptions::default()
    };
    save(&loc, &tree, &options).await.unwrap();
    assert_eq!(progress.total.load(SeqCst), bytes);
    assert_eq!(progress.advanced.load(SeqCst), bytes);
    assert_eq!(progress.finished.load(SeqCst), 1);
}

/// Opening a checkpoint directory costs at most two requests before its reader's own: a GET
/// of the name (no object there) and one LIST, which the reader reuses; a URI ending in `/`
/// costs the LIST alone.
async fn directories_cost_two_requests_before_their_reader(backend: support::Backend) {
    if backend.read_only() {
        return;
    }
    let tree = training_state().await;
    save(&backend.location("ckpt/"), &tree, &SaveOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", backend.name));
    for (uri, probe) in [("ckpt", 2), ("ckpt/", 1)] {
        let (loc, counts) = backend.location(uri).counted();
        let opened = open(&loc, OpenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("[{}] {uri}: {e}", backend.name));
        assert!(matches!(opened.format, ckptio::Format::Ckptio { .. }));
        let requests = counts.gets() + counts.heads() + counts.other();
        // The ckptio reader's own: one GET of the manifest.
        assert_eq!(requests, probe + 1, "[{}] {uri}: {counts}", backend.name);
    }
}

#[tokio::test]
async fn a_checkpoint_directory_costs_two_requests_before_its_reader_on_every_backend() {
    for name in support::BACKENDS {
        support::run(
            name,
            "ckpt-probe",
            directories_cost_two_requests_before_their_reader,
        )
        .await;
    }
}

async fn torch_files(backend: support::Backend) {
    use ckptio::{Checkpointer, CheckpointerOptions, Form, Kind};

    if backend.read_only() {
        return;
    }
    let state = ckptio::resolve(
        fixture("torch/state_dict.pt").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let tree = open(&state, OpenOptions::default()).await.unwrap().tree;
    let ckpt = Checkpointer::new(
        backend.location("files/"),
        CheckpointerOptions {
            prefix: "model".into(),
            period: 2,
            keep_last: Some(2),
            form: Form::TorchFile {
                extension: "pt".into(),
            },
            ..CheckpointerOptions::default()
        },
    );
    for index in 0..=5 {
        let saved = ckpt.save(index, &tree, index == 5).await.unwrap();
        assert_eq!(
            saved.is_some(),
            index % 2 == 0 || index == 5,
            "[{}] {index}",
            backend.name
        );
    }
    // Saving an index again replaces its file.
    let again = ckpt.save(5, &tree, true).await.unwrap().unwrap();
    assert!(
        again.uri.ends_with("files/model5.pt"),
        "[{}] {}",
        backend.name,
        again.uri
    );
    let on_store = ckptio::stat(&ckpt.location(5)).await.unwrap().size;
    assert_eq!(
        again.bytes, on_store,
        "[{}] the size reported is the file's",
        backend.name
    );
    let listed = ckpt.list().await.unwrap();
    let names: Vec<(&str, Kind)> = listed.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        [("model4.pt", Kind::File), ("model5.pt", Kind::File)],
        "[{}] the last two kept",
        backend.name
    );
    let (index, latest) = ckpt.load_latest().await.unwrap().unwrap();
    assert_eq!(index, 5);
    assert_eq!(latest.format, ckptio::Format::Torch);
    let want = materialize_tree(&tree, MaterializeOptions::default())
        .await
        .unwrap();
    let got = materialize_tree(&latest.tree, MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(got, want, "[{}]", backend.name);
    ckpt.delete_existing().await.unwrap();
    assert!(ckpt.list().await.unwrap().is_empty(), "[{}]", backend.name);
}

#[tokio::test]
async fn a_checkpointer_of_torch_files_saves_by_period_replaces_and_keeps_the_last_n() {
    for name in support::BACKENDS {
        support::run(name, "ckpt-torch-files", torch_files).await;
    }
}

#[tokio::test]
async fn an_orbax_manager_root_lists_its_steps_and_loads_the_latest_committed_one() {
    use ckptio::{Checkpointer, CheckpointerOptions, Kind};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    copy_dir(&fixture("orbax/manager"), &root);
    // A save in progress (never numbered) and a step that died before its metadata.
    copy_dir(
        &root.join("2"),
        &root.join("3.orbax-checkpoint-tmp-1795962745"),
    );
    copy_dir(&root.join("2/default"), &root.join("5/default"));
    std::fs::copy(root.join("2/default/_METADATA"), root.join("5/_METADATA")).unwrap();
    let loc = ckptio::resolve(&format!("{}/", root.display()), &Default::default()).unwrap();
    let ckpt = Checkpointer::new(
        loc,
        CheckpointerOptions {
            prefix: String::new(),
            ..CheckpointerOptions::default()
        },
    );
    let entries = ckpt.list().await.unwrap();
    let seen: Vec<(u64, Kind, bool)> = entries
        .iter()
        .map(|e| (e.index, e.kind, e.committed))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Kind::Orbax, true),
            (2, Kind::Orbax, true),
            (5, Kind::Orbax, false)
        ]
    );
    assert_eq!(ckpt.latest().await.unwrap(), Some(2));
    let (step, checkpoint) = ckpt.load_latest().await.unwrap().unwrap();
    assert_eq!(step, 2);
    assert!(matches!(
        checkpoint.tree.get("step"),
        Some(ckptio::Node::Leaf(ckptio::Leaf::Int(ckptio::Int::Small(2))))
    ));
    // Removing a step deletes what commits it first, then the rest.
    ckpt.remove(1).await.unwrap();
    assert_eq!(ckpt.list().await.unwrap().first().unwrap().index, 2);
    assert!(!root.join("1").join("commit_success.txt").exists());
}

#[tokio::test]
async fn an_orbax_step_on_an_object_store_needs_its_commit_success_file() {
    use ckptio::{Checkpointer, CheckpointerOptions};
    use object_store::ObjectStoreExt;

    let root = ckptio::resolve("memory://orbax-commit/run/", &Default::default()).unwrap();
    for (key, committed) in [("run/7", true), ("run/8", false)] {
        let mut files = vec!["_CHECKPOINT_METADATA", "default/_METADATA"];
        if committed {
            files.push("commit_success.txt");
        }
        for f in files {
            root.store()
                .put(
                    &format!("{key}/{f}").as_str().into(),
                    vec![b'{', b'}'].into(),
                )
                .await
                .unwrap();
        }
    }
    let ckpt = Checkpointer::new(
        root,
        CheckpointerOptions {
            prefix: String::new(),
            ..CheckpointerOptions::default()
        },
    );
    let committed: Vec<(u64, bool)> = ckpt
        .list()
        .await
        .unwrap()
        .iter()
        .map(|e| (e.index, e.committed))
        .collect();
    assert_eq!(committed, [(7, true), (8, false)]);
    assert_eq!(ckpt.latest().await.unwrap(), Some(7));
}

#[tokio::test]
async fn rm_refuses_a_directory_that_holds_no_checkpoint_and_touches_nothing_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let notes = work.join("notes");
    std::fs::create_dir_all(notes.join("sub")).unwrap();
    std::fs::write(notes.join("todo.txt"), "keep me").unwrap();
    std::fs::write(notes.join("sub").join("more.txt"), "and me").unwrap();
    let arg = notes.to_str().unwrap();
    support::cli::fails_with(
        work,
        &["rm", arg],
        &["holds no checkpoint", "todo.txt", "not removed", "--force"],
    )
    .await;
    let err = ckptio::remove(&support::cli::local(&notes))
        .await
        .unwrap_err();
    assert!(matches!(err, ckptio::Error::NoCheckpoint { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(notes.join("todo.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(notes.join("sub/more.txt")).unwrap(),
        "and me"
    );

    let out = support::cli::ckptio(work, &["rm", "--force", arg]).await;
    assert!(out.status.success(), "{}", support::cli::stderr(&out));
    assert!(!notes.exists(), "--force removes everything under it");
}

#[tokio::test]
async fn rm_of_a_save_that_died_names_it_and_force_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let partial = tmp.path().join("step-50");
    std::fs::create_dir_all(&partial).unwrap();
    for e in std::fs::read_dir(fixture("torch/dcp_single")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != ".metadata" {
            std::fs::copy(e.path(), partial.join(e.file_name())).unwrap();
        }
    }
    let loc = support::cli::local(&partial);
    let err = ckptio::remove(&loc).await.unwrap_err().to_string();
    assert!(
        err.contains("without `.metadata` is a save that did not finish")
            && err.contains("not removed"),
        "{err}"
    );
    assert_eq!(
        ckptio::remove_any(&loc).await.unwrap(),
        ckptio::Kind::Unknown
    );
    assert!(!partial.exists());
    assert_eq!(
        ckptio::remove(&loc).await.unwrap(),
        ckptio::Kind::Unknown,
        "nothing there is not an error"
    );
}
