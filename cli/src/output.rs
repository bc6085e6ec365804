//! Printing: a two-column table for people, one JSON document for scripts.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Rows of (label, value) printed as an aligned table under section headings.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn section(&mut self, title: &str) {
        self.rows.push((String::new(), title.to_string()));
    }

    pub fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        self.rows.push((label.to_string(), value.to_string()));
    }

    pub fn print(&self) {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            if label.is_empty() {
                println!("{value}");
            } else {
                println!("  {label:<width$}  {value}");
            }
        }
    }
}

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// `1536` -> `1.5 KiB (1536 bytes)`.
pub fn bytes(n: u64) -> String {
    format!("{} ({n} bytes)", indicatif::BinaryBytes(n))
}

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal; nothing otherwise.
    #[default]
    Auto,
    /// A line on stderr every second and one at the end (`pull: 1.50 MiB/58.75 MiB
    /// (1572864/61603840 bytes)`), terminal or not: for logs and CI.
    Lines,
    /// Nothing.
    Off,
}

static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Set the progress mode for the run (once, from `main`).
pub fn set_progress_mode(mode: ProgressMode) {
    let _ = MODE.set(mode);
}

/// The progress of one transfer: a bar ([`ProgressMode::Auto`] on a terminal), lines,
/// or nothing. The position is counted in all three.
pub struct Progress {
    bar: ProgressBar,
    lines: Option<Lines>,
}

/// The thread printing a line every second, and what it needs.
struct Lines {
    stop: Arc<AtomicBool>,
    ticker: std::thread::JoinHandle<()>,
    what: String,
    total: u64,
}

impl Progress {
    /// The position (bytes done).
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    pub fn set_position(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    /// Whether anything is shown (so a caller may skip measuring).
    pub fn is_shown(&self) -> bool {
        self.lines.is_some() || !self.bar.is_hidden()
    }

    /// `writer`, counting what goes through it.
    pub fn wrap_write<W: std::io::Write>(&self, writer: W) -> indicatif::ProgressBarIter<W> {
        self.bar.wrap_write(writer)
    }

    /// The end: the bar is cleared; in lines mode the last line is printed.
    pub fn finish(self) {
        // Before finish_and_clear, which moves the position to the length.
        let done = self.bar.position();
        self.bar.finish_and_clear();
        if let Some(lines) = self.lines {
            lines.stop.store(true, Ordering::Relaxed);
            let _ = lines.ticker.join();
            eprintln!("{}", line(&lines.what, done, lines.total));
        }
    }
}

/// One progress line.
fn line(what: &str, done: u64, total: u64) -> String {
    format!(
        "{what}: {}/{} ({done}/{total} bytes)",
        indicatif::BinaryBytes(done),
        indicatif::BinaryBytes(total)
    )
}

/// The progress of a transfer of `total` bytes, as `--progress` asks.
pub fn progress(total: u64, what: &str) -> Progress {
    let mode = MODE.get().copied().unwrap_or_default();
    if mode == ProgressMode::Lines {
        let bar = ProgressBar::hidden();
        bar.set_length(total);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (bar, stop, what) = (bar.clone(), stop.clone(), what.to_string());
            std::thread::spawn(move || {
                let mut ticks = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    ticks += 1;
                    if ticks % 10 == 0 && !stop.load(Ordering::Relaxed) {
                        eprintln!("{}", line(&what, bar.position(), total));
                    }
                }
            })
        };
        return Progress {
            bar,
            lines: Some(Lines {
                stop,
                ticker,
                what: what.to_string(),
                total,
            }),
        };
    }
    if mode == ProgressMode::Off || !std::io::stderr().is_terminal() {
        return Progress {
            bar: ProgressBar::hidden(),
            lines: None,
        };
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Progress { bar, lines: None }
}
