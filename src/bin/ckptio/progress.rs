//! Progress bars: the CLI's rendering of the library's progress events.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte progress bar on stderr (bytes, rate, ETA); hidden when stderr is not a terminal or
/// with `--quiet`.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template(
            "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("a valid template");
        bar.set_style(style);
        Self(bar)
    }
}

impl ckptio::Progress for Bar {
    fn started(&self, _uri: &str, total: u64) {
        self.0.set_length(total);
        self.0.enable_steady_tick(Duration::from_millis(200));
    }

    fn advanced(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn retrying(&self, attempt: usize, delay: Duration, _cause: &str) {
        self.0
            .set_message(format!("retry {attempt} in {delay:.1?}"));
    }

    fn finished(&self) {
        self.0.finish_and_clear();
    }
}
