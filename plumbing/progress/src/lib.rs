//! Progress for long commands (load generation, dead-letter replay, repricing, benchmarks):
//! an `indicatif` bar on stderr when stderr is a terminal and nothing otherwise, and the
//! one-line summary every such command ends with, on stdout.
//!
//! Output that is piped or redirected therefore holds the command's own lines and its summary,
//! never a bar's carriage returns or escape codes. Lines printed while a bar shows go through
//! [`Progress::println`], which clears the bar, prints and redraws it.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether a bar is drawn: stderr is a terminal.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar (or spinner) that draws only on a terminal, and the command's start time.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// A bar over `len` units of work (`unit`, e.g. "events"), with `message` before it.
    pub fn bar(len: u64, unit: &str, message: &str) -> Self {
        let template = format!(
            "{{spinner}} {{msg}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
        );
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        Self::new(ProgressBar::new(len), style, message)
    }

    /// A spinner for work of unknown size (one query, a wait), with the time it has taken.
    pub fn spinner(message: &str) -> Self {
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let p = Self::new(ProgressBar::no_length(), style, message);
        p.bar.enable_steady_tick(Duration::from_millis(200));
        p
    }

    /// A bar over a run of known duration (a benchmark producing for so many seconds),
    /// moved by a thread of its own every 250 ms until the bar is cleared or finished.
    pub fn over_time(duration: Duration, message: &str) -> Self {
        let style =
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} s (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let p = Self::new(ProgressBar::new(duration.as_secs()), style, message);
        if !p.bar.is_hidden() {
            let (bar, started) = (p.bar.clone(), p.started);
            std::thread::spawn(move || {
                while !bar.is_finished() {
                    bar.set_position(started.elapsed().as_secs().min(duration.as_secs()));
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        p
    }

    fn new(bar: ProgressBar, style: ProgressStyle, message: &str) -> Self {
        let target = if on_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        bar.set_draw_target(target);
        bar.set_style(style);
        bar.set_message(message.to_string());
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// Adds `n` units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the units done.
    pub fn set_position(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Sets the total, once it is known.
    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    /// Says what is being done now.
    pub fn set_message(&self, message: impl Display) {
        self.bar.set_message(message.to_string());
    }

    /// Prints a line on stdout without tearing the bar.
    pub fn println(&self, line: impl Display) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Time since the bar was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the bar, for a step that is followed by more work (and its own bar).
    pub fn clear(self) {
        self.bar.finish_and_clear();
    }

    /// Removes the bar and prints `summary`, the command's last line, on stdout.
    pub fn finish(self, summary: impl Display) {
        self.bar.finish_and_clear();
        println!("{summary}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_off_a_terminal_is_hidden_and_counts() {
        // Tests run from a terminal have it as stderr; only the hidden case is asserted
        // (CI, piped output). tests/tests/progress.rs checks both through the binaries.
        if on_terminal() {
            return;
        }
        let p = Progress::bar(10, "events", "producing");
        assert!(p.bar.is_hidden());
        p.inc(4);
        p.set_position(7);
        assert_eq!(p.bar.position(), 7);
        let s = Progress::spinner("reading");
        assert!(s.bar.is_hidden());
    }
}
