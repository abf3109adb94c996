//! `--json`: every command prints valid JSON (one document, or JSON lines for `ls`) with
//! the documented fields, wherever the flag is placed; errors do not put prose on stdout.

use std::ffi::{OsStr, OsString};
use std::fs;

use holdfast_e2e::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn u64_field(v: &Value, k: &str) -> u64 {
    v.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned integer {k:?} in {v}"))
}

const SUMMARY_FIELDS: [&str; 14] = [
    "files_new",
    "files_changed",
    "files_unchanged",
    "dirs_new",
    "dirs_changed",
    "dirs_unchanged",
    "data_blobs_added",
    "tree_blobs_added",
    "bytes_read",
    "bytes_total",
    "bytes_added_raw",
    "bytes_added_stored",
    "errors",
    "duration_ns",
];

/// init, backup, snapshots, ls, restore, cat (every kind), key list/add/remove/passwd and
/// stats all print valid JSON with `--json`.
#[test]
fn json_output_of_every_command_is_valid() {
    let repo = Repo::uninit();
    let init = repo.cmd(&[
        "--json",
        "init",
        "--kdf-memory-kib",
        "8",
        "--kdf-iterations",
        "1",
    ]);
    init.assert_ok();
    let init = init.json();
    assert!(init.is_object(), "{init}");

    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("a.txt"), b"hello\n");
    write_file(&src.join("d/b.bin"), &random_bytes(300_000, 1));
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    // backup
    let b = repo.backup(&[&src], &["--tag", "j"]);
    for k in SUMMARY_FIELDS {
        u64_field(&b.summary, k);
    }
    assert!(b.json["warnings"].is_array(), "{}", b.json);
    assert_eq!(u64_field(&b.summary, "files_new"), 2);

    // snapshots
    let snaps = repo.snapshots(&[] as &[&str]);
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!(s["id"], b.id.as_str());
    for k in ["time", "host", "user", "tree"] {
        assert!(s[k].is_string(), "snapshot field {k}: {s}");
    }
    assert_eq!(s["paths"], serde_json::json!([src.to_str().unwrap()]));
    assert_eq!(s["tags"], serde_json::json!(["j"]));
    assert!(s["parent"].is_null(), "{s}");
    for k in SUMMARY_FIELDS {
        u64_field(&s["summary"], k);
    }
    assert_eq!(
        s["summary"], b.summary,
        "snapshots and backup disagree on the summary"
    );
    let time = s["time"].as_str().unwrap();
    assert!(
        time.len() >= 20 && time.as_bytes()[4] == b'-' && time.as_bytes()[10] == b'T',
        "time is not RFC 3339: {time}"
    );

    // ls: JSON lines, one per entry, with the documented fields and types.
    let run = repo.cmd(&["ls", "--json", "latest"]);
    run.assert_ok();
    let lines = run.json_lines();
    let by_path = |rel: &str| -> Value {
        let p = src.join(rel);
        let p = p.to_str().unwrap();
        lines
            .iter()
            .find(|v| v["path"] == p)
            .unwrap_or_else(|| panic!("ls has no {p}: {lines:?}"))
            .clone()
    };
    assert_eq!(by_path("a.txt")["type"], "file");
    assert_eq!(u64_field(&by_path("a.txt"), "size"), 6);
    assert_eq!(by_path("d")["type"], "dir");
    assert_eq!(by_path("link")["type"], "symlink");
    assert_eq!(by_path("fifo")["type"], "fifo");
    for v in &lines {
        assert!(v["path"].as_str().unwrap().starts_with('/'), "{v}");
        u64_field(v, "size");
        u64_field(v, "mode");
        assert!(v["mtime_ns"].is_i64() || v["mtime_ns"].is_u64(), "{v}");
    }

    // restore
    let t = tempdir();
    let run = repo.cmd(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.path().as_os_str(),
        OsStr::new("--json"),
    ]);
    run.assert_ok();
    assert!(run.json().is_object(), "{run}");

    // cat, every kind.
    let config = repo.json(&["cat", "config"]);
    assert!(config.is_object(), "{config}");
    let key = file_id(&repo.files("keys")[0]);
    assert!(repo.json(&["cat", "key", &key]).is_object());
    let index = file_id(&repo.files("index")[0]);
    assert!(repo.json(&["cat", "index", &index]).is_object());
    let snap = repo.json(&["cat", "snapshot", &b.id]);
    assert!(snap.is_object());
    let tree = s["tree"].as_str().unwrap();
    assert!(!repo.json(&["cat", "tree", tree]).is_null());
    for p in repo.packs() {
        let v = repo.cat_pack(&p);
        let ty = v["type"]
            .as_str()
            .unwrap_or_else(|| panic!("pack type: {v}"));
        assert!(
            ty.eq_ignore_ascii_case("data") || ty.eq_ignore_ascii_case("tree"),
            "{v}"
        );
        assert!(v["blobs"].is_array(), "{v}");
    }
    // Prefixes work for cat too.
    assert!(repo.json(&["cat", "snapshot", &b.id[..8]]).is_object());

    // key list / add / remove / passwd
    let list = repo.json(&["key", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let run = repo.cmd_env(
        &["key", "add", "--json"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new("pw2"))],
    );
    run.assert_ok();
    let added = run.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        repo.json(&["key", "list"]).as_array().map(Vec::len),
        Some(2)
    );
    let run = repo.cmd(&["key", "remove", &added, "--json"]);
    run.assert_ok();
    assert!(run.json().is_object(), "{run}");
    let run = repo.cmd_env(
        &["--json", "key", "passwd"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new("pw3"))],
    );
    run.assert_ok();
    assert!(run.json().is_object(), "{run}");

    // stats
    let run = repo.cmd_env(
        &["stats", "--json"],
        &[("HOLDFAST_PASSWORD", OsStr::new("pw3"))],
    );
    run.assert_ok();
    assert!(run.json().is_object(), "{run}");
}

/// Global flags work before and after the subcommand, `-r` replaces the environment
/// variable, and `--json` output is the same either way.
#[test]
fn global_flags_in_any_position() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("a"), b"a");
    repo.backup(&[&src], &[] as &[&str]);
    let mut outputs = Vec::new();
    for args in [
        vec![OsString::from("--json"), "snapshots".into()],
        vec!["snapshots".into(), "--json".into()],
        vec![
            "-r".into(),
            repo.path.clone().into(),
            "snapshots".into(),
            "--json".into(),
        ],
        vec![
            "snapshots".into(),
            "--repo".into(),
            repo.path.clone().into(),
            "--json".into(),
        ],
    ] {
        let mut c = repo.command(&args);
        if args.iter().any(|a| a == "-r" || a == "--repo") {
            c.env_remove("HOLDFAST_REPOSITORY");
        }
        let run = run_command(c, COMMAND_TIMEOUT);
        run.assert_ok();
        let mut v = run.json();
        // Volatile fields aside, all four must agree.
        if let Some(a) = v.as_array_mut() {
            for s in a {
                s.as_object_mut().unwrap().remove("duration_ns");
            }
        }
        outputs.push(v);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{outputs:#?}");
}

/// With `--json`, a failing command puts nothing but JSON (or nothing) on stdout, and
/// its error on stderr.
#[test]
fn json_errors_keep_stdout_clean() {
    let repo = Repo::new();
    let cases: Vec<Vec<OsString>> = vec![
        os(&["--json", "ls", "latest"]),
        os(&["--json", "snapshots", "--host", "x"]),
        os(&["--json", "cat", "snapshot", "ffff"]),
        os(&["--json", "key", "remove", "0000"]),
    ];
    for args in cases {
        let run = repo.cmd(&args);
        run.assert_no_panic();
        let out = run.stdout_str();
        if !out.trim().is_empty() {
            assert!(
                serde_json::from_str::<Value>(out.trim()).is_ok()
                    || out
                        .lines()
                        .all(|l| serde_json::from_str::<Value>(l).is_ok()),
                "--json printed non-JSON on stdout\n{run}"
            );
        }
        if run.code() != Some(0) {
            assert!(!run.stderr_str().trim().is_empty(), "{run}");
        }
    }
    let run = repo.cmd_env(
        &["--json", "snapshots"],
        &[("HOLDFAST_PASSWORD", OsStr::new("bad"))],
    );
    run.assert_code(exit::WRONG_PASSWORD);
    assert!(
        run.stdout_str().trim().is_empty() || serde_json::from_slice::<Value>(&run.stdout).is_ok()
    );
}

/// `-q` silences normal output of backup and restore (errors still go to stderr).
#[test]
fn quiet_prints_nothing_on_success() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("a"), b"a");
    let run = repo.cmd(&[OsStr::new("-q"), OsStr::new("backup"), src.as_os_str()]);
    run.assert_ok();
    assert!(run.stdout.is_empty(), "{run}");
    let t = tempdir();
    let run = repo.cmd(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.path().as_os_str(),
        OsStr::new("--quiet"),
    ]);
    run.assert_ok();
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!(fs::read(restored(t.path(), &src).join("a")).unwrap(), b"a");
}

/// Status lines of one `--json` run's stderr.
fn status_lines(run: &Run) -> Vec<Value> {
    run.stderr_str()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["message_type"] == "status")
        .collect()
}

/// With `--json`, backup, restore and check report progress as JSON status lines on
/// stderr (one a second, and a last one at the end with the final counts), while stdout
/// stays the one result document.
#[test]
fn json_progress_lines_on_stderr() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("a.bin"), &random_bytes(3_000_000, 5));
    write_file(&src.join("d/b.txt"), lorem(50_000).as_bytes());
    write_file(&src.join("d/skip.tmp"), &random_bytes(100_000, 6));

    let run = repo.cmd(&[
        OsStr::new("--json"),
        OsStr::new("backup"),
        OsStr::new("--exclude"),
        OsStr::new("*.tmp"),
        src.as_os_str(),
    ]);
    run.assert_ok();
    let doc = run.json();
    let summary = &doc["summary"];
    let lines = status_lines(&run);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no status line:\n{run}"));
    assert_eq!(last["action"], "backup", "{last}");
    assert_eq!(
        u64_field(last, "bytes_done"),
        u64_field(summary, "bytes_total"),
        "{last} vs {summary}"
    );
    // The scanner's total honours --exclude: 100% at the end, not less.
    assert_eq!(u64_field(last, "bytes_total"), 3_050_000, "{last}");
    assert_eq!(last["percent"], 100.0, "{last}");
    for l in &lines {
        for k in ["entries_done", "bytes_done", "bytes_per_s"] {
            u64_field(l, k);
        }
    }

    let t = tempdir();
    let run = repo.cmd(&[
        OsStr::new("--json"),
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.path().as_os_str(),
    ]);
    run.assert_ok();
    run.json();
    let last = status_lines(&run).pop().expect("restore status line");
    assert_eq!(last["action"], "restore", "{last}");
    assert_eq!(u64_field(&last, "bytes_done"), 3_050_000, "{last}");

    let run = repo.cmd(&["--json", "check", "--read-data"]);
    run.assert_ok();
    run.json();
    let last = status_lines(&run).pop().expect("check status line");
    assert_eq!(last["action"], "check", "{last}");

    // Without --json and without a terminal: no progress at all.
    let run = repo.cmd(&[OsStr::new("backup"), src.as_os_str()]);
    run.assert_ok();
    assert!(status_lines(&run).is_empty(), "{run}");
    assert!(!run.stderr_str().contains("bytes_done"), "{run}");
}
