//! `ckptio`: inspect, fetch and copy ML checkpoints on any store.

mod checkpoints;
mod convert;
mod cp;
mod get;
mod inspect;
mod logging;
mod progress;
mod stat;
mod text;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Read and write ML checkpoints and model weights on local disk, S3, GCS, Azure and HTTP.
#[derive(Debug, Parser)]
#[command(name = "ckptio", version, about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Size, ETag, last-modified time and version of an object.
    Stat(stat::Args),
    /// Download an object with parallel range requests (resumable, ETag-pinned).
    Get(get::Args),
    /// Show a checkpoint's tree (tensor dtypes, shapes, sizes; metadata) without fetching data.
    Inspect(inspect::Args),
    /// Convert a checkpoint to safetensors or a ckptio checkpoint, streaming.
    Convert(convert::Args),
    /// Copy an object or a whole checkpoint between any two stores (streaming, multipart).
    Cp(cp::Args),
    /// List the numbered checkpoints under a root (committed or partial), or the latest.
    Ls(checkpoints::LsArgs),
    /// Read every tensor of a checkpoint once, checking sizes and checksums.
    Verify(checkpoints::VerifyArgs),
    /// Remove a checkpoint (its commit marker first).
    Rm(checkpoints::RmArgs),
}

/// The user pressed Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (a partial download stays in DEST.part; run again to resume)")
    }
}

impl std::error::Error for Interrupted {}

/// A `KEY=VALUE` store option (`-o endpoint=http://127.0.0.1:9000`), overriding the environment.
#[derive(Debug, Clone)]
pub struct StoreOption(String, String);

impl std::str::FromStr for StoreOption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
        Ok(Self(k.to_owned(), v.to_owned()))
    }
}

fn storage_options(options: &[StoreOption]) -> ckptio::StorageOptions {
    options
        .iter()
        .map(|StoreOption(k, v)| (k, v.clone()))
        .collect()
}

/// The store options every command takes.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// A store option KEY=VALUE (repeatable), overriding the environment.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<StoreOption>,
}

impl StoreArgs {
    /// `uri`, resolved with these options.
    pub fn resolve(&self, uri: &str) -> ckptio::Result<ckptio::Location> {
        ckptio::resolve(uri, &storage_options(&self.options))
    }
}

/// The store options of a command with a source and a destination (`convert`, `cp`).
#[derive(Debug, clap::Args)]
pub struct SrcDstArgs {
    #[command(flatten)]
    both: StoreArgs,
    /// A store option for SRC only (repeatable).
    #[arg(long = "src-option", value_name = "KEY=VALUE")]
    src_options: Vec<StoreOption>,
    /// A store option for DST only (repeatable).
    #[arg(long = "dst-option", value_name = "KEY=VALUE")]
    dst_options: Vec<StoreOption>,
}

impl SrcDstArgs {
    /// SRC and DST resolved, each with the shared options its store takes and its own.
    pub fn resolve(
        &self,
        src: &str,
        dst: &str,
    ) -> ckptio::Result<(ckptio::Location, ckptio::Location)> {
        let options = ckptio::PairOptions {
            shared: storage_options(&self.both.options),
            src: storage_options(&self.src_options),
            dst: storage_options(&self.dst_options),
        };
        ckptio::resolve_pair(src, dst, &options)
    }
}

/// `err`, or, when it says that no object is at `location` and a directory (a prefix) is, an
/// error that says so and how to copy the directory.
pub async fn object_error(location: &ckptio::Location, err: ckptio::Error) -> anyhow::Error {
    if let ckptio::Error::NotFound { .. } = err
        && let Ok(listing) = ckptio::list(location).await
    {
        let held = match listing.names().count() + listing.dirs().len() {
            0 => None,
            1 => Some("1 entry".to_owned()),
            n => Some(format!("{n} entries")),
        };
        if let Some(held) = held {
            return anyhow::anyhow!(
                "{location}: a directory ({held}), not an object; `ckptio cp {location}/ \
                     DEST/` copies it"
            );
        }
    }
    err.into()
}

/// `tree` without the paths matching an `--ignore` glob.
pub fn ignored(tree: ckptio::StateTree, ignore: &[String]) -> anyhow::Result<ckptio::StateTree> {
    if ignore.is_empty() {
        return Ok(tree);
    }
    let globs: Vec<&str> = ignore.iter().map(String::as_str).collect();
    Ok(tree.ignore(&globs)?)
}

/// How checkpoints are read (shared by `inspect`, `convert` and `verify`).
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Refuse pickled objects of classes ckptio does not understand, instead of keeping them
    /// as opaque nodes.
    #[arg(long)]
    strict: bool,
    /// Skip checksum checks (torch storages' CRC-32, ckptio tensors' CRC-32C or SHA-256).
    #[arg(long)]
    no_verify: bool,
}

impl ReadArgs {
    /// The library's options, fetching with `fetch`.
    pub fn options(&self, fetch: ckptio::FetchOptions) -> ckptio::OpenOptions {
        ckptio::OpenOptions {
            fetch,
            read: ckptio::ReadOptions {
                strict: self.strict,
                verify: !self.no_verify,
            },
            ..Default::default()
        }
    }
}

pub(crate) use text::{out, out_json, say};

/// An error and its causes as one line; a cause whose text the line already holds (ckptio's
/// errors show their format's error) is not repeated.
fn message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ckptio: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Stat(args) => stat::run(args).await,
            Command::Get(args) => get::run(args, cli.quiet).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Convert(args) => convert::run(args, cli.quiet).await,
            Command::Cp(args) => cp::run(args, cli.quiet).await,
            Command::Ls(args) => checkpoints::ls(args, cli.quiet).await,
            Command::Verify(args) => checkpoints::verify(args).await,
            Command::Rm(args) => checkpoints::rm(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing left to say.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Library errors are already redacted; scrub again for anything added on top.
            say!("ckptio: error: {}", ckptio::redact(&message(err.as_ref())));
            if err.is::<Interrupted>() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
