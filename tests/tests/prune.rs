//! `holdfast prune` end to end (SPEC.md §12): mark and sweep, the safety margin, dry runs,
//! marked packs a backup must not reuse and a snapshot can rescue, running backups holding
//! the sweep back, prune in a loop beside concurrent backups, prune killed at many points,
//! and one prune at a time.
//!
//! Snapshots are forgotten with `holdfast forget ID` when the binary has that command, and
//! otherwise by deleting `snapshots/<id>` (all `forget` does, SPEC.md §11.3). When the
//! binary has `check`, `check --read-data` must pass wherever the repository is expected to
//! be healthy; restores are compared byte for byte (and metadata) in any case.
//!
//! Deterministic interleavings without test hooks in the binary:
//! * a running backup is held at a chosen point with SIGSTOP (after it wrote its first pack,
//!   so it has loaded the index) and resumed with SIGCONT;
//! * a prune is held right after it loaded the index (and after it wrote its session and
//!   looked for other prunes) by replacing one gc marker file with a FIFO of the same name:
//!   the prune blocks opening it until the test writes the marker's original bytes into it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use holdfast_e2e::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIB: u64 = 1024 * 1024;
const NO: &[&str] = &[];
/// Prune arguments that make markers due at once.
const NOW: &[&str] = &["--safety-margin", "0s"];
/// How long a background holdfast process may take before the test gives up on it.
const BG_LIMIT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Whether the binary under test has the subcommand `name` (`holdfast NAME --help` works).
fn has_command(name: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap().get(name) {
        return *b;
    }
    let mut c = std::process::Command::new(holdfast_bin());
    c.args([name, "--help"]);
    let ok = run_command(c, Duration::from_secs(60)).status.success();
    cache.lock().unwrap().insert(name.to_string(), ok);
    ok
}

/// Forgets one snapshot: `holdfast forget ID` if the binary has it, else deletes the file.
fn forget(repo: &Repo, id: &str) {
    let file = repo.path.join("snapshots").join(id);
    assert!(file.is_file(), "snapshot {id} to forget does not exist");
    let mut done = false;
    if has_command("forget") {
        let run = repo.cmd(&["forget", id]);
        // Exit 2 is a usage error from the argument parser: this `forget` takes no IDs.
        if run.code() != Some(2) {
            run.assert_ok();
            done = true;
        }
    }
    if !done {
        fs::remove_file(&file).unwrap_or_else(|e| panic!("delete {}: {e}", file.display()));
    }
    assert!(!file.exists(), "snapshot {id} still exists after forget");
}

/// `check --read-data` must pass, if the binary has `check`.
fn check(repo: &Repo) {
    if has_command("check") {
        repo.cmd(&["check", "--read-data"]).assert_ok();
    }
}

fn prune_run(repo: &Repo, extra: &[&str]) -> Run {
    let mut a = vec!["prune", "--json"];
    a.extend_from_slice(extra);
    repo.cmd(&a)
}

/// The `report` object of a `prune --json` run.
fn report_of(run: &Run) -> Value {
    let j = run.json();
    j.get("report")
        .filter(|r| r.is_object())
        .unwrap_or_else(|| panic!("no report object in prune output\n{run}"))
        .clone()
}

/// `prune --json EXTRA...`, asserted successful; returns the report.
fn prune(repo: &Repo, extra: &[&str]) -> Value {
    let run = prune_run(repo, extra);
    run.assert_ok();
    let j = run.json();
    assert_eq!(
        j.get("dry_run").and_then(Value::as_bool),
        Some(extra.contains(&"--dry-run")),
        "dry_run flag in the output\n{run}"
    );
    report_of(&run)
}

/// A counter of a prune report.
fn num(r: &Value, key: &str) -> u64 {
    r.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("prune report has no integer {key:?}: {r}"))
}

/// Why the sweep was postponed, per the report.
fn postponed(r: &Value) -> Vec<String> {
    r.get("sweep_postponed")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("prune report has no sweep_postponed array: {r}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Looking at the repository
// ---------------------------------------------------------------------------------------

/// Pack ID → size.
fn packs(repo: &Repo) -> BTreeMap<String, u64> {
    repo.packs()
        .iter()
        .map(|p| (file_id(p), fs::metadata(p).map(|m| m.len()).unwrap_or(0)))
        .collect()
}

fn sum(sizes: &BTreeMap<String, u64>) -> u64 {
    sizes.values().sum()
}

/// Names of the files in one repository directory (`gc`, `sessions`, `index`, ...).
fn names(repo: &Repo, dir: &str) -> BTreeSet<String> {
    fs::read_dir(repo.path.join(dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every entry below the repository (directories too) with its type, size and mtime: any
/// write, even of a file deleted again, changes it.
fn listing(repo: &Repo) -> BTreeMap<PathBuf, (bool, u64, i64, i64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (bool, u64, i64, i64)>) {
        let m = fs::symlink_metadata(dir).expect("lstat");
        let rel = dir.strip_prefix(root).expect("below root").to_path_buf();
        out.insert(rel, (m.is_dir(), m.len(), m.mtime(), m.mtime_nsec()));
        if m.is_dir() {
            for e in fs::read_dir(dir).expect("read_dir").flatten() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&repo.path, &repo.path, &mut out);
    out
}

/// Every pack that a current (not superseded) index file names but that does not exist:
/// after any prune (also a crashed one) there must be none (SPEC.md §12.3 sweep step 4-5).
fn dangling_index_entries(repo: &Repo) -> Vec<String> {
    let present = packs(repo);
    let mut files = Vec::new();
    for f in repo.files("index") {
        let id = file_id(&f);
        let v = repo.json(&["cat", "index", &id]);
        let sup: Vec<String> = v["supersedes"]
            .as_array()
            .unwrap_or_else(|| panic!("cat index has no supersedes: {v}"))
            .iter()
            .map(|s| s.as_str().expect("superseded id").to_string())
            .collect();
        let named: Vec<String> = v["packs"]
            .as_array()
            .unwrap_or_else(|| panic!("cat index has no packs: {v}"))
            .iter()
            .map(|p| p["id"].as_str().expect("pack id").to_string())
            .collect();
        files.push((id, sup, named));
    }
    let superseded: HashSet<&String> = files.iter().flat_map(|(_, s, _)| s).collect();
    let mut out = Vec::new();
    for (id, _, named) in &files {
        if superseded.contains(id) {
            continue;
        }
        for p in named {
            if !present.contains_key(p) {
                out.push(format!(
                    "index file {id} names pack {p}, which does not exist"
                ));
            }
        }
    }
    out
}

fn assert_no_dangling_index_entries(repo: &Repo, when: &str) {
    let d = dangling_index_entries(repo);
    assert!(
        d.is_empty(),
        "{when}: the index names deleted packs (restores may fail, and a later prune may \
         delete the last copy of a blob):\n  {}",
        d.join("\n  ")
    );
}

/// Makes the repository at `dst` a copy of the one at `src` again, cheaply: repository
/// files never change once written, so only files missing on either side are copied or
/// removed (and leftovers in `tmp/`).
fn reset_repo(src: &Path, dst: &Path) {
    fn files(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().expect("file type").is_dir() {
                files(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).expect("below root").to_path_buf());
            }
        }
    }
    let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
    files(src, src, &mut want);
    files(dst, dst, &mut have);
    for p in have.difference(&want) {
        fs::remove_file(dst.join(p)).expect("remove file");
    }
    for p in want.difference(&have) {
        fs::copy(src.join(p), dst.join(p)).expect("copy file");
    }
}

/// Copies a directory tree (files and directories).
fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for e in fs::read_dir(src).expect("read_dir").flatten() {
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap_or_else(|e| panic!("copy {}: {e}", s.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generated trees
// ---------------------------------------------------------------------------------------

/// One file of a generated tree: `len` bytes of [`write_random`] with `seed`.
#[derive(Clone, Debug, PartialEq)]
struct FileSpec {
    rel: String,
    len: u64,
    seed: u64,
}

fn file(rel: &str, len: u64, seed: u64) -> FileSpec {
    FileSpec {
        rel: rel.to_string(),
        len,
        seed,
    }
}

/// A deterministic mtime for a path (and a file's content).
fn mtime_for(rel: &str, salt: u64) -> (i64, i64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in rel.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (
        1_400_000_000 + (h % 300_000_000) as i64,
        ((h >> 32) % 999_999_998 + 1) as i64,
    )
}

/// Brings directory `root` (created if missing) from the state `old` to exactly `new`:
/// removed files are deleted, new or changed files written, and deterministic mtimes set on
/// written files and every directory. Unchanged files are not touched (a backup with a
/// parent skips them). `apply_spec(fresh, &[], spec)` makes an identical copy to compare
/// restores with.
fn apply_spec(root: &Path, old: &[FileSpec], new: &[FileSpec]) {
    fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    let before: HashMap<&str, &FileSpec> = old.iter().map(|f| (f.rel.as_str(), f)).collect();
    let after: HashSet<&str> = new.iter().map(|f| f.rel.as_str()).collect();
    for f in old {
        if !after.contains(f.rel.as_str()) {
            let p = root.join(&f.rel);
            fs::remove_file(&p).unwrap_or_else(|e| panic!("delete {}: {e}", p.display()));
        }
    }
    for f in new {
        if before.get(f.rel.as_str()) == Some(&f) {
            continue;
        }
        let p = root.join(&f.rel);
        write_random(&p, f.len, f.seed);
        let (s, ns) = mtime_for(&f.rel, f.seed ^ f.len);
        set_mtime(&p, s, ns);
    }
    // Directories deepest first, the root last.
    let mut dirs: Vec<PathBuf> = list_tree(root)
        .into_iter()
        .filter(|r| root.join(r).is_dir())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.push(PathBuf::new());
    for d in dirs {
        let (s, ns) = mtime_for(&d.to_string_lossy(), 0);
        set_mtime(&root.join(&d), s, ns);
    }
}

fn total_len(spec: &[FileSpec]) -> u64 {
    spec.iter().map(|f| f.len).sum()
}

/// Restores snapshot `id` and compares what was backed up from `src` with `expected`.
fn assert_restores(repo: &Repo, id: &str, src: &Path, expected: &Path) {
    let t = tempdir();
    let run = repo.restore_run(id, t.path(), NO);
    assert_eq!(
        run.code(),
        Some(0),
        "snapshot {id} (of {}) cannot be restored\n{run}",
        src.display()
    );
    let diffs = compare_trees(expected, &restored(t.path(), src));
    assert!(
        diffs.is_empty(),
        "snapshot {id} (of {}) restores with {} differences:\n  {}",
        src.display(),
        diffs.len(),
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Background processes, SIGSTOP and FIFOs
// ---------------------------------------------------------------------------------------

/// A holdfast process running in the background. Dropping it (also when a test fails)
/// resumes and kills it, so no stopped process is left behind.
struct Bg {
    child: Option<Child>,
    cmdline: String,
    out: PathBuf,
    err: PathBuf,
    _dir: TempDir,
}

impl Bg {
    fn start(repo: &Repo, args: &[&str]) -> Bg {
        let dir = tempdir();
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let mut c = repo.command(args);
        c.stdin(Stdio::null())
            .stdout(File::create(&out).expect("create stdout file"))
            .stderr(File::create(&err).expect("create stderr file"));
        let cmdline = format!("holdfast {}", args.join(" "));
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        Bg {
            child: Some(child),
            cmdline,
            out,
            err,
            _dir: dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("still running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        let r = unsafe { nix::libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.pid());
    }

    fn stop(&self) {
        self.signal(nix::libc::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(nix::libc::SIGCONT);
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("still running")
            .try_wait()
            .expect("try_wait")
    }

    fn output(&self, status: ExitStatus) -> Run {
        Run {
            cmdline: self.cmdline.clone(),
            output: Output {
                status,
                stdout: fs::read(&self.out).unwrap_or_default(),
                stderr: fs::read(&self.err).unwrap_or_default(),
            },
        }
    }

    /// Waits for the process to end; panics if it panicked.
    fn wait(mut self) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            assert!(
                start.elapsed() < BG_LIMIT,
                "{} did not finish within {BG_LIMIT:?}",
                self.cmdline
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        self.child = None;
        let run = self.output(status);
        run.assert_no_panic();
        run
    }

    /// SIGKILL; returns whether it was still running (and so really killed).
    fn kill9(mut self) -> bool {
        let mut child = self.child.take().expect("still running");
        let killed = child.try_wait().expect("try_wait").is_none() && child.kill().is_ok();
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        if killed && status.signal() != Some(9) {
            // It ended on its own between the check and the signal.
            let run = self.output(status);
            run.assert_no_panic();
            return false;
        }
        killed
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { nix::libc::kill(c.id() as i32, nix::libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `backup --json SRC` and stops it (SIGSTOP) as soon as it has written a pack: it
/// has then written its session and loaded the index and the gc markers.
fn start_and_stop_backup(repo: &Repo, src: &Path) -> Bg {
    let before = repo.packs().len();
    let src = src.to_str().expect("UTF-8 path");
    let mut bg = Bg::start(repo, &["backup", "--json", src]);
    let start = Instant::now();
    loop {
        if repo.packs().len() > before {
            bg.stop();
            break;
        }
        if let Some(st) = bg.exited() {
            bg.child = None;
            panic!(
                "the backup finished ({st}) before the test could stop it; give it more data\n{}",
                bg.output(st)
            );
        }
        assert!(start.elapsed() < BG_LIMIT, "the backup wrote no pack");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !names(repo, "sessions").is_empty(),
        "a running backup has no session file in sessions/ (SPEC.md §12.2)"
    );
    bg
}

/// A gc marker turned into a FIFO: the next process that reads the gc markers blocks in
/// `open` until [`HeldMarker::release`] writes the original bytes into it.
struct HeldMarker {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl HeldMarker {
    /// Holds the first gc marker of the repository (there must be one).
    fn hold(repo: &Repo) -> HeldMarker {
        let name = names(repo, "gc")
            .into_iter()
            .find(|n| is_hex_id(n))
            .expect("a gc marker to hold");
        let path = repo.path.join("gc").join(name);
        let bytes = fs::read(&path).expect("read gc marker");
        fs::remove_file(&path).expect("remove gc marker");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        HeldMarker { path, bytes }
    }

    /// Waits until `bg` opens the FIFO for reading (it is then past its session, its check
    /// for other prunes and its index load) and returns the writing end, which keeps it
    /// blocked until dropped.
    fn wait_for_reader(&self, bg: &mut Bg) -> File {
        let start = Instant::now();
        loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&self.path)
            {
                Ok(f) => return f,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {}
                Err(e) => panic!("open {} for writing: {e}", self.path.display()),
            }
            if let Some(st) = bg.exited() {
                bg.child = None;
                panic!(
                    "{} ended ({st}) before it read the gc markers\n{}",
                    bg.cmdline,
                    bg.output(st)
                );
            }
            assert!(
                start.elapsed() < BG_LIMIT,
                "nobody opened the held gc marker"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Lets the blocked reader read the marker's original bytes.
    fn release(&self, mut w: File) {
        w.write_all(&self.bytes)
            .expect("write marker bytes into the FIFO");
        drop(w);
    }

    /// Puts the marker file back as a regular file, unless a prune deleted it meanwhile.
    fn restore(self) {
        let Ok(m) = fs::symlink_metadata(&self.path) else {
            return;
        };
        if m.file_type().is_file() {
            return;
        }
        fs::remove_file(&self.path).expect("remove FIFO");
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, &self.bytes).expect("write marker");
        fs::rename(&tmp, &self.path).expect("rename marker");
    }
}

// ---------------------------------------------------------------------------------------
// 1-3: mark, sweep, margin, dry run
// ---------------------------------------------------------------------------------------

/// Two snapshots of disjoint trees, so that forgetting one leaves exactly its packs unused.
struct TwoSnapshots {
    repo: Repo,
    _work: TempDir,
    a: String,
    b: String,
    b_src: PathBuf,
    packs_a: BTreeMap<String, u64>,
    packs_b: BTreeMap<String, u64>,
}

fn two_snapshots() -> TwoSnapshots {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let a_src = work.path().join("a");
    let b_src = work.path().join("b");
    apply_spec(
        &a_src,
        &[],
        &[
            file("x1", 2 * MIB + 5, 11),
            file("x2", 900_000, 12),
            file("sub/x3", 700_000, 13),
        ],
    );
    apply_spec(
        &b_src,
        &[],
        &[file("y1", 2 * MIB + 7, 21), file("sub/y2", 800_000, 22)],
    );
    let a = repo.backup(&[&a_src], NO).id;
    let packs_a = packs(&repo);
    let b = repo.backup(&[&b_src], NO).id;
    let packs_b: BTreeMap<String, u64> = packs(&repo)
        .into_iter()
        .filter(|(p, _)| !packs_a.contains_key(p))
        .collect();
    assert!(!packs_a.is_empty() && !packs_b.is_empty());
    TwoSnapshots {
        repo,
        _work: work,
        a,
        b,
        b_src,
        packs_a,
        packs_b,
    }
}

/// Forget one of two snapshots: the first prune only marks (exactly the forgotten
/// snapshot's packs; nothing deleted or added), the second deletes exactly them, the other
/// snapshot restores byte-identical, and a third prune has nothing to do.
#[test]
fn forgotten_snapshot_is_marked_then_deleted() {
    let t = two_snapshots();
    let repo = &t.repo;
    let all = packs(repo);
    forget(repo, &t.a);

    let r1 = prune(repo, NOW);
    assert_eq!(
        num(&r1, "packs_marked"),
        t.packs_a.len() as u64,
        "first prune: marks every pack of the forgotten snapshot and nothing else: {r1}"
    );
    assert_eq!(num(&r1, "bytes_marked"), sum(&t.packs_a), "{r1}");
    assert_eq!(num(&r1, "packs_deleted"), 0, "the mark phase deleted: {r1}");
    assert_eq!(num(&r1, "packs_repacked"), 0, "{r1}");
    assert_eq!(
        packs(repo),
        all,
        "the mark phase changed data/ (nothing may be deleted in the run that decides it)"
    );
    assert!(!names(repo, "gc").is_empty(), "no gc marker written: {r1}");
    assert!(
        names(repo, "sessions").is_empty(),
        "prune left a session file behind"
    );

    let r2 = prune(repo, NOW);
    assert!(num(&r2, "markers_due") >= 1, "{r2}");
    assert!(postponed(&r2).is_empty(), "{r2}");
    assert_eq!(num(&r2, "packs_rescued"), 0, "{r2}");
    assert_eq!(num(&r2, "packs_deleted"), t.packs_a.len() as u64, "{r2}");
    assert_eq!(num(&r2, "bytes_deleted"), sum(&t.packs_a), "{r2}");
    assert!(num(&r2, "bytes_deleted") > 0);
    assert_eq!(
        packs(repo),
        t.packs_b,
        "after the sweep exactly the packs of the kept snapshot must remain"
    );
    assert!(names(repo, "gc").is_empty(), "swept markers left in gc/");
    assert!(names(repo, "sessions").is_empty());
    assert_no_dangling_index_entries(repo, "after the sweep");

    assert_eq!(repo.snapshot_ids(NO), vec![t.b.clone()]);
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
    check(repo);

    let r3 = prune(repo, NOW);
    for k in [
        "packs_marked",
        "packs_deleted",
        "packs_repacked",
        "markers_due",
    ] {
        assert_eq!(num(&r3, k), 0, "third prune: {k}: {r3}");
    }
    assert_eq!(packs(repo), t.packs_b);
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
}

/// With the default safety margin (2h), or 1h, a marker made just now is not due: later
/// prunes delete nothing; with 0s the same marker is swept.
#[test]
fn safety_margin_holds_the_deletion_back() {
    let t = two_snapshots();
    let repo = &t.repo;
    let all = packs(repo);
    forget(repo, &t.a);

    let r1 = prune(repo, NO);
    assert_eq!(num(&r1, "packs_marked"), t.packs_a.len() as u64, "{r1}");
    for extra in [NO, &["--safety-margin", "1h"][..], NO] {
        let r = prune(repo, extra);
        assert_eq!(num(&r, "markers_due"), 0, "prune {extra:?}: {r}");
        assert_eq!(num(&r, "packs_deleted"), 0, "prune {extra:?}: {r}");
        assert_eq!(num(&r, "bytes_deleted"), 0, "prune {extra:?}: {r}");
        assert_eq!(
            num(&r, "packs_marked"),
            0,
            "prune {extra:?} marked packs again that are already marked: {r}"
        );
        assert_eq!(packs(repo), all, "prune {extra:?} changed data/");
    }
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);

    let r = prune(repo, NOW);
    assert_eq!(num(&r, "packs_deleted"), t.packs_a.len() as u64, "{r}");
    assert_eq!(packs(repo), t.packs_b);
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
}

/// A safety margin that is not understood is a usage error (exit 2, naming the option and
/// saying what to write), refused before the repository is opened: nothing is written or
/// deleted, although a due marker is waiting that `0s` sweeps. An empty value (a script's
/// unset variable) is never taken as zero; a bare `m` is refused as ambiguous. Margins
/// with several units (`1d12h`) are understood and hold the marker back.
#[test]
fn unparsable_safety_margin_is_refused_and_deletes_nothing() {
    let t = two_snapshots();
    let repo = &t.repo;
    let all = packs(repo);
    forget(repo, &t.a);
    let r = prune(repo, NOW);
    assert_eq!(num(&r, "packs_marked"), t.packs_a.len() as u64, "{r}");
    let before = listing(repo);

    let refused: &[(&str, &[&str])] = &[
        ("", &["empty", "0s"]),
        (" ", &["empty"]),
        ("30m", &["ambiguous", "30min", "30mo"]),
        ("-1h", &["negative"]),
        ("1mo", &["no fixed length"]),
        ("1y", &["no fixed length"]),
        ("2x", &["unknown unit"]),
        ("1.5h", &["whole numbers"]),
        ("5", &["unit"]),
        ("1h1h", &["twice"]),
        ("99999999999s", &["too large"]),
        ("300y", &["too long"]),
    ];
    for (value, says) in refused {
        for args in [
            vec![
                "prune".to_string(),
                "--safety-margin".into(),
                value.to_string(),
            ],
            vec!["prune".to_string(), format!("--safety-margin={value}")],
            vec![
                "forget".to_string(),
                "--keep-last".into(),
                "1".into(),
                "--prune".into(),
                "--safety-margin".into(),
                value.to_string(),
            ],
        ] {
            let run = repo.cmd(&args);
            run.assert_code(exit::USAGE)
                .assert_stderr_contains("--safety-margin");
            for s in *says {
                run.assert_stderr_contains(s);
            }
        }
        assert_eq!(
            listing(repo),
            before,
            "a refused prune --safety-margin {value:?} changed the repository"
        );
    }
    // With --json the usage error is a JSON document on stderr.
    let run = repo.cmd(&["prune", "--json", "--safety-margin", ""]);
    run.assert_code(exit::USAGE);
    let err: Value = serde_json::from_str(run.stderr_str().trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON document: {e}\n{run}"));
    assert_eq!(err["exit_code"], 2, "{run}");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("--safety-margin"),
        "{run}"
    );
    assert_eq!(
        listing(repo),
        before,
        "a refused prune changed the repository"
    );
    assert_eq!(packs(repo), all);

    // Margins in the one grammar: not due yet, nothing deleted.
    for margin in ["1d12h", "90min", "1w", "3600s"] {
        let r = prune(repo, &["--safety-margin", margin]);
        assert_eq!(num(&r, "markers_due"), 0, "--safety-margin {margin}: {r}");
        assert_eq!(num(&r, "packs_deleted"), 0, "--safety-margin {margin}: {r}");
    }
    assert_eq!(packs(repo), all);
    // The marker was due all along: had any refused value been taken as zero, these
    // packs would have been deleted.
    let r = prune(repo, NOW);
    assert_eq!(num(&r, "packs_deleted"), t.packs_a.len() as u64, "{r}");
    assert_eq!(packs(repo), t.packs_b);
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
}

/// `--dry-run` with a due marker and new unused data changes nothing in the repository
/// (not even a session file written and removed), and reports what the real run then does.
#[test]
fn dry_run_changes_nothing_and_predicts_the_real_run() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    let gen = |g: u64| -> Vec<FileSpec> {
        (0..8u64)
            .map(|k| {
                let v = if k % 3 == g % 3 { g } else { 0 };
                file(&format!("f{k}"), 300_000 + k * 10_000, 100 * k + v)
            })
            .collect()
    };
    let (s0, s1, s2) = (gen(0), gen(1), gen(2));
    apply_spec(&src, &[], &s0);
    let a = repo.backup(&[&src], NO).id;
    apply_spec(&src, &s0, &s1);
    let b = repo.backup(&[&src], NO).id;
    apply_spec(&src, &s1, &s2);
    let c = repo.backup(&[&src], NO).id;
    forget(&repo, &a);
    let r = prune(&repo, NOW);
    assert!(num(&r, "packs_marked") > 0, "{r}");
    forget(&repo, &b);

    let before = listing(&repo);
    let mut dry_args = vec!["--dry-run"];
    dry_args.extend_from_slice(NOW);
    let dry = prune(&repo, &dry_args);
    let after = listing(&repo);
    if before != after {
        let mut d = Vec::new();
        for (p, v) in &before {
            match after.get(p) {
                None => d.push(format!("{} removed", p.display())),
                Some(w) if w != v => d.push(format!("{} changed {v:?} -> {w:?}", p.display())),
                _ => {}
            }
        }
        for p in after.keys().filter(|p| !before.contains_key(*p)) {
            d.push(format!("{} added", p.display()));
        }
        panic!(
            "prune --dry-run changed the repository:\n  {}\nreport: {dry}",
            d.join("\n  ")
        );
    }
    assert!(num(&dry, "markers_due") >= 1, "{dry}");
    assert!(
        num(&dry, "packs_deleted") > 0,
        "dry run reports no deletion: {dry}"
    );
    assert!(
        num(&dry, "packs_marked") > 0,
        "dry run reports no mark: {dry}"
    );

    let real = prune(&repo, NOW);
    for k in [
        "packs_deleted",
        "bytes_deleted",
        "packs_rescued",
        "packs_marked",
        "bytes_marked",
        "packs_repacked",
        "live_blobs",
    ] {
        assert_eq!(
            num(&dry, k),
            num(&real, k),
            "{k}: the dry run predicted something else than the real run did\ndry:  {dry}\nreal: {real}"
        );
    }
    assert_restores(&repo, &c, &src, &src);
    check(&repo);
}

// ---------------------------------------------------------------------------------------
// 4: marked packs are not reused, and are rescued when a snapshot needs them
// ---------------------------------------------------------------------------------------

/// 4a. A backup made after a pack was marked must not deduplicate against it (SPEC.md
/// §12.3): backing up the same tree again uploads it again; the sweep then deletes the old
/// packs, and the new snapshot restores.
#[test]
fn backup_after_the_mark_does_not_reuse_marked_packs() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("t");
    let spec = vec![
        file("a", 2 * MIB + 3, 1),
        file("b", 900_000, 2),
        file("d/c", 600_000, 3),
    ];
    apply_spec(&src, &[], &spec);
    let a = repo.backup(&[&src], NO).id;
    let old = packs(&repo);
    forget(&repo, &a);
    let r1 = prune(&repo, NOW);
    assert_eq!(num(&r1, "packs_marked"), old.len() as u64, "{r1}");

    let a2 = repo.backup(&[&src], NO);
    let size = total_len(&spec);
    assert!(
        a2.stat("bytes_added_stored") * 100 >= size * 95,
        "the backup after the mark stored {} bytes of a {size}-byte tree whose only copy is \
         in marked packs: it deduplicated against packs that the next prune deletes\n{}",
        a2.stat("bytes_added_stored"),
        a2.json
    );
    let r2 = prune(&repo, NOW);
    assert_eq!(num(&r2, "packs_rescued"), 0, "{r2}");
    assert_eq!(num(&r2, "packs_deleted"), old.len() as u64, "{r2}");
    for p in old.keys() {
        assert!(!packs(&repo).contains_key(p), "old pack {p} not deleted");
    }
    assert_no_dangling_index_entries(&repo, "after the sweep");
    assert_restores(&repo, &a2.id, &src, &src);
    check(&repo);
}

/// 4b. A snapshot that references marked packs appears after the mark (what a backup that
/// deduplicated against them before the mark does when it finishes after it): the sweep
/// rescues the packs instead of deleting them, they become ordinary packs again (no marker
/// left; a new backup deduplicates against them), and everything restores.
#[test]
fn marked_packs_are_rescued_when_a_snapshot_needs_them() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("t");
    let spec = vec![
        file("a", 2 * MIB + 3, 31),
        file("b", 900_000, 32),
        file("d/c", 600_000, 33),
    ];
    apply_spec(&src, &[], &spec);
    let a = repo.backup(&[&src], NO).id;
    let all = packs(&repo);
    let snap_file = repo.path.join("snapshots").join(&a);
    let snap_bytes = fs::read(&snap_file).expect("read snapshot file");
    forget(&repo, &a);
    let r1 = prune(&repo, NOW);
    assert_eq!(num(&r1, "packs_marked"), all.len() as u64, "{r1}");

    // The snapshot comes back (written by a writer that started before the mark).
    fs::write(&snap_file, &snap_bytes).expect("write snapshot file");
    let r2 = prune(&repo, NOW);
    assert!(num(&r2, "markers_due") >= 1, "{r2}");
    assert_eq!(
        num(&r2, "packs_deleted"),
        0,
        "the sweep deleted packs a snapshot references: {r2}"
    );
    assert_eq!(num(&r2, "packs_rescued"), all.len() as u64, "{r2}");
    assert_eq!(packs(&repo), all);
    assert_restores(&repo, &a, &src, &src);

    let r3 = prune(&repo, NOW);
    for k in ["markers_due", "packs_marked", "packs_deleted"] {
        assert_eq!(
            num(&r3, k),
            0,
            "{k}: rescued packs must be ordinary again: {r3}"
        );
    }
    assert!(
        names(&repo, "gc").is_empty(),
        "a marker still lists rescued packs"
    );
    let a3 = repo.backup(&[&src], &["--force"]);
    assert_eq!(
        a3.stat("data_blobs_added"),
        0,
        "a backup after the rescue did not deduplicate against the rescued packs: {}",
        a3.json
    );
    assert_restores(&repo, &a3.id, &src, &src);
    check(&repo);
}

// ---------------------------------------------------------------------------------------
// 5: running backups
// ---------------------------------------------------------------------------------------

/// A backup that started before the mark (and deduplicated against packs that become
/// unused) holds the sweep back while it runs; when it has finished, the sweep rescues what
/// its snapshot references, and every snapshot restores byte-identical.
#[test]
fn running_backup_holds_the_sweep_back() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let (a_src, k_src, b_src) = (
        work.path().join("a"),
        work.path().join("k"),
        work.path().join("b"),
    );
    let a_spec = vec![file("shared1", 1_500_000, 51), file("shared2", 700_000, 52)];
    apply_spec(&a_src, &[], &a_spec);
    apply_spec(&k_src, &[], &[file("keep", 800_000, 53)]);
    // B holds A's content and enough new data to be stopped midway.
    let mut b_spec = a_spec.clone();
    b_spec.extend((0..6u64).map(|i| file(&format!("new/n{i}"), MIB + i, 60 + i)));
    apply_spec(&b_src, &[], &b_spec);

    let a = repo.backup(&[&a_src], NO).id;
    let k = repo.backup(&[&k_src], NO).id;
    forget(&repo, &a);

    let bg = start_and_stop_backup(&repo, &b_src);
    let r1 = prune(&repo, NOW);
    assert!(num(&r1, "packs_marked") > 0, "{r1}");
    assert_eq!(num(&r1, "packs_deleted"), 0, "{r1}");
    let marked_state = packs(&repo);

    let r2 = prune(&repo, NOW);
    assert!(num(&r2, "markers_due") >= 1, "{r2}");
    assert!(
        !postponed(&r2).is_empty(),
        "the sweep was not postponed although a backup that started before the mark runs: {r2}"
    );
    assert_eq!(num(&r2, "packs_deleted"), 0, "{r2}");
    let now = packs(&repo);
    let gone: Vec<&String> = marked_state
        .keys()
        .filter(|p| !now.contains_key(*p))
        .collect();
    assert!(
        gone.is_empty(),
        "packs deleted while a backup that started before the mark runs: {gone:?}"
    );

    bg.resume();
    let run = bg.wait();
    run.assert_ok();
    let b = Repo::parse_backup(&run).id;

    let r3 = prune(&repo, NOW);
    assert!(postponed(&r3).is_empty(), "{r3}");
    assert!(
        num(&r3, "packs_rescued") > 0,
        "the finished backup references marked packs (A's content, and its own packs \
         written before the mark), but none was rescued: {r3}"
    );
    assert_no_dangling_index_entries(&repo, "after the sweep");
    assert_restores(&repo, &b, &b_src, &b_src);
    assert_restores(&repo, &k, &k_src, &k_src);
    check(&repo);

    // Two more rounds sweep whatever the last one marked.
    prune(&repo, NOW);
    prune(&repo, NOW);
    assert_no_dangling_index_entries(&repo, "after two more prunes");
    assert_restores(&repo, &b, &b_src, &b_src);
    assert_restores(&repo, &k, &k_src, &k_src);
    check(&repo);
}

/// A backup killed midway leaves the packs it was writing in `tmp/`. A prune removes such
/// files once they are old and no backup runs; never while one runs (it could be that
/// backup's open pack), and never a fresh one.
#[test]
fn prune_removes_staging_files_of_killed_backups() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("b");
    apply_spec(
        &src,
        &[],
        &(0..6u64)
            .map(|i| file(&format!("n{i}"), MIB + i, 70 + i))
            .collect::<Vec<_>>(),
    );
    let tmp = repo.path.join("tmp");
    let dead = tmp.join("0123456789abcdef01234567.tmp");
    fs::write(&dead, vec![7u8; 100_000]).unwrap();
    File::options()
        .write(true)
        .open(&dead)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();

    let bg = start_and_stop_backup(&repo, &src);
    let r1 = prune(&repo, NOW);
    assert_eq!(num(&r1, "temp_files_removed"), 0, "{r1}");
    assert!(dead.exists(), "removed while a backup was running");

    let mut bg = bg;
    bg.signal(nix::libc::SIGKILL);
    while bg.exited().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    bg.child = None;
    let fresh: Vec<PathBuf> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| *p != dead)
        .collect();
    let r2 = prune(&repo, NOW);
    assert_eq!(num(&r2, "temp_files_removed"), 1, "{r2}");
    assert!(!dead.exists(), "an old staging file stayed");
    for f in &fresh {
        assert!(
            f.exists(),
            "{} is younger than an hour but was removed",
            f.display()
        );
    }
    check(&repo);
}

/// 5b. A prune that runs while a backup is writing must leave that backup's packs usable:
/// once the backup has finished, the next backup of the unchanged tree stores nothing
/// again. (SPEC.md §12.3 deletes orphan packs only when older than the margin and no live
/// session predates them; marking a live writer's packs makes every later backup treat
/// its data as absent until a sweep rescues it.)
#[test]
fn backup_running_during_a_prune_is_reused_by_the_next_backup() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("t");
    let spec: Vec<FileSpec> = (0..6u64)
        .map(|i| file(&format!("f{i}"), MIB + 11 * i, 70 + i))
        .collect();
    apply_spec(&src, &[], &spec);

    let bg = start_and_stop_backup(&repo, &src);
    let r = prune(&repo, NOW);
    bg.resume();
    let run = bg.wait();
    run.assert_ok();
    let b = Repo::parse_backup(&run).id;

    let c = repo.backup(&[&src], NO);
    assert_eq!(
        c.stat("data_blobs_added"),
        0,
        "the backup after one that ran beside a prune stored {} data blobs ({} bytes) again: \
         the prune marked the running backup's packs (orphans_marked={} in {r}), so they \
         count as absent\n{}",
        c.stat("data_blobs_added"),
        c.stat("bytes_added_stored"),
        num(&r, "orphans_marked"),
        c.json
    );
    assert_restores(&repo, &b, &src, &src);
    assert_restores(&repo, &c.id, &src, &src);
}

// ---------------------------------------------------------------------------------------
// 6: concurrent backups and prune in a loop
// ---------------------------------------------------------------------------------------

const HOSTS: usize = 3;
const GENS: usize = 5;

/// The tree of host `h` at generation `g`: files shared by all hosts, one shared file that
/// changes every generation (written by several backups at once), own files whose content
/// toggles between two versions (so data of forgotten snapshots comes back), and a file
/// that exists for one generation only.
fn host_spec(h: usize, g: usize) -> Vec<FileSpec> {
    let (h, g) = (h as u64, g as u64);
    let mut v = Vec::new();
    for k in 0..3u64 {
        v.push(file(&format!("common/lib{k}"), 2 * MIB + k * 1000, 100 + k));
    }
    v.push(file("common/rotating", 1_500_000, 200 + g));
    for k in 0..8u64 {
        let version = (0..=g).filter(|x| (x + k) % 3 == 0).count() as u64 % 2;
        let len = if k % 2 == 0 { 2 * MIB } else { 300_000 };
        v.push(file(
            &format!("own/f{k}"),
            len + k * 30_000 + version * 7,
            10_000 * (h + 1) + 10 * k + version,
        ));
    }
    v.push(file(
        &format!("own/extra-{g}"),
        700_000,
        50_000 + 100 * h + g,
    ));
    v
}

#[derive(Clone, Debug)]
struct Saved {
    host: usize,
    gen: usize,
    id: String,
}

/// Three backup processes write different trees (with shared content) into one
/// repository, several generations each with mutations in between, while a fourth thread
/// runs `prune --safety-margin 0s` in a loop and forgets the oldest snapshot of a host now
/// and then. Every prune and backup must succeed, and afterwards every snapshot a backup
/// reported and that was not forgotten restores byte-identical (check passes too).
#[test]
fn concurrent_backups_beside_a_prune_loop() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let srcs: Vec<PathBuf> = (0..HOSTS)
        .map(|h| work.path().join(format!("node{h}")))
        .collect();
    let seed: u64 = std::env::var("PRUNE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("concurrent_backups_beside_a_prune_loop: PRUNE_TEST_SEED={seed}");

    let saved: Mutex<Vec<Saved>> = Mutex::new(Vec::new());
    let forgotten: Mutex<Vec<Saved>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let running = std::sync::atomic::AtomicUsize::new(HOSTS);
    let reports: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    // The hosts start each generation together, after random delays: between generations
    // there are moments without any backup, in which a sweep can run while backups start.
    let barrier = std::sync::Barrier::new(HOSTS);

    std::thread::scope(|s| {
        for (h, src) in srcs.iter().enumerate() {
            let (repo, saved, failures, running, barrier) =
                (&repo, &saved, &failures, &running, &barrier);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (h as u64 + 1));
                let mut old: Vec<FileSpec> = Vec::new();
                let host = format!("node{h}");
                for g in 0..GENS {
                    let new = host_spec(h, g);
                    apply_spec(src, &old, &new);
                    old = new;
                    barrier.wait();
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
                    let run = repo.backup_run(&[src], &["--host", &host]);
                    if run.code() != Some(0) {
                        failures.lock().unwrap().push(format!(
                            "backup of node{h} generation {g} did not succeed cleanly:\n{run}"
                        ));
                    }
                    // A snapshot written with warnings (exit 3) is still checked below.
                    if matches!(run.code(), Some(0) | Some(3)) {
                        let id = Repo::parse_backup(&run).id;
                        saved.lock().unwrap().push(Saved {
                            host: h,
                            gen: g,
                            id,
                        });
                    }
                }
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let (repo, saved, forgotten, failures, running, reports) =
            (&repo, &saved, &forgotten, &failures, &running, &reports);
        s.spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut i = 0usize;
            // Bounded: the backups end, and so does this loop.
            while running.load(std::sync::atomic::Ordering::SeqCst) > 0 && i < 10_000 {
                let max_unused = ["10", "0", "30"][i % 3];
                let run = prune_run(repo, &["--safety-margin", "0s", "--max-unused", max_unused]);
                if run.code() == Some(0) {
                    reports.lock().unwrap().push(report_of(&run));
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("prune {i} beside running backups failed:\n{run}"));
                }
                // Now and then the oldest snapshot of a host that has a newer one.
                for h in 0..HOSTS {
                    if !rng.gen_bool(0.6) {
                        continue;
                    }
                    let victim = {
                        let sv = saved.lock().unwrap();
                        let fg = forgotten.lock().unwrap();
                        let mine: Vec<&Saved> = sv
                            .iter()
                            .filter(|x| x.host == h && !fg.iter().any(|f| f.id == x.id))
                            .collect();
                        if mine.len() >= 2 {
                            mine.iter().min_by_key(|x| x.gen).map(|x| (*x).clone())
                        } else {
                            None
                        }
                    };
                    if let Some(v) = victim {
                        forget(repo, &v.id);
                        forgotten.lock().unwrap().push(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..100)));
                i += 1;
            }
        });
    });

    let failures = failures.into_inner().unwrap();
    let saved = saved.into_inner().unwrap();
    let forgotten = forgotten.into_inner().unwrap();
    let reports = reports.into_inner().unwrap();
    let during: u64 = reports.iter().map(|r| num(r, "packs_deleted")).sum();
    eprintln!(
        "{} prunes beside the backups ({} postponed a sweep, {} packs deleted, {} rescued, \
         {} repacked, {} orphans marked); {} snapshots saved, {} forgotten",
        reports.len(),
        reports.iter().filter(|r| !postponed(r).is_empty()).count(),
        during,
        reports.iter().map(|r| num(r, "packs_rescued")).sum::<u64>(),
        reports
            .iter()
            .map(|r| num(r, "packs_repacked"))
            .sum::<u64>(),
        reports
            .iter()
            .map(|r| num(r, "orphans_marked"))
            .sum::<u64>(),
        saved.len(),
        forgotten.len()
    );
    let mut failures = failures;
    assert!(!reports.is_empty(), "no prune ran beside the backups");

    // Quiet now: sweep everything that was marked.
    let mut deleted = during;
    for i in 0..2 {
        let run = prune_run(&repo, NOW);
        if run.code() == Some(0) {
            deleted += num(&report_of(&run), "packs_deleted");
        } else {
            failures.push(format!("prune {i} after the backups failed:\n{run}"));
        }
    }
    if deleted == 0 {
        failures.push("no prune ever deleted anything".into());
    }
    let d = dangling_index_entries(&repo);
    if !d.is_empty() {
        failures.push(format!(
            "after the prune loop the index names deleted packs:\n  {}",
            d.join("\n  ")
        ));
    }

    let expected: Vec<&Saved> = saved
        .iter()
        .filter(|x| !forgotten.iter().any(|f| f.id == x.id))
        .collect();
    let mut want: Vec<String> = expected.iter().map(|x| x.id.clone()).collect();
    let mut have = repo.snapshot_ids(NO);
    want.sort();
    have.sort();
    if have != want {
        failures.push(format!(
            "snapshots in the repository: {have:?}\nexpected: {want:?}"
        ));
    }
    for x in &expected {
        let e = tempdir();
        let exp = e.path().join("expected");
        apply_spec(&exp, &[], &host_spec(x.host, x.gen));
        let t = tempdir();
        let run = repo.restore_run(&x.id, t.path(), NO);
        if run.code() != Some(0) {
            failures.push(format!(
                "snapshot {} (node{} generation {}) cannot be restored:\n{run}",
                x.id, x.host, x.gen
            ));
            continue;
        }
        let diffs = compare_trees(&exp, &restored(t.path(), &srcs[x.host]));
        if !diffs.is_empty() {
            failures.push(format!(
                "snapshot {} (node{} generation {}) restores with differences:\n  {}",
                x.id,
                x.host,
                x.gen,
                diffs.join("\n  ")
            ));
        }
    }
    if has_command("check") {
        let run = repo.cmd(&["check", "--read-data"]);
        if run.code() != Some(0) {
            failures.push(format!("check fails after the prune loop:\n{run}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems (PRUNE_TEST_SEED={seed}; {} snapshots saved, {} forgotten):\n\n{}",
        failures.len(),
        saved.len(),
        forgotten.len(),
        failures.join("\n\n")
    );
    assert_eq!(saved.len(), HOSTS * GENS, "every backup saved a snapshot");
}

// ---------------------------------------------------------------------------------------
// 7: prune killed at many points
// ---------------------------------------------------------------------------------------

fn crash_spec(g: usize) -> Vec<FileSpec> {
    let g = g as u64;
    let mut v: Vec<FileSpec> = (0..12u64)
        .map(|k| {
            let changes = (1..=g).filter(|x| (x + k) % 4 == 0).count() as u64;
            let len = if k % 2 == 0 {
                100_000 + k * 15_000
            } else {
                600_000 + k * 20_000
            };
            file(&format!("f{k:02}"), len + changes, 1000 + 10 * k + changes)
        })
        .collect();
    v.push(file(&format!("extra-{g}"), 400_000, 2000 + g));
    v
}

/// SIGKILL a prune that has real work (a due marker to sweep, unused packs to mark,
/// partly used packs to repack) at many points. After each kill the remaining snapshots
/// restore byte-identical (and check passes); the next complete prunes succeed, leave no
/// index entry naming a deleted pack, and the snapshots still restore.
#[test]
fn prune_killed_at_many_points() {
    // The scenario, made once and copied for every kill.
    let template = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    let mut ids = Vec::new();
    let mut old = Vec::new();
    for g in 0..4 {
        let new = crash_spec(g);
        apply_spec(&src, &old, &new);
        old = new;
        ids.push(template.backup(&[&src], NO).id);
    }
    forget(&template, &ids[0]);
    let r = prune(&template, &["--safety-margin", "0s", "--max-unused", "100"]);
    assert!(num(&r, "packs_marked") > 0, "{r}");
    forget(&template, &ids[1]);
    forget(&template, &ids[2]);
    let keep = [(ids[3].clone(), 3usize)];
    let expected: Vec<TempDir> = keep
        .iter()
        .map(|(_, g)| {
            let d = tempdir();
            apply_spec(&d.path().join("e"), &[], &crash_spec(*g));
            d
        })
        .collect();
    // Problems restoring the kept snapshots, if any.
    let verify = |repo: &Repo, when: &str| -> Option<String> {
        let mut problems = Vec::new();
        for ((id, g), e) in keep.iter().zip(&expected) {
            let t = tempdir();
            let run = repo.restore_run(id, t.path(), NO);
            if run.code() != Some(0) {
                problems.push(format!(
                    "{when}: snapshot {id} (generation {g}) cannot be restored\n{run}"
                ));
                continue;
            }
            let diffs = compare_trees(&e.path().join("e"), &restored(t.path(), &src));
            if !diffs.is_empty() {
                problems.push(format!(
                    "{when}: snapshot {id} restores with differences:\n  {}",
                    diffs.join("\n  ")
                ));
            }
        }
        (!problems.is_empty()).then(|| problems.join("\n"))
    };
    let prune_args = ["--safety-margin", "0s", "--max-unused", "0"];

    // How long a complete run takes (the fastest of three), and that it has all kinds of
    // work.
    let repo = Repo::uninit();
    copy_dir(&template.path, &repo.path);
    let mut full_time = Duration::MAX;
    for _ in 0..3 {
        reset_repo(&template.path, &repo.path);
        let t0 = Instant::now();
        let r = prune(&repo, &prune_args);
        full_time = full_time.min(t0.elapsed());
        for k in ["packs_deleted", "packs_marked", "packs_repacked"] {
            assert!(num(&r, k) > 0, "the scenario has no {k}: {r}");
        }
    }
    if let Some(p) = verify(&repo, "after an uninterrupted prune") {
        panic!("{p}");
    }

    let seed: u64 = rand::thread_rng().gen();
    let mut rng = StdRng::seed_from_u64(seed);
    // Half the kills spread over the whole run, half over its first 40%, where the sweep
    // deletes packs and rewrites index files.
    let kills = 24u32;
    let mut findings: Vec<String> = Vec::new();
    let mut really_killed = 0;
    for i in 0..kills {
        reset_repo(&template.path, &repo.path);
        let half = kills / 2;
        let frac = if i < half {
            (i as f64 + rng.gen_range(0.0..1.0)) / half as f64 * 0.9
        } else {
            ((i - half) as f64 + rng.gen_range(0.0..1.0)) / half as f64 * 0.4
        };
        let delay = full_time.mul_f64(frac);
        let mut args = vec!["prune"];
        args.extend_from_slice(&prune_args);
        let bg = Bg::start(&repo, &args);
        std::thread::sleep(delay);
        let killed = bg.kill9();
        really_killed += killed as u32;
        let at = format!(
            "kill {i} after {delay:?} of ~{full_time:?} ({}; seed {seed})",
            if killed {
                "killed"
            } else {
                "had already finished"
            }
        );

        if has_command("check") {
            let run = repo.cmd(&["check", "--read-data"]);
            if run.code() != Some(0) {
                findings.push(format!("{at}: check fails right after the kill\n{run}"));
            }
        } else {
            findings.extend(verify(&repo, &format!("{at}, right after the kill")));
        }

        let mut run = prune_run(&repo, &prune_args);
        if run.code() != Some(0) && run.stderr_str().contains("another prune is running") {
            findings.push(format!(
                "{at}: the next prune refuses to run because of the killed prune's session \
                 file (it would for more than an hour)\n{run}"
            ));
            // Go on as if the session had expired, to test the rest.
            for n in names(&repo, "sessions") {
                fs::remove_file(repo.path.join("sessions").join(n)).expect("remove session");
            }
            run = prune_run(&repo, &prune_args);
        }
        if run.code() != Some(0) {
            findings.push(format!("{at}: the next prune failed\n{run}"));
            continue;
        }
        let first = run.stdout_str();
        let run = prune_run(&repo, &prune_args);
        if run.code() != Some(0) {
            findings.push(format!(
                "{at}: the second prune after the kill failed\n{run}"
            ));
            continue;
        }
        let at = format!(
            "{at} [reports of the two prunes after it: {} {}]",
            first.trim(),
            run.stdout_str().trim()
        );
        let d = dangling_index_entries(&repo);
        if !d.is_empty() {
            findings.push(format!(
                "{at}: after two complete prunes the index names deleted packs:\n  {}",
                d.join("\n  ")
            ));
        }
        findings.extend(verify(&repo, &format!("{at}, after two complete prunes")));
        if has_command("check") {
            let run = repo.cmd(&["check", "--read-data"]);
            if run.code() != Some(0) {
                findings.push(format!(
                    "{at}: check fails after two complete prunes\n{run}"
                ));
            }
        }
    }
    assert!(
        findings.is_empty(),
        "{} problems over {kills} kills ({really_killed} during the run):\n\n{}",
        findings.len(),
        findings.join("\n\n")
    );
    assert!(
        really_killed >= kills / 2,
        "only {really_killed} of {kills} prunes were still running when killed"
    );
}

// ---------------------------------------------------------------------------------------
// 8: one prune at a time
// ---------------------------------------------------------------------------------------

/// Three small snapshots of different trees.
fn three_snapshots() -> (Repo, TempDir, Vec<(String, PathBuf)>) {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let mut v = Vec::new();
    for i in 0..3u64 {
        let src = work.path().join(format!("s{i}"));
        apply_spec(
            &src,
            &[],
            &[
                file("one", 700_000 + i, 90 + i),
                file("two", 500_000 + i, 95 + i),
            ],
        );
        let id = repo.backup(&[&src], NO).id;
        v.push((id, src));
    }
    (repo, work, v)
}

/// While a prune runs (held after its session, its check for other prunes and its index
/// load), a second prune fails with exit 1 and "another prune is running", removes its own
/// session and changes nothing; the first one then completes normally.
#[test]
fn second_prune_refuses_while_one_runs() {
    let (repo, _work, snaps) = three_snapshots();
    forget(&repo, &snaps[0].0);
    assert!(num(&prune(&repo, NOW), "packs_marked") > 0);
    let packs_before = packs(&repo);

    let held = HeldMarker::hold(&repo);
    let mut args = vec!["prune", "--json"];
    args.extend_from_slice(NOW);
    let mut first = Bg::start(&repo, &args);
    let w = held.wait_for_reader(&mut first);
    let sessions = names(&repo, "sessions");
    assert_eq!(
        sessions.len(),
        1,
        "the running prune's session: {sessions:?}"
    );

    let second = prune_run(&repo, NOW);
    second
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("another prune is running");
    assert_eq!(
        names(&repo, "sessions"),
        sessions,
        "the refused prune left its session behind (or removed the other's)"
    );
    assert_eq!(
        packs(&repo),
        packs_before,
        "the refused prune changed data/"
    );

    held.release(w);
    let run = first.wait();
    held.restore();
    run.assert_ok();
    let r = report_of(&run);
    assert!(num(&r, "packs_deleted") > 0, "{r}");
    assert!(names(&repo, "sessions").is_empty());
    for (id, src) in &snaps[1..] {
        assert_restores(&repo, id, src, src);
    }
    check(&repo);
}

/// 8b. A prune killed with SIGKILL leaves its session file behind. The next prune must
/// still run (the issue: crash at any point of prune, "the next prune removes" what it
/// left; stale locks are what users hate most about restic) instead of refusing with
/// "another prune is running" until the session goes stale after more than an hour: the
/// session names this host and a process that no longer exists.
#[test]
fn killed_prune_does_not_block_the_next_prune() {
    let (repo, _work, snaps) = three_snapshots();
    forget(&repo, &snaps[0].0);
    assert!(num(&prune(&repo, NOW), "packs_marked") > 0);

    let held = HeldMarker::hold(&repo);
    let mut args = vec!["prune"];
    args.extend_from_slice(NOW);
    let mut first = Bg::start(&repo, &args);
    let w = held.wait_for_reader(&mut first);
    assert!(first.kill9(), "the held prune was not running");
    drop(w);
    held.restore();
    assert_eq!(
        names(&repo, "sessions").len(),
        1,
        "the killed prune's session"
    );

    let run = prune_run(&repo, NOW);
    assert_eq!(
        run.code(),
        Some(0),
        "the prune after a killed prune refuses to run (the dead prune's session file \
         blocks every prune until it is stale, i.e. for more than an hour)\n{run}"
    );
    let r = report_of(&run);
    assert!(num(&r, "packs_deleted") > 0, "{r}");
    for (id, src) in &snaps[1..] {
        assert_restores(&repo, id, src, src);
    }
    check(&repo);
}

// ---------------------------------------------------------------------------------------
// 9: the sweep and a backup finishing during the prune
// ---------------------------------------------------------------------------------------

/// A backup that was running when a marker was written finishes while the sweep is
/// under way: after the prune loaded the index, before it looks at the sessions. The
/// sweep then sees the backup's snapshot (it must: SPEC.md §12.4) and must also see where
/// its blobs are; deciding with the index read before the backup's last index file was
/// written deletes packs that the snapshot references and the index still names.
///
/// Set-up: snapshot S1 of K (no data) and D (data X); S2 of K alone keeps S1's tree pack
/// partly used. Forget S1; prune marks X's packs. Backup B of K and D again: X's packs are
/// marked, so B uploads X again (packs P), while its trees are S1's, still indexed. B is
/// stopped after its first pack; a prune leaves that pack (not indexed yet) alone. The next
/// prune is held at the gc markers, B finishes, the prune goes on.
#[test]
fn sweep_sees_a_backup_that_finished_during_the_prune() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    // Sources outside /tmp, whose ancestors do not change while the test runs, so that B's
    // trees are the same as S1's.
    let base = tempfile::Builder::new()
        .prefix("prune-e2e-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir in CARGO_TARGET_TMPDIR");
    let root = base.path().join("r");
    let (k, d) = (root.join("k"), root.join("d"));
    fs::create_dir_all(&k).expect("mkdir");
    write_file(&k.join("empty"), b"");
    std::os::unix::fs::symlink("empty", k.join("link")).expect("symlink");
    apply_spec(
        &d,
        &[],
        &(0..4u64)
            .map(|i| file(&format!("x{i}"), MIB + 3 * i, 300 + i))
            .collect::<Vec<_>>(),
    );
    let s1 = repo.backup(&[&k, &d], NO).id;
    let s2 = repo.backup(&[&k], NO).id;
    forget(&repo, &s1);
    let keep_trees = ["--safety-margin", "0s", "--max-unused", "100"];
    let r1 = prune(&repo, &keep_trees);
    assert!(num(&r1, "packs_marked") > 0, "{r1}");

    // B, stopped after its first pack; a prune marks that pack.
    let before = repo.packs().len();
    let (ks, ds) = (k.to_str().unwrap(), d.to_str().unwrap());
    let mut bg = Bg::start(&repo, &["backup", "--json", ks, ds]);
    let start = Instant::now();
    while repo.packs().len() == before {
        if let Some(st) = bg.exited() {
            bg.child = None;
            panic!(
                "the backup finished before it could be stopped\n{}",
                bg.output(st)
            );
        }
        assert!(start.elapsed() < BG_LIMIT, "the backup wrote no pack");
        std::thread::sleep(Duration::from_millis(1));
    }
    bg.stop();
    let r2 = prune(&repo, &keep_trees);
    assert!(!postponed(&r2).is_empty(), "{r2}");
    // B's pack is not indexed yet: while B runs it is left alone, not marked (marking it
    // would make every later backup upload its blobs again).
    assert!(num(&r2, "orphans_deferred") > 0, "{r2}");
    assert_eq!(num(&r2, "orphans_marked"), 0, "{r2}");

    // The next prune, held after its index load; B finishes meanwhile.
    let held = HeldMarker::hold(&repo);
    let mut args = vec!["prune", "--json"];
    args.extend_from_slice(&keep_trees);
    let mut p = Bg::start(&repo, &args);
    let w = held.wait_for_reader(&mut p);
    bg.resume();
    let b_run = bg.wait();
    b_run.assert_ok();
    let b = Repo::parse_backup(&b_run);
    held.release(w);
    let p_run = p.wait();
    held.restore();
    assert_eq!(
        p_run.code(),
        Some(0),
        "a prune during which a backup finished failed\nbackup: {}\n{p_run}",
        b.json
    );
    assert_no_dangling_index_entries(&repo, "after a sweep during which a backup finished");
    // The sweep decided with the index written by B, so X's marked packs, whose blobs B
    // uploaded again, are deleted rather than rescued.
    let r3 = report_of(&p_run);
    assert!(num(&r3, "packs_deleted") > 0, "{r3}");
    assert_eq!(
        num(&r3, "packs_rescued"),
        0,
        "an index read before B finished: {r3}"
    );
    assert_restores(&repo, &b.id, &k, &k);
    assert_restores(&repo, &b.id, &d, &d);
    assert_restores(&repo, &s2, &k, &k);

    for _ in 0..2 {
        prune(&repo, NOW);
    }
    assert_no_dangling_index_entries(&repo, "after two more prunes");
    assert_restores(&repo, &b.id, &d, &d);
    assert_restores(&repo, &s2, &k, &k);
    check(&repo);
}

/// A crash between writing a superseding index file (or marker) and deleting what it
/// supersedes leaves the old file behind. The next prune removes it: otherwise, once its
/// superseder is itself superseded and deleted, the old file would count again and name
/// packs that are gone.
#[test]
fn superseded_leftovers_are_removed() {
    let t = two_snapshots();
    let repo = &t.repo;
    forget(repo, &t.a);
    prune(repo, NOW);
    let before: BTreeMap<String, Vec<u8>> = names(repo, "index")
        .into_iter()
        .map(|n| {
            let bytes = fs::read(repo.path.join("index").join(&n)).expect("read index file");
            (n, bytes)
        })
        .collect();
    let r = prune(repo, NOW);
    assert!(num(&r, "index_files_superseded") > 0, "{r}");
    let after = names(repo, "index");
    let gone: Vec<&String> = before.keys().filter(|n| !after.contains(*n)).collect();
    assert!(!gone.is_empty(), "the sweep deleted no index file: {r}");
    // The crash: the superseded files are back.
    for n in &gone {
        fs::write(repo.path.join("index").join(n), &before[*n]).expect("put index file back");
    }
    assert_no_dangling_index_entries(repo, "with superseded leftovers");
    prune(repo, NOW);
    let now = names(repo, "index");
    for n in &gone {
        assert!(
            !now.contains(*n),
            "superseded index file {n} left behind by a crash survived a prune"
        );
    }
    assert_no_dangling_index_entries(repo, "after the leftovers were removed");
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
    check(repo);
}

/// Packs whose every blob is needed are never repacked, whatever `--max-unused` says: a
/// pack's header is not unused space (counting it made `--max-unused 0` repack every pack
/// on every run, doubling the repository each time).
#[test]
fn fully_used_packs_are_not_repacked() {
    let t = two_snapshots();
    let repo = &t.repo;
    let all = packs(repo);
    for _ in 0..2 {
        let r = prune(repo, &["--safety-margin", "0s", "--max-unused", "0"]);
        assert_eq!(num(&r, "packs_repacked"), 0, "{r}");
        assert_eq!(num(&r, "packs_marked"), 0, "{r}");
    }
    assert_eq!(packs(repo), all);
    // After forgetting one snapshot, one cycle repacks what is partly used; the next
    // finds nothing left to do.
    forget(repo, &t.a);
    prune(repo, &["--safety-margin", "0s", "--max-unused", "0"]);
    prune(repo, &["--safety-margin", "0s", "--max-unused", "0"]);
    let r = prune(repo, &["--safety-margin", "0s", "--max-unused", "0"]);
    assert_eq!(num(&r, "packs_repacked"), 0, "{r}");
    assert_eq!(num(&r, "packs_marked"), 0, "{r}");
    assert_restores(repo, &t.b, &t.b_src, &t.b_src);
    check(repo);
}
