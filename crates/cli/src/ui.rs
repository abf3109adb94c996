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
pub use holdfast_engine::listing::format_time as time;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nowhere (`--quiet`, or no terminal).
    Off,
    /// A bar on the terminal (stderr).
    Bar,
    /// JSON lines on stderr, one a second and a last one at the end (`--json`): stdout
    /// keeps the one result document.
    Json,
}

impl ProgressMode {
    /// The mode for the global flags: JSON lines with `--json`, a bar on a terminal,
    /// nothing otherwise or with `--quiet`.
    pub fn for_args(quiet: bool, json: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Off
        } else if json {
            ProgressMode::Json
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Off
        }
    }
}

/// Counters a progress display polls: (entries done, bytes done, bytes in total or 0
/// while unknown).
pub type Counters = Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>;

/// One JSON progress line (`message_type` "status", as restic's scripts expect).
pub fn status_line(what: &str, (n, bytes, total): (u64, u64, u64), elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    let mut v = serde_json::json!({
        "message_type": "status",
        "action": what,
        "entries_done": n,
        "bytes_done": bytes,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "bytes_per_s": rate.round() as u64,
    });
    if total > 0 {
        let total = total.max(bytes);
        v["bytes_total"] = total.into();
        v["percent"] = ((bytes as f64 * 1000.0 / total as f64).round() / 10.0).into();
        if rate > 0.0 {
            v["eta_s"] = (((total - bytes) as f64 / rate).round() as u64).into();
        }
    }
    v.to_string()
}

/// A progress display fed from atomic counters.
pub struct Progress {
    bar: Option<ProgressBar>,
    json: Option<(&'static str, Counters, std::time::Instant)>,
    stop: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts a bar, or JSON status lines, that poll `entries` (see [`Counters`]).
    pub fn start(mode: ProgressMode, what: &'static str, entries: Counters) -> Progress {
        let stop = Arc::new(AtomicU64::new(0));
        match mode {
            ProgressMode::Off => Progress {
                bar: None,
                json: None,
                stop,
                thread: None,
            },
            ProgressMode::Json => {
                let started = std::time::Instant::now();
                let (s, e) = (stop.clone(), entries.clone());
                let thread = std::thread::spawn(move || {
                    let mut next = Duration::from_secs(1);
                    while s.load(Ordering::Relaxed) == 0 {
                        if started.elapsed() >= next {
                            eprintln!("{}", status_line(what, e(), started.elapsed()));
                            next += Duration::from_secs(1);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                Progress {
                    bar: None,
                    json: Some((what, entries, started)),
                    stop,
                    thread: Some(thread),
                }
            }
            ProgressMode::Bar => Self::start_bar(what, entries, stop),
        }
    }

    fn start_bar(what: &'static str, entries: Counters, stop: Arc<AtomicU64>) -> Progress {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed_precise}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(what);
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
            json: None,
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
        if let Some((what, entries, started)) = self.json.take() {
            eprintln!("{}", status_line(what, entries(), started.elapsed()));
        }
    }
}
