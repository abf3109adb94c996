//! Helpers for driving the holdfast binary in tests.
//!
//! * [`holdfast_bin`] finds (and if needed builds) the `holdfast` binary of the same profile
//!   as the running test.
//! * [`Repo`] is a repository in a temporary directory with a fast key derivation, and runs
//!   commands against it ([`Repo::cmd`]), returning a [`Run`] that carries the command line
//!   so that every failed assertion prints what was run, its exit code and its output.
//! * [`build_rich_tree`] makes a source tree with every kind of entry and metadata holdfast
//!   promises to keep; [`compare_trees`] lists every difference between two trees.
//! * [`allocated_bytes`] / [`assert_sparse`] check that restored files stay sparse.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Deref;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use serde_json::Value;
pub use tempfile::TempDir;

/// The password every test repository is created with.
pub const PASSWORD: &str = "e2e password \u{1f512} with spaces";

/// Exit codes the CLI documents.
pub mod postgres;

pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any failure.
    pub const FAILURE: i32 = 1;
    /// A usage error (clap's): an unknown option or a value that is not understood,
    /// refused before the repository is opened.
    pub const USAGE: i32 = 2;
    /// Done but incomplete: a snapshot written although some source entries could not be
    /// read, or a restore that could not restore some entries.
    pub const PARTIAL: i32 = 3;
    /// No repository at the location.
    pub const NO_REPOSITORY: i32 = 10;
    /// The password opens no key.
    pub const WRONG_PASSWORD: i32 = 12;
    /// The storage refused to delete (writer-only credentials).
    pub const DELETE_DENIED: i32 = 13;
    /// What a Rust panic exits with: never acceptable.
    pub const PANIC: i32 = 101;
}

const MIB: u64 = 1024 * 1024;

/// How long one holdfast command may run before the test kills it and fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// The workspace root (parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package lives inside the workspace")
        .to_path_buf()
}

/// The profile directory of the running test (`target/<profile>`): test executables run
/// from `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().expect("deps has a parent");
    }
    dir.to_path_buf()
}

fn newest_source_mtime(dir: &Path, newest: &mut SystemTime) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if p.file_name() != Some(OsStr::new("target")) {
                newest_source_mtime(&p, newest);
            }
        } else if m.is_file() {
            let relevant = matches!(
                p.extension().and_then(OsStr::to_str),
                Some("rs") | Some("toml")
            );
            if relevant {
                if let Ok(t) = m.modified() {
                    if t > *newest {
                        *newest = t;
                    }
                }
            }
        }
    }
}

/// Whether the binary is older than any source file of the crates it is built from.
fn binary_is_stale(bin: &Path) -> bool {
    let Ok(bin_time) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    newest_source_mtime(&root.join("crates"), &mut newest);
    for f in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(t) = fs::metadata(root.join(f)).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    newest > bin_time
}

/// Waits until `ready` holds (polling), or panics after `limit`. Panics if the child
/// exits first: it finished before it could be caught in the act (stopped, killed), so the
/// data set is too small and the test would prove nothing.
pub fn wait_until(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("holdfast finished ({status}) before {what}; the data set is too small to interrupt it");
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Stops `child` with SIGSTOP and waits until every one of its threads is stopped.
/// `kill(2)` only queues the signal: until each thread has taken it, the process may still
/// finish a write (a pack renamed into place), so a test that counts files right after
/// `kill` may miss one.
pub fn stop_child(child: &std::process::Child) {
    let pid = child.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("kill SIGSTOP");
    let start = std::time::Instant::now();
    let all_stopped = || {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone
        };
        tasks.filter_map(|t| t.ok()).all(|t| {
            // The state is the field after the parenthesised command name.
            fs::read_to_string(t.path().join("stat"))
                .map(|st| {
                    st.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .is_none_or(|state| state == "T" || state == "t" || state == "Z")
                })
                .unwrap_or(true)
        })
    };
    while !all_stopped() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "process {pid} did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Path of the `holdfast` binary under test.
///
/// `HOLDFAST_BIN` overrides it. Otherwise it is `target/<profile>/holdfast` next to the
/// running test; when that is missing or older than the sources it is built once per test
/// process with `cargo build -p holdfast-cli --bin holdfast` (same profile).
pub fn holdfast_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HOLDFAST_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "HOLDFAST_BIN={} is not a file", p.display());
            return p;
        }
        let dir = profile_dir();
        let bin = dir.join("holdfast");
        if bin.is_file() && !binary_is_stale(&bin) {
            return bin;
        }
        let profile = dir
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("debug")
            .to_string();
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(workspace_root()).args([
            "build",
            "-p",
            "holdfast-cli",
            "--bin",
            "holdfast",
        ]);
        if profile == "release" {
            cmd.arg("--release");
        } else if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        // The target directory is the parent of the profile directory; pass it so a
        // custom CARGO_TARGET_DIR (or --target-dir) is honoured.
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let status = cmd.stdin(Stdio::null()).status();
        match status {
            Ok(s) if s.success() && bin.is_file() => bin,
            // Never test an out-of-date binary: a pass would say nothing about the sources.
            Ok(s) => panic!(
                "`cargo build -p holdfast-cli --bin holdfast` failed ({s}; compiler output \
                 above), so there is no up-to-date {} to test; fix the build, or set \
                 HOLDFAST_BIN to the holdfast binary to test",
                bin.display()
            ),
            Err(e) => panic!(
                "the holdfast binary {} is missing and cargo could not be run: {e}",
                bin.display()
            ),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------

/// A finished holdfast command: its command line and output. Derefs to [`Output`].
pub struct Run {
    /// The command line, for messages.
    pub cmdline: String,
    /// What it produced.
    pub output: Output,
}

impl Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n… ({} more bytes)", &s[..cut], s.len() - cut)
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "exit:    {:?}", self.output.status)?;
        writeln!(
            f,
            "stdout:  {}",
            truncated(&String::from_utf8_lossy(&self.output.stdout), 4000)
        )?;
        write!(
            f,
            "stderr:  {}",
            truncated(&String::from_utf8_lossy(&self.output.stderr), 4000)
        )
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Run {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Standard output, lossily decoded.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Standard error, lossily decoded.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics unless the command exited normally and did not panic.
    pub fn assert_no_panic(&self) -> &Self {
        assert!(
            self.code().is_some(),
            "holdfast was killed by a signal\n{self}"
        );
        assert_ne!(
            self.code(),
            Some(exit::PANIC),
            "holdfast panicked (exit 101)\n{self}"
        );
        assert!(
            !self.stderr_str().contains("panicked at"),
            "holdfast panicked\n{self}"
        );
        self
    }

    /// Panics unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        self.assert_no_panic();
        assert_eq!(
            self.code(),
            Some(code),
            "unexpected exit code (want {code})\n{self}"
        );
        self
    }

    /// Panics unless the command succeeded.
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(exit::OK)
    }

    /// Panics unless the command failed cleanly: a non-zero exit code that is not a panic,
    /// with an error message on stderr.
    pub fn assert_failed(&self) -> &Self {
        self.assert_no_panic();
        assert_ne!(self.code(), Some(0), "expected a failure\n{self}");
        assert!(
            !self.stderr_str().trim().is_empty(),
            "failed without saying why on stderr\n{self}"
        );
        self
    }

    /// Panics unless stderr contains `needle` (case-insensitive).
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "stderr does not mention {needle:?}\n{self}"
        );
        self
    }

    /// Panics unless stderr contains at least one of `needles` (case-insensitive).
    pub fn assert_stderr_contains_any(&self, needles: &[&str]) -> &Self {
        let e = self.stderr_str().to_lowercase();
        assert!(
            needles.iter().any(|n| e.contains(&n.to_lowercase())),
            "stderr mentions none of {needles:?}\n{self}"
        );
        self
    }

    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{self}"))
    }

    /// Stdout parsed as JSON lines (one document per non-empty line).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line {} is not JSON ({e}): {l:?}\n{self}", i + 1)
                })
            })
            .collect()
    }
}

fn shell_quote(s: &OsStr) -> String {
    let l = s.to_string_lossy();
    if !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+".contains(&b))
    {
        l.into_owned()
    } else {
        format!("{:?}", s)
    }
}

/// Runs a command to completion, capturing its output, killing it after `timeout`.
pub fn run_command(cmd: Command, timeout: Duration) -> Run {
    run_command_with(cmd, timeout, StdoutTo::Capture)
}

/// Like [`run_command`], but standard output goes to `stdout_file` (if given) instead of
/// being captured.
pub fn run_command_to(cmd: Command, timeout: Duration, stdout_file: Option<File>) -> Run {
    match stdout_file {
        Some(f) => run_command_with(cmd, timeout, StdoutTo::File(f)),
        None => run_command_with(cmd, timeout, StdoutTo::Capture),
    }
}

/// A consumer of output, called with each piece as it arrives.
pub type Sink = Box<dyn FnMut(&[u8]) + Send>;

/// Where a command's standard output goes.
pub enum StdoutTo {
    /// Into [`Run::output`].
    Capture,
    /// Into a file.
    File(File),
    /// To a function, piece by piece, as it arrives (nothing is kept).
    Stream(Sink),
    /// To a pipe whose reading end is already closed (like `holdfast ... | head -0`).
    /// The run is not checked for panics: the caller does that.
    Closed,
}

/// Runs a command to completion with stdout sent to `stdout`, stderr captured, killing it
/// after `timeout`. Panics if it panicked.
pub fn run_command_with(cmd: Command, timeout: Duration, stdout: StdoutTo) -> Run {
    run_command_full(cmd, timeout, stdout, None)
}

/// [`run_command_with`], with standard input read from `stdin` (closed when `None`).
pub fn run_command_full(
    mut cmd: Command,
    timeout: Duration,
    stdout: StdoutTo,
    stdin: Option<Stdio>,
) -> Run {
    let cmdline = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut sink: Option<Sink> = None;
    let closed = matches!(stdout, StdoutTo::Closed);
    cmd.stdin(stdin.unwrap_or_else(Stdio::null))
        .stdout(match stdout {
            StdoutTo::Closed => {
                let (r, w) = nix::unistd::pipe().expect("pipe");
                drop(r);
                Stdio::from(w)
            }
            StdoutTo::File(f) => Stdio::from(f),
            StdoutTo::Capture => Stdio::piped(),
            StdoutTo::Stream(f) => {
                sink = Some(f);
                Stdio::piped()
            }
        })
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let out = child.stdout.take();
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        match (out, sink) {
            (Some(mut out), None) => {
                let _ = out.read_to_end(&mut v);
            }
            (Some(mut out), Some(mut f)) => {
                let mut buf = vec![0u8; MIB as usize];
                loop {
                    match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => f(&buf[..n]),
                    }
                }
            }
            (None, _) => {}
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for holdfast") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "timed out after {timeout:?}: {cmdline}\nstderr: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    let run = Run {
        cmdline,
        output: Output {
            status,
            stdout,
            stderr,
        },
    };
    // A panic is a bug whatever the test expects.
    if !closed {
        run.assert_no_panic();
    }
    run
}

/// A temporary directory for test data (sources, restore targets).
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("holdfast-e2e-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Where a restore puts a backed-up absolute path: the path recreated under `target`.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    assert!(src.is_absolute(), "{} is not absolute", src.display());
    target.join(src.strip_prefix("/").expect("absolute"))
}

/// A backup's `--json` result.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The snapshot ID (64 hex digits).
    pub id: String,
    /// The `summary` object.
    pub summary: Value,
    /// The whole JSON document.
    pub json: Value,
}

impl Backup {
    /// A summary counter; panics if it is missing or not an unsigned integer.
    pub fn stat(&self, name: &str) -> u64 {
        self.summary
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("summary has no integer {name:?}: {}", self.json))
    }
}

fn backup_from_json(run: &Run) -> Backup {
    let json = run.json();
    let id = json
        .get("snapshot_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no snapshot_id string in backup output\n{run}"))
        .to_string();
    assert!(
        is_hex_id(&id),
        "snapshot_id {id:?} is not 64 lowercase hex digits\n{run}"
    );
    let summary = json
        .get("summary")
        .filter(|s| s.is_object())
        .unwrap_or_else(|| panic!("no summary object in backup output\n{run}"))
        .clone();
    Backup { id, summary, json }
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A repository in a temporary directory.
pub struct Repo {
    dir: TempDir,
    /// The repository location (does not exist before `init`).
    pub path: PathBuf,
    /// The cache directory handed to holdfast.
    pub cache: PathBuf,
    /// The password used by [`Repo::cmd`].
    pub password: String,
}

impl Repo {
    /// A location for a repository, not yet initialised.
    pub fn uninit() -> Repo {
        let dir = tempdir();
        let path = dir.path().join("repo");
        let cache = dir.path().join("cache");
        fs::create_dir(&cache).expect("create cache dir");
        Repo {
            dir,
            path,
            cache,
            password: PASSWORD.to_string(),
        }
    }

    /// A new repository (fast key derivation, default pack size).
    pub fn new() -> Repo {
        Self::with_init_args::<&str>(&[])
    }

    /// A new repository, with extra `init` arguments.
    pub fn with_init_args<S: AsRef<OsStr>>(extra: &[S]) -> Repo {
        let r = Repo::uninit();
        r.init(extra).assert_ok();
        r
    }

    /// Runs `init --kdf-memory-kib 8 --kdf-iterations 1 EXTRA...`.
    pub fn init<S: AsRef<OsStr>>(&self, extra: &[S]) -> Run {
        let mut args: Vec<OsString> = ["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        args.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        self.cmd(&args)
    }

    /// Scratch space next to the repository, removed with it.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A holdfast command with this repository, its password and cache set in the
    /// environment (and every other `HOLDFAST_*` variable of the caller removed).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(holdfast_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HOLDFAST_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOLDFAST_REPOSITORY", &self.path)
            .env("HOLDFAST_PASSWORD", &self.password)
            .env("HOLDFAST_CACHE_DIR", &self.cache)
            .env("HOLDFAST_STATE_DIR", self.dir.path().join("state"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .args(args);
        cmd
    }

    /// Runs holdfast with `args` against this repository.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run_command(self.command(args), COMMAND_TIMEOUT)
    }

    /// Runs holdfast with `args`, its standard output written to the file `out`.
    pub fn cmd_to_file<S: AsRef<OsStr>>(&self, args: &[S], out: &Path) -> Run {
        let f = File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        run_command_to(self.command(args), COMMAND_TIMEOUT, Some(f))
    }

    /// Runs `dump SPEC PATH` and checks, streaming, that it outputs exactly the bytes of
    /// the file `expected`; returns the run (asserted successful).
    pub fn assert_dump_equals(&self, spec: &str, path: &Path, expected: &Path) -> Run {
        use std::sync::{Arc, Mutex};
        let f = File::open(expected).unwrap_or_else(|e| panic!("open {}: {e}", expected.display()));
        let len = f.metadata().expect("metadata").len();
        let state = Arc::new(Mutex::new((0u64, None::<String>)));
        let st = state.clone();
        let mut want = vec![0u8; MIB as usize];
        let sink = move |chunk: &[u8]| {
            let mut g = st.lock().expect("lock");
            if g.1.is_some() {
                return;
            }
            let off = g.0;
            if off + chunk.len() as u64 > len {
                g.1 = Some(format!("dump is longer than the file ({len} bytes)"));
                return;
            }
            // Where the expected file has a hole, the dump must be zeros: compare with
            // zeros instead of reading the hole.
            let w = &mut want[..chunk.len()];
            if next_data(&f, off, len) >= off + chunk.len() as u64 {
                w.fill(0);
            } else {
                f.read_exact_at(w, off).expect("read expected file");
            }
            if w[..] == *chunk {
                g.0 += chunk.len() as u64;
                return;
            }
            if let Some(i) = w.iter().zip(chunk).position(|(a, b)| a != b) {
                g.1 = Some(format!(
                    "dump differs from the file at byte {}",
                    off + i as u64
                ));
            }
            g.0 += chunk.len() as u64;
        };
        let args: Vec<&OsStr> = vec!["dump".as_ref(), spec.as_ref(), path.as_os_str()];
        let run = run_command_with(
            self.command(&args),
            COMMAND_TIMEOUT,
            StdoutTo::Stream(Box::new(sink)),
        );
        run.assert_ok();
        let g = state.lock().expect("lock");
        if let Some(msg) = &g.1 {
            panic!("{msg}\n{run}");
        }
        assert_eq!(g.0, len, "dump output length differs from the file\n{run}");
        drop(g);
        run
    }

    /// Runs holdfast with `args` and the given extra environment.
    pub fn cmd_env<S: AsRef<OsStr>>(&self, args: &[S], env: &[(&str, &OsStr)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_command(c, COMMAND_TIMEOUT)
    }

    /// Runs `args` with `--json` appended; asserts success and parses stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut a: Vec<OsString> = args.iter().map(|s| s.as_ref().to_os_string()).collect();
        a.push("--json".into());
        self.cmd(&a).assert_ok().json()
    }

    /// `backup --json PATHS... EXTRA...`; asserts exit 0 and parses the result.
    pub fn backup<P: AsRef<OsStr>, S: AsRef<OsStr>>(&self, paths: &[P], extra: &[S]) -> Backup {
        let run = self.backup_run(paths, extra);
        run.assert_ok();
        backup_from_json(&run)
    }

    /// `backup --json PATHS... EXTRA...`, whatever the exit code.
    pub fn backup_run<P: AsRef<OsStr>, S: AsRef<OsStr>>(&self, paths: &[P], extra: &[S]) -> Run {
        let mut a: Vec<OsString> = vec!["backup".into(), "--json".into()];
        a.extend(paths.iter().map(|p| p.as_ref().to_os_string()));
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        self.cmd(&a)
    }

    /// Parses the JSON of a backup run (any exit code).
    pub fn parse_backup(run: &Run) -> Backup {
        backup_from_json(run)
    }

    /// `restore SPEC --target TARGET EXTRA...`; asserts exit 0.
    pub fn restore<S: AsRef<OsStr>>(&self, spec: &str, target: &Path, extra: &[S]) -> Run {
        let run = self.restore_run(spec, target, extra);
        run.assert_ok();
        run
    }

    /// `restore SPEC --target TARGET EXTRA...`, whatever the exit code.
    pub fn restore_run<S: AsRef<OsStr>>(&self, spec: &str, target: &Path, extra: &[S]) -> Run {
        let mut a: Vec<OsString> = vec![
            "restore".into(),
            spec.into(),
            "--target".into(),
            target.into(),
        ];
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        self.cmd(&a)
    }

    /// `snapshots --json EXTRA...` as an array; asserts exit 0.
    pub fn snapshots<S: AsRef<OsStr>>(&self, extra: &[S]) -> Vec<Value> {
        let mut a: Vec<OsString> = vec!["snapshots".into()];
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        match self.json(&a) {
            Value::Array(v) => v,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// IDs of `snapshots --json EXTRA...`, in output order.
    pub fn snapshot_ids<S: AsRef<OsStr>>(&self, extra: &[S]) -> Vec<String> {
        self.snapshots(extra)
            .iter()
            .map(|s| {
                s.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("snapshot without id: {s}"))
                    .to_string()
            })
            .collect()
    }

    /// Paths of `ls --json SPEC EXTRA...`.
    pub fn ls_paths<S: AsRef<OsStr>>(&self, spec: &str, extra: &[S]) -> Vec<String> {
        let mut a: Vec<OsString> = vec!["ls".into(), "--json".into(), spec.into()];
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        let run = self.cmd(&a);
        run.assert_ok();
        run.json_lines()
            .iter()
            .map(|v| {
                v.get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("ls entry without path: {v}\n{run}"))
                    .to_string()
            })
            .collect()
    }

    /// The files of one repository directory (`config`, `keys`, `index`, `snapshots`,
    /// `data`), recursively, sorted; names that are not 64 hex digits are left out.
    pub fn files(&self, kind: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        collect_files(&self.path.join(kind), &mut v);
        v.retain(|p| p.file_name().and_then(OsStr::to_str).is_some_and(is_hex_id));
        v.sort();
        v
    }

    /// The pack files.
    pub fn packs(&self) -> Vec<PathBuf> {
        self.files("data")
    }

    /// `cat pack ID --json`: the pack's header (type and blobs).
    pub fn cat_pack(&self, pack: &Path) -> Value {
        let id = file_id(pack);
        self.json(&["cat", "pack", &id])
    }

    /// Raw (plaintext) length of every blob, from `cat index` of every index file.
    pub fn blob_raw_lengths(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for f in self.files("index") {
            let v = self.json(&["cat", "index", &file_id(&f)]);
            for pack in v["packs"].as_array().expect("index packs") {
                for b in pack["blobs"].as_array().expect("pack blobs") {
                    let id = b["id"].as_str().expect("blob id").to_string();
                    let len = b["raw_len"].as_u64().expect("blob raw_len");
                    m.insert(id, len);
                }
            }
        }
        m
    }

    /// The tree node (`cat tree` JSON) of the entry at absolute `path` in a snapshot.
    pub fn node(&self, snapshot: &str, path: &Path) -> Value {
        let snap = self.json(&["cat", "snapshot", snapshot]);
        let mut tree = snap["tree"].as_str().expect("snapshot tree").to_string();
        let comps: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for (i, c) in comps.iter().enumerate() {
            let t = self.json(&["cat", "tree", &tree]);
            let node = t["nodes"]
                .as_array()
                .expect("tree nodes")
                .iter()
                .find(|n| n["name"].as_str() == c.to_str())
                .unwrap_or_else(|| panic!("{} not in tree {t}", c.to_string_lossy()))
                .clone();
            if i + 1 == comps.len() {
                return node;
            }
            tree = node["subtree"].as_str().expect("subtree").to_string();
        }
        panic!("empty path")
    }

    /// Packs whose `cat pack` type is `ty` ("data" or "tree").
    pub fn packs_of_type(&self, ty: &str) -> Vec<PathBuf> {
        self.packs()
            .into_iter()
            .filter(|p| {
                let v = self.cat_pack(p);
                v.get("type")
                    .and_then(Value::as_str)
                    .map(|t| t.eq_ignore_ascii_case(ty))
                    .unwrap_or_else(|| panic!("cat pack has no type: {v}"))
            })
            .collect()
    }
}

impl Default for Repo {
    fn default() -> Self {
        Repo::new()
    }
}

/// The ID (file name) of a repository file.
pub fn file_id(p: &Path) -> String {
    p.file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_else(|| panic!("bad repository file name {}", p.display()))
        .to_string()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Flips one bit of the byte at `offset` of a file (negative: from the end).
pub fn flip_byte(path: &Path, offset: i64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().expect("metadata").len() as i64;
    let at = if offset < 0 { len + offset } else { offset };
    assert!(
        (0..len).contains(&at),
        "offset {offset} outside {}",
        path.display()
    );
    let mut b = [0u8];
    f.read_exact_at(&mut b, at as u64).expect("read byte");
    b[0] ^= 0x40;
    f.write_all_at(&b, at as u64).expect("write byte");
}

// ---------------------------------------------------------------------------------------
// Making trees
// ---------------------------------------------------------------------------------------

/// `len` pseudo-random bytes from `seed` (incompressible, reproducible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `len` pseudo-random bytes from `seed` to a new file, streaming.
pub fn write_random(path: &Path, len: u64, seed: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write random data");
        left -= n as u64;
    }
}

/// Writes a file with `bytes`, creating parent directories.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Sets atime and mtime (seconds + nanoseconds) without following a symlink.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = TimeSpec::new(sec, nsec);
    let a = TimeSpec::new(sec - 1000, 1);
    nix::sys::stat::utimensat(None, path, &a, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Sets mode bits (including setuid/setgid/sticky) on a non-symlink.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Sets owner and group without following a symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

/// Joins a raw byte name onto a path.
pub fn join_bytes(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// Gives every entry below `root` (and `root` itself) a distinct mtime with a non-zero
/// nanosecond part, children before parents so directory times stick.
pub fn stamp_mtimes(root: &Path) {
    let mut counter = 0i64;
    stamp(root, &mut counter);
}

fn stamp(path: &Path, counter: &mut i64) {
    let m = fs::symlink_metadata(path).expect("lstat");
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            stamp(&path.join(n), counter);
        }
    }
    *counter += 1;
    // 2009-02-13 plus a few hours, with a nanosecond part that is never a round number.
    let sec = 1_234_567_890 + *counter * 3_607;
    let nsec = (*counter * 123_456_789 + 987) % 1_000_000_000;
    set_mtime(path, sec, nsec.max(1));
}

/// What [`build_rich_tree`] made.
#[derive(Debug, Clone)]
pub struct RichTree {
    /// The tree's root directory.
    pub root: PathBuf,
    /// Sparse files (relative to `root`) with the most data bytes each holds.
    pub sparse: Vec<(PathBuf, u64)>,
    /// Number of regular-file names in the tree.
    pub files: usize,
}

/// Which optional parts [`build_rich_tree`] adds.
#[derive(Debug, Clone, Copy)]
pub struct TreeOptions {
    /// A 64 MiB random file with a repeated region and a 200 MiB sparse file.
    pub big: bool,
    /// Device nodes, FIFOs and ownership changes (need root).
    pub special: bool,
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the tests run under CI: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "0" && v != "false")
}

/// Makes sure the environment provides `what` (`have`) before a test relies on it. A test
/// that cannot run must not pass, so without it this panics, naming what is missing: under
/// CI because CI must provide it (it runs as root, with the packages `.ci/run` installs),
/// elsewhere so that the run shows the test as not passed rather than silently passed.
#[track_caller]
pub fn require(have: bool, what: &str) {
    if have {
        return;
    }
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    if in_ci() {
        panic!("test{test} did not run: it needs {what}, which CI must provide");
    }
    panic!(
        "test{test} did not run: it needs {what}, which this environment lacks. Run it where \
         that is available (CI runs the tests as root with what `.ci/run` installs), or leave \
         it out explicitly (cargo nextest run -E 'not test(NAME)')"
    );
}

/// Builds a tree at `root` (which must not exist) with every kind of entry and metadata
/// holdfast promises to keep. An extra hard link to one file is made at `outside_link`
/// (outside the tree), if given.
pub fn build_rich_tree(root: &Path, opts: TreeOptions, outside_link: Option<&Path>) -> RichTree {
    fs::create_dir(root).expect("create tree root");
    let p = |rel: &str| root.join(rel);
    let mut sparse = Vec::new();
    let file = |rel: &Path, bytes: &[u8]| write_file(&root.join(rel), bytes);

    // Regular files.
    file(Path::new("empty"), b"");
    file(Path::new("small.txt"), b"hello, holdfast\n");
    file(Path::new("one-byte"), b"x");
    file(Path::new("zeros-64k"), &vec![0u8; 65536]);
    file(Path::new("text/lorem.txt"), lorem(200_000).as_bytes());
    file(Path::new("random-3m"), &random_bytes(3 * MIB as usize, 1));
    file(Path::new("nested/a/b/c/deep.bin"), &random_bytes(777, 2));
    file(Path::new("name with spaces & glob*?[x]"), b"odd name\n");
    file(Path::new("line\nbreak"), b"newline in name\n");
    file(
        &join_bytes(Path::new(""), b"\xff\xfe"),
        b"name is not UTF-8\n",
    );
    file(
        &join_bytes(Path::new(""), b"dir-\xe9t\xe9").join("inner"),
        b"inside a latin-1 dir\n",
    );
    file(Path::new("unicode-\u{1f600}-\u{e9}"), b"utf-8 name\n");

    // Empty directories.
    fs::create_dir_all(p("empty-dir")).expect("mkdir");
    fs::create_dir_all(p("nested/x/y/z/empty")).expect("mkdir");

    // Symlinks.
    std::os::unix::fs::symlink("small.txt", p("link-to-file")).expect("symlink");
    std::os::unix::fs::symlink("nested/a", p("link-to-dir")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", p("link-dangling")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", p("link-absolute")).expect("symlink");
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"target-\xff\xfe\x01"),
        p("link-non-utf8"),
    )
    .expect("symlink");
    let long_target = "a/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long_target, p("link-long")).expect("symlink");

    // Hard links: three names for one inode, one of them in another directory.
    file(Path::new("hl/one"), &random_bytes(10_000, 3));
    fs::hard_link(p("hl/one"), p("hl/two")).expect("link");
    fs::create_dir_all(p("other")).expect("mkdir");
    fs::hard_link(p("hl/one"), p("other/three")).expect("link");
    // Two empty files linked together.
    file(Path::new("hl/empty-a"), b"");
    fs::hard_link(p("hl/empty-a"), p("hl/empty-b")).expect("link");
    // A file whose only other link is outside the tree.
    file(Path::new("half-linked"), b"my other name is outside\n");
    if let Some(o) = outside_link {
        fs::hard_link(p("half-linked"), o).expect("link outside");
    }

    // Mode bits.
    file(Path::new("modes/setuid"), b"#!/bin/sh\n");
    file(Path::new("modes/private"), b"secret\n");
    file(Path::new("modes/setgid-exec"), b"#!/bin/sh\n");
    file(Path::new("modes/none"), b"no permissions at all\n");
    fs::create_dir_all(p("modes/sticky")).expect("mkdir");
    file(
        Path::new("modes/readonly-dir/child"),
        b"in a read-only dir\n",
    );
    fs::create_dir_all(p("modes/setgid-dir")).expect("mkdir");

    // Extended attributes.
    file(Path::new("xattrs/file"), b"with attributes\n");
    fs::create_dir_all(p("xattrs/dir")).expect("mkdir");
    xattr::set(p("xattrs/file"), "user.comment", b"hello xattr").expect("setxattr");
    xattr::set(p("xattrs/file"), "user.binary", &[0u8, 1, 2, 0xff, 0xfe]).expect("setxattr");
    xattr::set(p("xattrs/file"), "user.empty", b"").expect("setxattr");
    xattr::set(p("xattrs/file"), "user.big", &random_bytes(2000, 4)).expect("setxattr");
    xattr::set(p("xattrs/dir"), "user.on-a-dir", b"dir attr").expect("setxattr");
    xattr::set(p("modes/setuid"), "user.with-setuid", b"1").expect("setxattr");

    // Sparse: a fully sparse file and (big) a 200 MiB file with 4 KiB of data at 100 MiB.
    {
        let f = File::create(p("sparse-empty")).expect("create");
        f.set_len(16 * MIB).expect("set_len");
        sparse.push((PathBuf::from("sparse-empty"), 0));
    }
    if opts.big {
        let f = File::create(p("sparse-200m")).expect("create");
        f.set_len(200 * MIB).expect("set_len");
        f.write_all_at(&random_bytes(4096, 5), 100 * MIB)
            .expect("write");
        sparse.push((PathBuf::from("sparse-200m"), 4096));

        // 64 MiB of random data in which a 16 MiB region occurs twice.
        let r = random_bytes(48 * MIB as usize, 6);
        let mut f = File::create(p("random-64m")).expect("create");
        f.write_all(&r[..40 * MIB as usize]).expect("write");
        f.write_all(&r[8 * MIB as usize..24 * MIB as usize])
            .expect("write");
        f.write_all(&r[40 * MIB as usize..]).expect("write");
    }

    // FIFOs, devices and owners.
    if opts.special {
        nix::unistd::mkfifo(&p("fifo"), Mode::from_bits_truncate(0o640)).expect("mkfifo");
        nix::sys::stat::mknod(
            &p("dev-null-clone"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .expect("mknod char");
        nix::sys::stat::mknod(
            &p("dev-block"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(7, 200),
        )
        .expect("mknod block");
        fs::create_dir_all(p("owned")).expect("mkdir");
        write_file(&p("owned/file"), b"owned by someone else\n");
        std::os::unix::fs::symlink("file", p("owned/link")).expect("symlink");
        lchown(&p("owned/file"), 1234, 5678);
        lchown(&p("owned/link"), 1234, 5678);
        lchown(&p("owned"), 1234, 5678);
        lchown(&p("fifo"), 4321, 8765);
        lchown(&p("modes/setuid"), 1234, 5678);
    }

    // Modes last: chown clears setuid/setgid bits.
    chmod(&p("modes/setuid"), 0o4755);
    chmod(&p("modes/private"), 0o600);
    chmod(&p("modes/setgid-exec"), 0o2711);
    chmod(&p("modes/none"), 0o000);
    chmod(&p("modes/sticky"), 0o1777);
    chmod(&p("modes/setgid-dir"), 0o2750);
    chmod(&p("modes/readonly-dir"), 0o555);
    chmod(&p("nested/x"), 0o700);

    stamp_mtimes(root);
    let files = count_files(root);
    RichTree {
        root: root.to_path_buf(),
        sparse,
        files,
    }
}

/// Number of regular-file names below `root`.
pub fn count_files(root: &Path) -> usize {
    list_tree(root)
        .iter()
        .filter(|r| {
            fs::symlink_metadata(root.join(r))
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .count()
}

/// `len` bytes of compressible text.
pub fn lorem(len: usize) -> String {
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(words[(i * 7 + i / 3) % words.len()]);
        s.push(if i % 13 == 12 { '\n' } else { ' ' });
        i += 1;
    }
    s.truncate(len);
    s
}

// ---------------------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------------------

/// A path for messages: UTF-8 where it is, escaped bytes where not.
pub fn show(p: &Path) -> String {
    let b = p.as_os_str().as_bytes();
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{:?}", b.escape_ascii().to_string()),
    }
}

fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardevice"
    } else if ft.is_block_device() {
        "blockdevice"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut v: Vec<OsString> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(v)
}

fn user_xattrs(p: &Path) -> std::io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut m = BTreeMap::new();
    for name in xattr::list(p)? {
        if !name.as_bytes().starts_with(b"user.") {
            continue;
        }
        let v = xattr::get(p, &name)?.unwrap_or_default();
        m.insert(name.into_vec(), v);
    }
    Ok(m)
}

/// Offset of the next data (not a hole) at or after `off`, or `len` if none.
fn next_data(f: &File, off: u64, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    if off >= len {
        return len;
    }
    match nix::unistd::lseek(f.as_raw_fd(), off as i64, nix::unistd::Whence::SeekData) {
        Ok(p) if p >= 0 => (p as u64).min(len),
        Err(nix::errno::Errno::ENXIO) => len,
        // No SEEK_DATA support: treat everything as data.
        _ => off,
    }
}

/// First offset at which two files differ, or `None` if equal (including length). Ranges
/// that are holes in both files are skipped, so huge sparse files compare quickly.
fn content_diff(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    let fa = File::open(a)?;
    let fb = File::open(b)?;
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    let len = la.min(lb);
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut off = 0u64;
    while off < len {
        let d = next_data(&fa, off, len).min(next_data(&fb, off, len));
        if d >= len {
            break;
        }
        off = d;
        let n = (len - off).min(MIB) as usize;
        fa.read_exact_at(&mut ba[..n], off)?;
        fb.read_exact_at(&mut bb[..n], off)?;
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(bb[..n].iter())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Ok(Some(off + i as u64));
        }
        off += n as u64;
    }
    Ok(if la != lb { Some(len) } else { None })
}

struct Walk {
    /// Relative path → (dev, ino) of regular files.
    inodes: BTreeMap<PathBuf, (u64, u64)>,
}

/// Compares two trees entry by entry (lstat: nothing is followed) and returns every
/// difference: entries missing or extra, type, size, content, mode bits (`& 0o7777`),
/// uid/gid, mtime (ns), symlink targets (bytes), `user.*` xattrs, device numbers and the
/// hard-link structure (names that share an inode in `expected` must share one in
/// `actual`, and no others). The roots themselves are compared too.
pub fn compare_trees(expected: &Path, actual: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut we = Walk {
        inodes: BTreeMap::new(),
    };
    let mut wa = Walk {
        inodes: BTreeMap::new(),
    };
    compare_entry(
        expected,
        actual,
        Path::new(""),
        &mut diffs,
        &mut we,
        &mut wa,
    );

    // Hard-link structure.
    let group = |w: &Walk| -> HashMap<(u64, u64), BTreeSet<PathBuf>> {
        let mut g: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
        for (p, k) in &w.inodes {
            g.entry(*k).or_default().insert(p.clone());
        }
        g
    };
    let ge = group(&we);
    let ga = group(&wa);
    let mut seen = BTreeSet::new();
    for set in ge.values().chain(ga.values()) {
        if set.len() < 2 || !seen.insert(set.clone()) {
            continue;
        }
        let first = set.iter().next().expect("non-empty");
        for other in set.iter().skip(1) {
            let e_same =
                we.inodes.contains_key(first) && we.inodes.get(first) == we.inodes.get(other);
            let a_same =
                wa.inodes.contains_key(first) && wa.inodes.get(first) == wa.inodes.get(other);
            if e_same != a_same {
                diffs.push(format!(
                    "hard links: {} and {} are {} in the source but {} in the restore",
                    show(first),
                    show(other),
                    if e_same {
                        "one inode"
                    } else {
                        "different inodes"
                    },
                    if a_same {
                        "one inode"
                    } else {
                        "different inodes"
                    },
                ));
            }
        }
    }
    diffs
}

fn compare_entry(
    e: &Path,
    a: &Path,
    rel: &Path,
    diffs: &mut Vec<String>,
    we: &mut Walk,
    wa: &mut Walk,
) {
    let name = if rel.as_os_str().is_empty() {
        "<root>".to_string()
    } else {
        show(rel)
    };
    let me = match fs::symlink_metadata(e) {
        Ok(m) => m,
        Err(err) => {
            diffs.push(format!("{name}: cannot lstat source: {err}"));
            return;
        }
    };
    let ma = match fs::symlink_metadata(a) {
        Ok(m) => m,
        Err(err) => {
            diffs.push(format!("{name}: missing in restore ({err})"));
            return;
        }
    };
    let (ke, ka) = (kind_name(me.file_type()), kind_name(ma.file_type()));
    if ke != ka {
        diffs.push(format!("{name}: type {ke} restored as {ka}"));
        return;
    }
    let mut d = |what: &str, x: String, y: String| {
        if x != y {
            diffs.push(format!("{name}: {what} {x} restored as {y}"));
        }
    };
    d(
        "mode",
        format!("{:o}", me.mode() & 0o7777),
        format!("{:o}", ma.mode() & 0o7777),
    );
    d(
        "uid:gid",
        format!("{}:{}", me.uid(), me.gid()),
        format!("{}:{}", ma.uid(), ma.gid()),
    );
    d(
        "mtime",
        format!("{}.{:09}", me.mtime(), me.mtime_nsec()),
        format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
    );
    if ke == "file" || ke == "symlink" {
        d("size", me.size().to_string(), ma.size().to_string());
    }
    if ke == "chardevice" || ke == "blockdevice" {
        d(
            "rdev",
            format!(
                "{}:{}",
                nix::sys::stat::major(me.rdev()),
                nix::sys::stat::minor(me.rdev())
            ),
            format!(
                "{}:{}",
                nix::sys::stat::major(ma.rdev()),
                nix::sys::stat::minor(ma.rdev())
            ),
        );
    }
    match (user_xattrs(e), user_xattrs(a)) {
        (Ok(xe), Ok(xa)) => {
            if xe != xa {
                let fmt = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
                    m.iter()
                        .map(|(k, v)| format!("{}({} bytes)", String::from_utf8_lossy(k), v.len()))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                diffs.push(format!(
                    "{name}: xattrs [{}] restored as [{}]{}",
                    fmt(&xe),
                    fmt(&xa),
                    if xe.keys().eq(xa.keys()) {
                        " (values differ)"
                    } else {
                        ""
                    }
                ));
            }
        }
        (Err(x), _) | (_, Err(x)) => diffs.push(format!("{name}: cannot list xattrs: {x}")),
    }
    match ke {
        "file" => {
            we.inodes.insert(rel.to_path_buf(), (me.dev(), me.ino()));
            wa.inodes.insert(rel.to_path_buf(), (ma.dev(), ma.ino()));
            if me.size() == ma.size() {
                match content_diff(e, a) {
                    Ok(None) => {}
                    Ok(Some(off)) => diffs.push(format!("{name}: content differs at byte {off}")),
                    Err(x) => diffs.push(format!("{name}: cannot compare content: {x}")),
                }
            }
        }
        "symlink" => {
            let te = fs::read_link(e).map(|t| t.into_os_string().into_vec());
            let ta = fs::read_link(a).map(|t| t.into_os_string().into_vec());
            match (te, ta) {
                (Ok(te), Ok(ta)) => {
                    if te != ta {
                        diffs.push(format!(
                            "{name}: symlink target {:?} restored as {:?}",
                            te.escape_ascii().to_string(),
                            ta.escape_ascii().to_string()
                        ));
                    }
                }
                (Err(x), _) | (_, Err(x)) => {
                    diffs.push(format!("{name}: cannot read symlink: {x}"))
                }
            }
        }
        "dir" => {
            let (ne, na) = match (sorted_names(e), sorted_names(a)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(x), _) | (_, Err(x)) => {
                    diffs.push(format!("{name}: cannot list directory: {x}"));
                    return;
                }
            };
            let se: BTreeSet<Vec<u8>> = ne.iter().map(|n| n.as_bytes().to_vec()).collect();
            let sa: BTreeSet<Vec<u8>> = na.iter().map(|n| n.as_bytes().to_vec()).collect();
            for extra in sa.difference(&se) {
                diffs.push(format!(
                    "{}: present in restore but not in source",
                    show(&rel.join(OsStr::from_bytes(extra)))
                ));
            }
            for n in &ne {
                compare_entry(&e.join(n), &a.join(n), &rel.join(n), diffs, we, wa);
            }
        }
        _ => {}
    }
}

/// Panics unless two files have the same length and content.
pub fn assert_files_equal(expected: &Path, actual: &Path) {
    let (le, la) = (
        fs::metadata(expected).map(|m| m.len()).ok(),
        fs::metadata(actual).map(|m| m.len()).ok(),
    );
    assert_eq!(
        le,
        la,
        "lengths of {} and {}",
        expected.display(),
        actual.display()
    );
    match content_diff(expected, actual) {
        Ok(None) => {}
        Ok(Some(off)) => panic!(
            "{} and {} differ at byte {off}",
            expected.display(),
            actual.display()
        ),
        Err(e) => panic!("cannot compare {}: {e}", actual.display()),
    }
}

/// Panics listing every difference if the trees differ (see [`compare_trees`]).
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    let diffs = compare_trees(expected, actual);
    assert!(
        diffs.is_empty(),
        "{} differences between {} and {}:\n  {}",
        diffs.len(),
        expected.display(),
        actual.display(),
        diffs.join("\n  ")
    );
}

/// Bytes allocated on disk for a file (`st_blocks * 512`).
pub fn allocated_bytes(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .blocks()
        * 512
}

/// Panics unless the file at `path` has size `size` and allocates at most `max_alloc`.
pub fn assert_sparse(path: &Path, size: u64, max_alloc: u64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    assert_eq!(m.len(), size, "size of {}", path.display());
    let alloc = m.blocks() * 512;
    assert!(
        alloc <= max_alloc,
        "{} is not sparse: {} bytes allocated for {} bytes (allowed: {})",
        path.display(),
        alloc,
        size,
        max_alloc
    );
}

/// Every path below `root` (relative, sorted), including directories.
pub fn list_tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for n in sorted_names(dir).unwrap_or_default() {
            let r = rel.join(&n);
            out.push(r.clone());
            let p = dir.join(&n);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                walk(&p, &r, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, Path::new(""), &mut v);
    v.sort();
    v
}

/// A variable the Ceph RGW test server's `env.sh` sets (`HOLDFAST_TEST_RGW`,
/// `HOLDFAST_TEST_RGW_CEPH_CONF`), trimmed; fails the test, saying how to start the server,
/// when it is not set (a test that needs the server must not pass without it).
pub fn rgw_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "{name} is not set: this test needs the Ceph RGW test server and did not run. \
             Start it with `scripts/s3-test-servers.sh start DIR`, then `source DIR/env.sh` \
             and run the tests again"
        ),
    }
}
