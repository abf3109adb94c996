//! Excludes at backup time, includes/excludes and sub-paths at restore time, `ls`, `dump`,
//! and choosing snapshots: `latest`, ID prefixes, `--tag`, `--host`, `--path`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use holdfast_e2e::*;

/// The source tree used by these tests; returns its root.
fn make_src(work: &Path) -> PathBuf {
    let src = work.join("src");
    write_file(&src.join("keep.txt"), b"keep me\n");
    write_file(&src.join("app.log"), b"log line\n");
    write_file(&src.join("sub/debug.log"), b"debug\n");
    write_file(&src.join("sub/data.bin"), &random_bytes(100_000, 7));
    write_file(&src.join("sub/notes.tmp"), b"temporary\n");
    write_file(&src.join("cache/blob"), b"cached\n");
    write_file(&src.join("cache/more/x.txt"), b"cached too\n");
    write_file(&src.join("deep/a/b/c.txt"), b"deep text\n");
    write_file(&src.join("deep/a/other.bin"), b"deep binary\n");
    write_file(&src.join("logs.d/kept"), b"a dir whose name ends in .d\n");
    write_file(&join_bytes(&src, b"bin-\xff\xfe"), b"non-utf8 name\n");
    fs::create_dir_all(src.join("emptydir")).unwrap();
    src
}

/// Absolute path strings of `src` and all its ancestors, as `ls` shows them.
fn ancestors(src: &Path) -> BTreeSet<String> {
    src.ancestors()
        .filter(|p| *p != Path::new("/"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect()
}

fn abs(src: &Path, rel: &str) -> String {
    src.join(rel).to_str().unwrap().to_string()
}

/// Files (not directories) below `root`, relative, as strings.
fn files_below(root: &Path) -> BTreeSet<String> {
    list_tree(root)
        .into_iter()
        .filter(|r| !fs::symlink_metadata(root.join(r)).unwrap().is_dir())
        .map(|r| r.to_string_lossy().into_owned())
        .collect()
}

/// `--exclude` by name glob, `--exclude-file` (with comments and blank lines) and an
/// absolute path pattern leave exactly the matching entries out of the snapshot, and
/// `ls --json` lists exactly what was kept, including the directories leading to the
/// backed-up path.
#[test]
fn excludes_leave_out_exactly_the_matching_entries() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    let exclude_file = work.path().join("excludes");
    fs::write(&exclude_file, "# temporary files\n\n*.tmp\n   \n").unwrap();
    let cache = src.join("cache");

    let b = repo.backup(
        &[&src],
        &[
            OsStr::new("--exclude"),
            OsStr::new("*.log"),
            OsStr::new("--exclude-file"),
            exclude_file.as_os_str(),
            OsStr::new("--exclude"),
            cache.as_os_str(),
        ],
    );
    let listed: Vec<String> = repo.ls_paths(&b.id, &[] as &[&str]);
    let got: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        got.len(),
        listed.len(),
        "ls lists an entry twice: {listed:#?}"
    );

    let mut want = ancestors(&src);
    for rel in [
        "keep.txt",
        "sub",
        "sub/data.bin",
        "deep",
        "deep/a",
        "deep/a/b",
        "deep/a/b/c.txt",
        "deep/a/other.bin",
        "logs.d",
        "logs.d/kept",
        "emptydir",
    ] {
        want.insert(abs(&src, rel));
    }
    // ls shows names lossily decoded; the non-UTF-8 name is there in some form.
    let odd: Vec<&String> = got.iter().filter(|p| p.contains("/bin-")).collect();
    assert_eq!(
        odd.len(),
        1,
        "the non-UTF-8 file should be listed once: {got:#?}"
    );
    let got: BTreeSet<String> = got.into_iter().filter(|p| !p.contains("/bin-")).collect();
    assert_eq!(
        got,
        want,
        "missing: {:#?}\nunexpected: {:#?}",
        want.difference(&got).collect::<Vec<_>>(),
        got.difference(&want).collect::<Vec<_>>()
    );

    // The restore has the same content.
    let target = tempdir();
    repo.restore(&b.id, target.path(), &[] as &[&str]);
    let out = restored(target.path(), &src);
    let mut want_files: BTreeSet<String> = [
        "keep.txt",
        "sub/data.bin",
        "deep/a/b/c.txt",
        "deep/a/other.bin",
        "logs.d/kept",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want_files.insert(String::from_utf8_lossy(b"bin-\xff\xfe").into_owned());
    assert_eq!(files_below(&out), want_files);
    assert!(out.join("emptydir").is_dir());
    assert!(!out.join("cache").exists());
}

/// `ls SNAPSHOT PATH` lists that entry and everything below it, and nothing else;
/// `ls` entries carry type, size, mode and mtime.
#[test]
fn ls_with_path_lists_exactly_that_subtree() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    stamp_mtimes(&src);
    repo.backup(&[&src], &[] as &[&str]);
    let deep = src.join("deep");
    let run = repo.cmd(&[
        "ls".as_ref(),
        "--json".as_ref(),
        "latest".as_ref(),
        deep.as_os_str(),
    ]);
    run.assert_ok();
    let lines = run.json_lines();
    let got: BTreeSet<String> = lines
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = [
        "deep",
        "deep/a",
        "deep/a/b",
        "deep/a/b/c.txt",
        "deep/a/other.bin",
    ]
    .iter()
    .map(|r| abs(&src, r))
    .collect();
    assert_eq!(got, want);
    for v in &lines {
        let p = PathBuf::from(v["path"].as_str().unwrap());
        let m = fs::symlink_metadata(&p).unwrap();
        let ty = if m.is_dir() { "dir" } else { "file" };
        assert_eq!(v["type"], ty, "{v}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(v["mode"].as_u64(), Some((m.mode() & 0o7777) as u64), "{v}");
        assert_eq!(
            v["mtime_ns"].as_i64(),
            Some(m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            "{v}"
        );
        if ty == "file" {
            assert_eq!(v["size"].as_u64(), Some(m.len()), "{v}");
        }
    }

    // A path that is not in the snapshot is an error, not a panic or an empty list.
    let missing = src.join("no-such-entry");
    repo.cmd(&["ls".as_ref(), "latest".as_ref(), missing.as_os_str()])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("no-such-entry");
}

/// `restore --include` restores only matching entries (and the directories leading to
/// them); `--exclude` leaves matching entries out; a matching directory is restored with
/// everything in it.
#[test]
fn restore_include_and_exclude_select_entries() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    let b = repo.backup(&[&src], &[] as &[&str]);

    let t = tempdir();
    repo.restore(&b.id, t.path(), &["--include", "*.txt"]);
    let out = restored(t.path(), &src);
    assert_eq!(
        files_below(&out),
        ["cache/more/x.txt", "deep/a/b/c.txt", "keep.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert!(
        !out.join("emptydir").exists(),
        "--include restored an unmatched empty dir"
    );

    let t = tempdir();
    repo.restore(&b.id, t.path(), &["--exclude", "sub", "--exclude", "*.bin"]);
    let out = restored(t.path(), &src);
    let mut want: BTreeSet<String> = [
        "app.log",
        "cache/blob",
        "cache/more/x.txt",
        "deep/a/b/c.txt",
        "keep.txt",
        "logs.d/kept",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.insert(String::from_utf8_lossy(b"bin-\xff\xfe").into_owned());
    assert_eq!(files_below(&out), want);
    assert!(out.join("emptydir").is_dir());

    // A directory given as an absolute path pattern comes with all its contents.
    let t = tempdir();
    let cache = src.join("cache");
    repo.restore(
        &b.id,
        t.path(),
        &[OsStr::new("--include"), cache.as_os_str()],
    );
    let out = restored(t.path(), &src);
    assert_eq!(
        files_below(&out),
        ["cache/blob", "cache/more/x.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
}

/// `restore SNAPSHOT:/abs/sub` puts the last component of the sub-path directly under
/// the target, with its contents and metadata; a file works too; a path that is not in
/// the snapshot is an error.
#[test]
fn restore_subpath_goes_directly_under_target() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    stamp_mtimes(&src);
    let b = repo.backup(&[&src], &[] as &[&str]);

    let t = tempdir();
    let spec = format!("{}:{}", b.id, src.join("deep").display());
    repo.restore(&spec, t.path(), &[] as &[&str]);
    assert_eq!(
        list_tree(t.path()),
        vec![PathBuf::from("deep")]
            .into_iter()
            .chain(
                ["deep/a", "deep/a/b", "deep/a/b/c.txt", "deep/a/other.bin"]
                    .iter()
                    .map(PathBuf::from)
            )
            .collect::<Vec<_>>()
    );
    assert_trees_equal(&src.join("deep"), &t.path().join("deep"));

    let t = tempdir();
    let spec = format!("latest:{}", src.join("sub/data.bin").display());
    repo.restore(&spec, t.path(), &[] as &[&str]);
    assert_eq!(list_tree(t.path()), vec![PathBuf::from("data.bin")]);
    assert_files_equal(&src.join("sub/data.bin"), &t.path().join("data.bin"));

    let t = tempdir();
    let spec = format!("latest:{}", src.join("nope").display());
    repo.restore_run(&spec, t.path(), &[] as &[&str])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("nope");
}

/// `dump` writes a file's exact bytes (binary, empty, non-UTF-8 name) to stdout and
/// refuses a directory.
#[test]
fn dump_outputs_exact_bytes() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    write_file(&src.join("empty"), b"");
    repo.backup(&[&src], &[] as &[&str]);
    for rel in [
        PathBuf::from("sub/data.bin"),
        PathBuf::from("keep.txt"),
        PathBuf::from("empty"),
        PathBuf::from(OsStr::from_bytes(b"bin-\xff\xfe")),
    ] {
        let p = src.join(&rel);
        let run = repo.cmd(&["dump".as_ref(), "latest".as_ref(), p.as_os_str()]);
        run.assert_ok();
        assert!(
            run.stdout == fs::read(&p).unwrap(),
            "dump of {} differs from the file ({} vs {} bytes)",
            show(&rel),
            run.stdout.len(),
            fs::metadata(&p).unwrap().len()
        );
    }
    let dir = src.join("deep");
    repo.cmd(&["dump".as_ref(), "latest".as_ref(), dir.as_os_str()])
        .assert_code(exit::FAILURE);
    let missing = src.join("missing-file");
    repo.cmd(&["dump".as_ref(), "latest".as_ref(), missing.as_os_str()])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("missing-file");
}

/// `snapshots --tag/--host/--path` filter; `latest` honours the same filters in `dump`,
/// `ls` and `restore`; an ID, a unique prefix and `latest` name snapshots; an ambiguous
/// prefix, an unknown prefix and garbage fail with exit 1 and say why.
#[test]
fn snapshot_selection_by_filters_prefixes_and_latest() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    let other = work.path().join("other");
    write_file(&src.join("version"), b"one\n");
    write_file(&other.join("x"), b"x\n");

    let s1 = repo.backup(&[&src], &["--tag", "daily", "--host", "alpha"]);
    write_file(&src.join("version"), b"two\n");
    let s2 = repo.backup(
        &[&src],
        &["--tag", "weekly", "--tag", "extra", "--host", "beta"],
    );
    let s3 = repo.backup(&[&other], &["--host", "alpha"]);

    let ids =
        |extra: &[&str]| -> BTreeSet<String> { repo.snapshot_ids(extra).into_iter().collect() };
    let set = |v: &[&Backup]| -> BTreeSet<String> { v.iter().map(|b| b.id.clone()).collect() };
    assert_eq!(ids(&[]), set(&[&s1, &s2, &s3]));
    assert_eq!(ids(&["--tag", "daily"]), set(&[&s1]));
    assert_eq!(ids(&["--tag", "weekly"]), set(&[&s2]));
    assert_eq!(ids(&["--tag", "extra"]), set(&[&s2]));
    assert_eq!(ids(&["--tag", "nosuchtag"]), set(&[]));
    assert_eq!(ids(&["--host", "alpha"]), set(&[&s1, &s3]));
    assert_eq!(ids(&["--host", "beta"]), set(&[&s2]));
    assert_eq!(ids(&["--host", "alpha", "--tag", "daily"]), set(&[&s1]));
    assert_eq!(ids(&["--path", src.to_str().unwrap()]), set(&[&s1, &s2]));
    assert_eq!(ids(&["--path", other.to_str().unwrap()]), set(&[&s3]));

    // Snapshot fields.
    for s in repo.snapshots(&["--host", "beta"]) {
        assert_eq!(s["host"], "beta");
        assert_eq!(s["paths"], serde_json::json!([src.to_str().unwrap()]));
        let tags: BTreeSet<&str> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tags, ["extra", "weekly"].into_iter().collect());
        assert!(is_hex_id(s["tree"].as_str().unwrap()), "{s}");
        assert!(s["time"].as_str().unwrap().len() >= 20, "{s}");
    }

    // latest, with and without filters; IDs and unique prefixes.
    let version = src.join("version");
    let dump = |spec: &str, extra: &[&str]| -> Vec<u8> {
        let mut a: Vec<&OsStr> = vec![OsStr::new("dump"), OsStr::new(spec), version.as_os_str()];
        a.extend(extra.iter().map(OsStr::new));
        let run = repo.cmd(&a);
        run.assert_ok();
        run.stdout.clone()
    };
    let src_s = src.to_str().unwrap();
    assert_eq!(dump("latest", &["--path", src_s]), b"two\n");
    assert_eq!(
        dump("latest", &["--host", "alpha", "--path", src_s]),
        b"one\n"
    );
    assert_eq!(dump("latest", &["--tag", "daily"]), b"one\n");
    assert_eq!(dump(&s1.id, &[]), b"one\n");
    assert_eq!(dump(&s1.id[..10], &[]), b"one\n");
    assert_eq!(dump(&s2.id[..12], &[]), b"two\n");
    assert_eq!(dump(&s2.id.to_uppercase()[..12], &[]), b"two\n");

    // Plain `latest` is the newest snapshot: s3, which holds `other`.
    let latest = repo.ls_paths("latest", &[] as &[&str]);
    assert!(
        latest.contains(&other.join("x").to_str().unwrap().to_string()),
        "latest should be the third snapshot: {latest:#?}"
    );
    assert!(
        !latest.iter().any(|p| p.ends_with("/version")),
        "{latest:#?}"
    );
    let t = tempdir();
    repo.restore("latest", t.path(), &["--host", "beta"]);
    assert_eq!(fs::read(restored(t.path(), &version)).unwrap(), b"two\n");
    // No snapshot matches: a clean failure.
    let t = tempdir();
    repo.restore_run("latest", t.path(), &["--host", "nosuchhost"])
        .assert_code(exit::FAILURE);

    // Make snapshots until two IDs share their first hex digit (at most 17 in all).
    let mut all: Vec<String> = vec![s1.id.clone(), s2.id.clone(), s3.id.clone()];
    let shared = loop {
        let mut firsts = BTreeSet::new();
        if let Some(c) = all.iter().map(|id| &id[..1]).find(|c| !firsts.insert(*c)) {
            break c.to_string();
        }
        assert!(all.len() <= 16, "17 IDs cannot all start differently");
        write_file(&src.join("counter"), all.len().to_string().as_bytes());
        all.push(repo.backup(&[&src], &[] as &[&str]).id);
    };
    let ambiguous = repo.cmd(&["ls", &shared]);
    ambiguous
        .assert_code(exit::FAILURE)
        .assert_stderr_contains(&shared)
        .assert_stderr_contains_any(&[
            "ambiguous",
            "more than one",
            "several",
            "multiple",
            "snapshot ids start with",
            "give more",
        ]);

    let unknown = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|p| !all.iter().any(|id| id.starts_with(p.as_str())))
        .unwrap();
    repo.cmd(&["ls", &unknown])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains(&unknown);
    repo.cmd(&["ls", "not-an-id!"])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("not-an-id!");
    let absent = format!("{unknown}{}", "0".repeat(62));
    repo.cmd(&["ls", &absent])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains(&absent[..8]);
    let t = tempdir();
    repo.restore_run(&shared, t.path(), &[] as &[&str])
        .assert_code(exit::FAILURE);
    assert!(
        list_tree(t.path()).is_empty(),
        "a failed restore wrote files"
    );
}

/// `--exclude-caches` leaves out the contents of directories tagged with a standard
/// CACHEDIR.TAG (keeping the directory and the tag), and only those: a tag without the
/// signature marks nothing; without the flag everything is kept.
#[test]
fn exclude_caches_honours_only_signed_cache_tags() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write_file(&src.join("cache/big.bin"), &random_bytes(50_000, 3));
    write_file(&src.join("cache/sub/more"), b"more cache\n");
    write_file(&src.join("fake/CACHEDIR.TAG"), b"not a signature\n");
    write_file(&src.join("fake/keep.txt"), b"keep\n");
    write_file(&src.join("top.txt"), b"top\n");

    let restored_files = |extra: &[&str]| {
        repo.backup(&[&src], extra);
        let target = tempdir();
        repo.restore("latest", target.path(), &[] as &[&str]);
        files_below(&restored(target.path(), &src))
    };
    let with_flag = restored_files(&["--exclude-caches"]);
    let want: BTreeSet<String> = [
        "cache/CACHEDIR.TAG",
        "fake/CACHEDIR.TAG",
        "fake/keep.txt",
        "top.txt",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(with_flag, want);
    let without = restored_files(&[]);
    assert!(
        without.contains("cache/big.bin") && without.contains("cache/sub/more"),
        "{without:?}"
    );
}
