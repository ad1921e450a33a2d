//! Progress: a bar on a terminal (indicatif), log lines otherwise (cron, systemd, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports the steps of a run.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar when stderr is a terminal and `enabled`, else log lines.
    pub fn new(enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        Progress { bar }
    }

    /// No bar, log lines only.
    pub fn quiet() -> Progress {
        Progress { bar: None }
    }

    /// Adds `n` steps to the total.
    pub fn add(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(n);
        }
    }

    /// Starts a step.
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            // Steps are debug: at the default level a run logs one line per date.
            None => tracing::debug!(step = message, "working"),
        }
    }

    /// Ends a step.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
