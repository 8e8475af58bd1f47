//! The tracing subscriber: human-readable events on stderr, with every URL scrubbed, because
//! object_store logs request URLs (and with them presigned signatures) on retries.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `RUST_LOG` overrides the level chosen by `-v`/`-q`.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,ckptio=debug,object_store=debug",
        (false, _) => "debug,ckptio=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbingStderr)
        .with_target(verbose > 0)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Stderr, with URLs redacted. The fmt layer writes each event with one `write_all`, so an
/// event's URLs are never split across calls.
struct ScrubbingStderr;

impl Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr()
            .lock()
            .write_all(ckptio::scrub_urls(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
