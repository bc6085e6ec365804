//! Printing: a two-column table for people, one JSON document for scripts.

use std::io::IsTerminal;

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

/// A byte progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
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
    bar
}
