//! `ckptio stat` run as a user runs it: the built binary, in its own temp directory, configured
//! by the environment or by `-o` options, against every configured server.

mod support;

use std::collections::BTreeMap;
use std::process::Output;

use support::{Backend, pattern};
use tokio::process::Command;

const SECRET: &str = "ckptio-wrong-secret-5f3a9c";
const SIGNATURE: &str = "sig0123456789abcdef";

/// The binary with a clean environment: no credentials leak in from the developer's shell, and
/// cloud metadata services are off so a missing credential fails at once.
fn ckptio(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckptio"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_GCE_CHECK", "true");
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` and checks the exit status; returns (stdout, stderr). No output may show a panic.
async fn run(cmd: &mut Command, success: bool) -> (String, String) {
    let out = cmd.output().await.expect("run ckptio");
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.success(),
        success,
        "status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn stat_local_path_and_file_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), pattern(1234)).unwrap();

    let (stdout, _) = run(ckptio(dir.path()).args(["stat", "w.bin"]), true).await;
    assert!(
        stdout.contains("size           1234 (1.21 KiB)"),
        "{stdout}"
    );
    assert!(stdout.contains("etag"), "{stdout}");

    let url = format!("file://{}/w.bin", dir.path().display());
    let (stdout, _) = run(ckptio(dir.path()).args(["stat", "--json", &url]), true).await;
    let doc = json(&stdout);
    assert_eq!(doc["size"], 1234);
    assert_eq!(doc["uri"], format!("{}/w.bin", dir.path().display()));
    assert!(
        doc["etag"].is_string() && doc["last_modified"].is_string(),
        "{doc}"
    );
}

#[tokio::test]
async fn stat_missing_local_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = run(ckptio(dir.path()).args(["stat", "nope.safetensors"]), false).await;
    assert!(stderr.contains("nope.safetensors: not found"), "{stderr}");
}

/// The backend's options as the environment variables a user would set instead.
fn option_env(b: &Backend) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let azure = b.base.starts_with("az://");
    for (k, v) in b.options.iter() {
        let name = match k {
            "endpoint" if azure => "AZURE_STORAGE_ENDPOINT",
            "account_name" => "AZURE_STORAGE_ACCOUNT_NAME",
            "access_key" => "AZURE_STORAGE_ACCOUNT_KEY",
            "allow_http" if azure => "AZURE_ALLOW_HTTP",
            "endpoint" => "AWS_ENDPOINT_URL",
            "access_key_id" => "AWS_ACCESS_KEY_ID",
            "secret_access_key" => "AWS_SECRET_ACCESS_KEY",
            "region" => "AWS_REGION",
            "storage_emulator_host" => "STORAGE_EMULATOR_HOST",
            other => panic!("no environment variable for option `{other}`"),
        };
        env.insert(name.to_owned(), v.to_owned());
    }
    env
}

async fn stat_on(name: &'static str) {
    let Some(b) = Backend::from_env(name, "cli-stat") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    b.seed("w.bin", pattern(4097)).await;
    let uri = b.uri("w.bin");

    let (stdout, _) = run(
        ckptio(dir.path())
            .arg("stat")
            .arg(&uri)
            .args(b.option_args())
            .arg("--json"),
        true,
    )
    .await;
    let doc = json(&stdout);
    assert_eq!(doc["size"], 4097, "[{name}] {doc}");
    assert!(
        doc["etag"].as_str().is_some_and(|e| !e.is_empty()),
        "[{name}] {doc}"
    );

    let (stdout, _) = run(
        ckptio(dir.path())
            .arg("stat")
            .arg(&uri)
            .envs(option_env(&b)),
        true,
    )
    .await;
    assert!(
        stdout.contains("size           4097"),
        "[{name}] configured from the environment: {stdout}"
    );
    b.cleanup().await;
}

#[tokio::test]
async fn stat_on_s3s() {
    stat_on("s3s").await;
}

#[tokio::test]
async fn stat_on_moto() {
    stat_on("moto").await;
}

#[tokio::test]
async fn stat_on_garage() {
    stat_on("garage").await;
}

#[tokio::test]
async fn stat_on_seaweedfs() {
    stat_on("seaweedfs").await;
}

#[tokio::test]
async fn stat_on_gcs_emulator() {
    stat_on("gcs").await;
}

#[tokio::test]
async fn stat_on_azurite() {
    stat_on("azure").await;
}

#[tokio::test]
async fn stat_on_nginx() {
    stat_on("http").await;
}

#[tokio::test]
async fn presigned_style_query_is_kept_and_never_shown() {
    let Some(b) = Backend::from_env("http", "cli-query") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    b.seed("w.bin", pattern(10)).await;
    let uri = format!(
        "{}?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=60",
        b.uri("w.bin")
    );
    let (stdout, stderr) = run(ckptio(dir.path()).args(["-v", "stat", &uri]), true).await;
    assert!(stdout.contains("size           10"), "{stdout}");
    assert!(
        stdout.contains("X-Amz-Signature=REDACTED&X-Amz-Expires=60"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(SIGNATURE) && !stderr.contains(SIGNATURE),
        "{stdout}\n{stderr}"
    );

    let missing = format!("{}?X-Amz-Signature={SIGNATURE}", b.uri("missing.bin"));
    let (_, stderr) = run(ckptio(dir.path()).args(["-v", "stat", &missing]), false).await;
    assert!(
        stderr.contains("missing.bin?X-Amz-Signature=REDACTED: not found"),
        "{stderr}"
    );
    assert!(!stderr.contains(SIGNATURE), "{stderr}");
}

#[tokio::test]
async fn wrong_s3_secret_is_a_permission_error_without_the_secret() {
    // s3s-fs checks SigV4 signatures; moto accepts any credentials.
    let Some(b) = Backend::from_env("s3s", "cli-wrong-secret") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    b.seed("w.bin", pattern(10)).await;
    let mut env = option_env(&b);
    env.insert("AWS_SECRET_ACCESS_KEY".into(), SECRET.into());
    let (stdout, stderr) = run(
        ckptio(dir.path())
            .args(["-v", "stat", &b.uri("w.bin")])
            .envs(env),
        false,
    )
    .await;
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains(&b.uri("w.bin")), "names the URI: {stderr}");
    assert!(
        !stderr.contains(SECRET) && !stdout.contains(SECRET),
        "{stderr}"
    );
    b.cleanup().await;
}

#[tokio::test]
async fn missing_credentials_say_how_to_provide_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = run(ckptio(dir.path()).args(["stat", "s3://bucket/key"]), false).await;
    assert!(
        stderr.contains("s3://bucket/key: no credentials"),
        "{stderr}"
    );
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    let (_, stderr) = run(ckptio(dir.path()).args(["stat", "gs://bucket/key"]), false).await;
    assert!(
        stderr.contains("gs://bucket/key: no credentials"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_uris_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ftp://host/x", "unsupported scheme `ftp`"),
        (
            "s3:///key",
            "missing bucket name (expected s3://BUCKET/KEY)",
        ),
        ("gs://", "missing bucket name"),
        ("http://", "malformed URI"),
        ("s3:bucket/key", "malformed URI: expected `s3://`"),
        (&format!("https://user:{SECRET}@/x"), "malformed URI"),
    ];
    for (uri, expected) in cases {
        let (_, stderr) = run(ckptio(dir.path()).args(["stat", uri]), false).await;
        assert!(stderr.contains(expected), "{uri}: {stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
    }
    let (_, stderr) = run(
        ckptio(dir.path()).args(["stat", "s3://b/k", "-o", "endpiont=http://x"]),
        false,
    )
    .await;
    assert!(stderr.contains("invalid option `endpiont`"), "{stderr}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_clear_error_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut s3 = ckptio(dir.path());
    s3.args([
        "-v",
        "stat",
        "s3://bucket/key",
        "-o",
        &format!("endpoint={endpoint}"),
    ])
    .args([
        "-o",
        "access_key_id=AKIDTEST",
        "-o",
        &format!("secret_access_key={SECRET}"),
    ])
    .args(["-o", "request_retries=1"]);
    let (_, stderr) = run(&mut s3, false).await;
    assert!(
        stderr.contains("s3://bucket/key: cannot reach the endpoint"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");

    let http = format!("{endpoint}/w.bin?X-Amz-Signature={SIGNATURE}");
    let (_, stderr) = run(
        ckptio(dir.path()).args(["-v", "stat", &http, "-o", "request_retries=1"]),
        false,
    )
    .await;
    assert!(stderr.contains("cannot reach the endpoint"), "{stderr}");
    assert!(!stderr.contains(SIGNATURE), "{stderr}");
}

#[tokio::test]
async fn options_no_request_could_carry_are_refused_before_any() {
    let dir = tempfile::tempdir().unwrap();
    let creds = ["-o", "access_key_id=AKIDTEST", "-o", "secret_access_key=s"];
    for (option, says) in [
        (
            "endpoint=not-a-url",
            "invalid option `aws_endpoint`: `not-a-url` is not a URL",
        ),
        (
            "region=eu west",
            "invalid option `aws_region`: `eu west` is not a region name",
        ),
        (
            "session_token=tok\r",
            "invalid option `aws_session_token`: holds a control character",
        ),
    ] {
        let (_, stderr) = run(
            ckptio(dir.path())
                .args(["stat", "s3://bucket/key", "-o", option])
                .args(creds),
            false,
        )
        .await;
        assert!(
            stderr.contains(&format!("s3://bucket/key: {says}")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn get_to_a_file_a_directory_and_stdout() {
    let Some(b) = Backend::from_env("http", "cli-get") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 * 65536 + 7);
    b.seed("w.bin", data.clone()).await;
    let uri = b.uri("w.bin");

    let small = ["--chunk-size", "64k", "--concurrency", "3"];
    let (stdout, stderr) = run(
        ckptio(dir.path())
            .args(["get", &uri, "out.bin"])
            .args(small),
        true,
    )
    .await;
    assert_eq!(std::fs::read(dir.path().join("out.bin")).unwrap(), data);
    assert!(
        stdout.is_empty() && stderr.is_empty(),
        "no bar when stderr is not a terminal: {stderr}"
    );

    std::fs::create_dir(dir.path().join("into")).unwrap();
    run(ckptio(dir.path()).args(["get", &uri, "into"]), true).await;
    assert_eq!(std::fs::read(dir.path().join("into/w.bin")).unwrap(), data);
    run(ckptio(dir.path()).args(["get", &uri, "fresh/"]), true).await;
    assert_eq!(
        std::fs::read(dir.path().join("fresh/w.bin")).unwrap(),
        data,
        "a trailing / names a directory"
    );

    let out = ckptio(dir.path())
        .args(["get", &uri, "-"])
        .args(small)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "stdout carries the object's bytes in order"
    );
    b.cleanup().await;
}

#[tokio::test]
async fn get_of_a_missing_object_names_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = run(
        ckptio(dir.path()).args(["get", "nope.bin", "out.bin"]),
        false,
    )
    .await;
    assert!(stderr.contains("nope.bin: not found"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let (_, stderr) = run(
        ckptio(dir.path()).args(["get", "x", "y", "--chunk-size", "lots"]),
        false,
    )
    .await;
    assert!(stderr.contains("not a size"), "{stderr}");
}

#[tokio::test]
async fn get_and_stat_of_a_directory_say_it_is_one_and_how_to_copy_it() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(run_dir.join("step-1")).unwrap();
    std::fs::write(run_dir.join("step-1/manifest.json"), "{}").unwrap();
    std::fs::write(run_dir.join("notes.txt"), "x").unwrap();
    let shown = run_dir.display().to_string();
    for args in [vec!["get", "run/", "out.bin"], vec!["stat", "run"]] {
        let (_, stderr) = run(ckptio(dir.path()).args(&args), false).await;
        assert!(
            stderr.contains(&format!(
                "{shown}: a directory (2 entries), not an object; `ckptio cp {shown}/ DEST/`"
            )),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("out.bin").exists());
}

/// A FIFO `name` made in `dir`.
fn mkfifo(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let fifo = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    fifo
}

/// A destination that is not a regular file (`/dev/null`, a FIFO) is never replaced by a
/// renamed file: `get` and `cp` write the object through it, a conversion refuses it.
#[tokio::test]
async fn a_fifo_destination_is_written_through_or_refused_never_replaced() {
    use std::os::unix::fs::FileTypeExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path(), "pipe");
    let src = support::cli::fixture("tiny.safetensors");
    let want = std::fs::read(&src).unwrap();
    let args = |cmd: &str| [cmd.to_owned(), src.display().to_string(), "pipe".to_owned()];
    for cmd in ["get", "cp"] {
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read(fifo).unwrap()
        });
        run(ckptio(dir.path()).args(args(cmd)), true).await;
        // Before the reader is joined: a FIFO renamed over would leave it waiting forever.
        assert!(
            std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
            "{cmd} replaced the FIFO"
        );
        assert_eq!(
            reader.join().unwrap(),
            want,
            "{cmd} wrote the object through"
        );
    }
    let (_, stderr) = run(
        ckptio(dir.path()).args([
            "convert",
            &src.display().to_string(),
            "pipe",
            "--to",
            "torch",
        ]),
        false,
    )
    .await;
    assert!(
        stderr.contains("pipe: a FIFO, not a regular file"),
        "{stderr}"
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["pipe"], "no staging or .part file left");
}

/// A source that is not a regular file (a FIFO, as `<(cat file)` gives; a device) is refused
/// at once, where a FIFO without a writer blocked forever and `/dev/zero` read as empty.
#[tokio::test]
async fn a_fifo_or_device_source_is_refused_not_waited_on_or_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(dir.path(), "pipe");
    for (src, kind) in [("pipe", "a FIFO"), ("/dev/zero", "a character device")] {
        for cmd in [&["inspect", src][..], &["get", src, "out"], &["stat", src]] {
            let mut ckptio = ckptio(dir.path());
            ckptio.args(cmd);
            let run =
                tokio::time::timeout(std::time::Duration::from_secs(20), run(&mut ckptio, false));
            let (_, stderr) = run.await.unwrap_or_else(|_| panic!("{cmd:?} hung"));
            assert!(
                stderr.contains(&format!(
                    "{kind}, not a regular file: ckptio reads a file by byte ranges"
                )),
                "{cmd:?}: {stderr}"
            );
        }
    }
    assert!(!dir.path().join("out").exists(), "nothing written");
}

/// A one-file conversion into a directory (an existing one, or DST ending in `/`) takes the
/// source's name, as `get` and `cp` do, where it failed its rename or wrote a file `out`.
#[tokio::test]
async fn a_one_file_conversion_into_a_directory_takes_the_sources_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = support::cli::fixture("torch/state_dict.pt");
    let src = src.to_str().unwrap();
    std::fs::create_dir(dir.path().join("have")).unwrap();
    for (dst, to, written) in [
        ("have", "safetensors", "have/state_dict.safetensors"),
        ("new/", "torch", "new/state_dict.pt"),
    ] {
        run(
            ckptio(dir.path()).args(["convert", src, dst, "--to", to, "-q"]),
            true,
        )
        .await;
        let names: Vec<_> = std::fs::read_dir(dir.path().join(dst))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names, [dir.path().join(written)], "{dst} --to {to}");
    }
}

#[tokio::test]
async fn ctrl_c_leaves_no_final_file_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20);
    std::fs::write(dir.path().join("src.bin"), &data).unwrap();
    let args = [
        "get",
        "src.bin",
        "out.bin",
        "--chunk-size",
        "256k",
        "--concurrency",
        "1",
        "--limit-rate",
        "1M",
    ];
    let child = ckptio(dir.path())
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = dir.path().join("out.bin.part");
    while !part.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert!(
        !dir.path().join("out.bin").exists(),
        "no final-named partial file"
    );
    assert!(part.exists(), "the partial download is kept for a resume");

    run(ckptio(dir.path()).args(["get", "src.bin", "out.bin"]), true).await;
    assert!(std::fs::read(dir.path().join("out.bin")).unwrap() == data);
    assert!(!part.exists() && !dir.path().join("out.bin.part.json").exists());
}

/// A password in a URL's userinfo or in an S3 endpoint never reaches a log line, whatever the
/// verbosity: hyper's pool logs connections as `("http", user:password@host)`.
#[tokio::test]
async fn passwords_never_reach_a_log_line_at_any_verbosity() {
    let dir = tempfile::tempdir().unwrap();
    const PASSWORD: &str = "pw-in-userinfo-7c2e91";
    if let Some(b) = Backend::from_env("http", "cli-userinfo") {
        b.seed("w.bin", pattern(10)).await;
        let uri = b
            .uri("w.bin")
            .replacen("http://", &format!("http://alice:{PASSWORD}@"), 1);
        for verbosity in ["-v", "-vv"] {
            let (stdout, stderr) = run(
                ckptio(dir.path())
                    .args([verbosity, "stat", &uri])
                    .env("RUST_LOG", "trace"),
                true,
            )
            .await;
            assert!(
                stderr.contains("hyper"),
                "the test sees other crates' lines"
            );
            assert!(
                !stderr.contains(PASSWORD) && !stdout.contains(PASSWORD),
                "{verbosity}: {stderr}"
            );
        }
    }
    if let Some(b) = Backend::from_env("s3s", "cli-endpoint-password") {
        b.seed("w.bin", pattern(10)).await;
        let endpoint = b.options.get("endpoint").unwrap().replacen(
            "http://",
            &format!("http://bob:{PASSWORD}@"),
            1,
        );
        let mut args: Vec<String> = ["-vv", "stat", &b.uri("w.bin")].map(String::from).into();
        for (k, v) in b.options.iter().filter(|(k, _)| *k != "endpoint") {
            args.extend(["-o".to_owned(), format!("{k}={v}")]);
        }
        args.extend(["-o".to_owned(), format!("endpoint={endpoint}")]);
        let out = ckptio(dir.path())
            .args(&args)
            .env("RUST_LOG", "trace")
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            !stderr.contains(PASSWORD) && !stdout.contains(PASSWORD),
            "{stderr}"
        );
        b.cleanup().await;
    }
}

/// A tensor name or an error holding terminal control characters cannot rewrite the terminal:
/// they are shown escaped.
#[tokio::test]
async fn control_characters_in_names_and_errors_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let name = "w\u{1b}[2K\rforged row";
    let file = support::safetensors_file(&[(name.to_owned(), 4)]);
    std::fs::write(dir.path().join("evil.safetensors"), file).unwrap();
    let (stdout, _) = run(
        ckptio(dir.path()).args(["inspect", "evil.safetensors"]),
        true,
    )
    .await;
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(stdout.contains("w\\u{1b}[2K\\rforged row"), "{stdout}");

    let json = r#"{"x\u001b]0;pwned\u0007":{"dtype":"F99","shape":[1],"data_offsets":[0,1]}}"#;
    let mut bad = (json.len() as u64).to_le_bytes().to_vec();
    bad.extend(json.as_bytes());
    bad.push(0);
    std::fs::write(dir.path().join("bad.safetensors"), bad).unwrap();
    let (_, stderr) = run(
        ckptio(dir.path()).args(["inspect", "bad.safetensors"]),
        false,
    )
    .await;
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    assert!(stderr.contains("x\\u{1b}]0;pwned\\u{7}"), "{stderr}");
}
