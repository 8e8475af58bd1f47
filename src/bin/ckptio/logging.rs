//! The tracing subscriber: human-readable events on stderr, every line redacted (object_store
//! logs request URLs with their signatures; hyper's pool logs a connection's
//! `user:password@host`) and made printable, whichever crate wrote it.

use std::io::{self, Write};

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
        // Lines are made printable, which would show colour codes as text.
        .with_ansi(false)
        .init();
}

/// Stderr, with secrets redacted and control characters escaped. The fmt layer writes each
/// event with one `write_all`, so an event's text is never split across calls.
struct ScrubbingStderr;

impl Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = ckptio::redact(text.trim_end_matches('\n'));
        let mut out = crate::text::printable(&line).into_owned();
        out.push('\n');
        io::stderr().lock().write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
