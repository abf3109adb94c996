//! Output helpers: sizes, times and progress bars (only on a terminal).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Human-readable size, binary units.
pub fn size(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}

/// RFC 3339 local-offset time for a snapshot.
pub fn time(ns: i64, offset_s: i32) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nsec = ns.rem_euclid(1_000_000_000) as u32;
    let off = chrono::FixedOffset::east_opt(offset_s)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    match chrono::DateTime::from_timestamp(secs, nsec) {
        Some(t) => t
            .with_timezone(&off)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("@{secs}"),
    }
}

/// A progress display fed from atomic counters, drawn only on a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts a spinner/bar that polls `entries` and `bytes` (and `total`, if known).
    pub fn start(
        enabled: bool,
        what: &'static str,
        entries: Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>,
    ) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                stop: Arc::new(AtomicU64::new(0)),
                thread: None,
            };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed_precise}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(what);
        let stop = Arc::new(AtomicU64::new(0));
        let (b, s) = (bar.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while s.load(Ordering::Relaxed) == 0 {
                let (n, bytes, total) = entries();
                b.set_length(total.max(bytes));
                b.set_position(bytes);
                b.set_message(format!("{n} entries"));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Progress {
            bar: Some(bar),
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and clears the display.
    pub fn finish(mut self) {
        self.stop.store(1, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
