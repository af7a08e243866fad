//! The one progress bar of every long loop (sweep points, training steps): on stderr, hidden
//! with `--quiet` or when stderr is not a terminal, and cleared from the terminal when it is
//! dropped, so an error or an interrupt never leaves a half-drawn line behind.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar: `label [bar] pos/len unit [elapsed, ETA]`, with an optional message.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` `unit`s (e.g. "points", "steps") titled `label`; `message` names the
    /// value shown after the bar (e.g. "loss"), if any. Hidden unless `show`.
    pub fn new(show: bool, label: &str, len: u64, unit: &str, message: Option<&str>) -> Self {
        let bar = if show {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let tail = message.map(|m| format!(" {m} {{msg}}")).unwrap_or_default();
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{label} {{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed}} elapsed, ETA {{eta}}]{tail}"
            ))
            .expect("valid template"),
        );
        Progress { bar }
    }

    /// Start at `pos` (e.g. the points a resumed sweep already has), with the ETA counted from
    /// now.
    pub fn start_at(&self, pos: u64) {
        self.bar.set_position(pos);
        self.bar.reset_eta();
    }

    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn message(&self, text: String) {
        self.bar.set_message(text);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
