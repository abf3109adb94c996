//! Exit codes and error messages: wrong password (12), no repository (10), partial
//! backups and restores (3), usage errors (2), refused operations (1). Never a panic (101).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use holdfast_e2e::*;

fn small_src(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("sub/b.bin"), &random_bytes(50_000, 1));
    src
}

/// Every file of the repository with its bytes.
fn snapshot_of_files(repo: &Repo) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for kind in ["config", "keys", "index", "snapshots", "data"] {
        for p in repo.files(kind) {
            m.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    m
}

/// A wrong password exits 12 and says so, from every source of passwords and for every
/// command that opens the repository; the right password from a file (with a trailing
/// newline) or a command works.
#[test]
fn wrong_password_exits_12_and_says_password() {
    let repo = Repo::new();
    let work = tempdir();
    let src = small_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let bad = [("HOLDFAST_PASSWORD", OsStr::new("not the password"))];
    let target = work.path().join("restore");
    let src_a = src.join("a.txt");
    let commands: Vec<Vec<&OsStr>> = vec![
        vec!["snapshots".as_ref()],
        vec!["ls".as_ref(), "latest".as_ref()],
        vec![
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ],
        vec!["dump".as_ref(), "latest".as_ref(), src_a.as_os_str()],
        vec!["backup".as_ref(), src.as_os_str()],
        vec!["stats".as_ref()],
        vec!["key".as_ref(), "list".as_ref()],
        vec!["cat".as_ref(), "config".as_ref()],
    ];
    for args in &commands {
        repo.cmd_env(args, &bad)
            .assert_code(exit::WRONG_PASSWORD)
            .assert_stderr_contains("password");
    }
    assert!(
        !target.exists(),
        "restore with a wrong password created the target"
    );
    assert_eq!(
        repo.snapshots(&[] as &[&str]).len(),
        1,
        "a backup with a wrong password wrote a snapshot"
    );

    // An empty password is wrong too.
    repo.cmd_env(&["snapshots"], &[("HOLDFAST_PASSWORD", OsStr::new(""))])
        .assert_code(exit::WRONG_PASSWORD);

    // Password file and password command.
    let pw_file = work.path().join("pw");
    fs::write(&pw_file, "wrong\n").unwrap();
    let mut c = repo.command(&[
        OsStr::new("--password-file"),
        pw_file.as_os_str(),
        OsStr::new("snapshots"),
    ]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT)
        .assert_code(exit::WRONG_PASSWORD)
        .assert_stderr_contains("password");
    fs::write(&pw_file, format!("{}\n", repo.password)).unwrap();
    let mut c = repo.command(&[
        OsStr::new("--password-file"),
        pw_file.as_os_str(),
        OsStr::new("snapshots"),
    ]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT).assert_ok();
    let mut c = repo.command(&["snapshots", "--password-command", "echo wrong"]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT).assert_code(exit::WRONG_PASSWORD);
    let mut c = repo.command(&["snapshots"]);
    c.env_remove("HOLDFAST_PASSWORD")
        .env("HOLDFAST_PASSWORD_FILE", &pw_file);
    run_command(c, COMMAND_TIMEOUT).assert_ok();
    let mut c = repo.command(&[
        "snapshots",
        "--password-command",
        &format!("cat '{}'", pw_file.display()),
    ]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT).assert_ok();

    // A missing password file and a failing command are errors, not prompts or panics.
    let mut c = repo.command(&[
        OsStr::new("snapshots"),
        OsStr::new("--password-file"),
        work.path().join("nope").as_os_str(),
    ]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT)
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("nope");
    let mut c = repo.command(&["snapshots", "--password-command", "exit 3"]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT).assert_code(exit::FAILURE);
}

/// With no password from anywhere and no terminal, commands fail at once saying a
/// password is needed (they must not hang waiting for input).
#[test]
fn no_password_fails_without_prompting() {
    let repo = Repo::new();
    let mut c = repo.command(&["snapshots"]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, std::time::Duration::from_secs(60))
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("password");
    let other = Repo::uninit();
    let mut c = other.command(&["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, std::time::Duration::from_secs(60))
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("password");
    assert!(
        other.files("config").is_empty() && other.files("keys").is_empty(),
        "init without a password created a repository"
    );
}

/// Every command on a location without a repository (missing directory, empty directory)
/// exits 10 and says there is no repository; nothing is created there.
#[test]
fn no_repository_exits_10() {
    let work = tempdir();
    let src = small_src(work.path());
    let target = work.path().join("t");
    let src_a = src.join("a.txt");
    let repo = Repo::uninit();
    let empty = Repo::uninit();
    fs::create_dir(&empty.path).unwrap();
    for r in [&repo, &empty] {
        let commands: Vec<Vec<&OsStr>> = vec![
            vec!["snapshots".as_ref()],
            vec!["backup".as_ref(), src.as_os_str()],
            vec!["ls".as_ref(), "latest".as_ref()],
            vec![
                "restore".as_ref(),
                "latest".as_ref(),
                "--target".as_ref(),
                target.as_os_str(),
            ],
            vec!["dump".as_ref(), "latest".as_ref(), src_a.as_os_str()],
            vec!["stats".as_ref()],
            vec!["key".as_ref(), "list".as_ref()],
            vec!["cat".as_ref(), "config".as_ref()],
        ];
        for args in &commands {
            r.cmd(args)
                .assert_code(exit::NO_REPOSITORY)
                .assert_stderr_contains("repositor");
        }
    }
    assert!(
        !repo.path.exists(),
        "a command created the repository directory"
    );
    assert!(
        fs::read_dir(&empty.path).unwrap().next().is_none(),
        "a command wrote into an empty directory that holds no repository"
    );
    assert!(!target.exists());

    // No repository given at all is an error too (not a panic).
    let mut c = repo.command(&["snapshots"]);
    c.env_remove("HOLDFAST_REPOSITORY");
    run_command(c, COMMAND_TIMEOUT)
        .assert_failed()
        .assert_stderr_contains("repo");
}

/// `init` on an existing repository fails (same or different password, also with
/// `--repo`) and leaves every file of the repository as it was; the repository still
/// works.
#[test]
fn init_twice_fails_and_leaves_repository_intact() {
    let repo = Repo::new();
    let work = tempdir();
    let src = small_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let before = snapshot_of_files(&repo);

    repo.init(&[] as &[&str]).assert_failed();
    repo.cmd_env(
        &["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"],
        &[("HOLDFAST_PASSWORD", OsStr::new("another password"))],
    )
    .assert_failed()
    .assert_stderr_contains_any(&["exists", "already"]);
    let mut c = repo.command(&[
        OsStr::new("init"),
        OsStr::new("-r"),
        repo.path.as_os_str(),
        OsStr::new("--kdf-memory-kib"),
        OsStr::new("8"),
    ]);
    c.env_remove("HOLDFAST_REPOSITORY");
    run_command(c, COMMAND_TIMEOUT).assert_failed();

    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        snapshot_of_files(&repo).keys().collect::<Vec<_>>(),
        "init on an existing repository added or removed files"
    );
    assert!(before == snapshot_of_files(&repo), "init changed a file");
    repo.cmd_env(
        &["snapshots"],
        &[("HOLDFAST_PASSWORD", OsStr::new("another password"))],
    )
    .assert_code(exit::WRONG_PASSWORD);
    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
}

/// Backing up an existing and a missing path: the snapshot is written with what could be
/// read, the exit code is 3, and stderr names the missing path.
#[test]
fn missing_source_path_gives_exit_3_and_a_snapshot() {
    let repo = Repo::new();
    let work = tempdir();
    let src = small_src(work.path());
    let missing = work.path().join("does-not-exist-42");
    let run = repo.backup_run(&[&src, &missing], &[] as &[&str]);
    run.assert_code(exit::PARTIAL)
        .assert_stderr_contains("does-not-exist-42");
    let b = Repo::parse_backup(&run);
    assert!(b.stat("errors") >= 1, "{}", b.json);
    let warnings = b.json["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("does-not-exist-42")),
        "the JSON warnings should name the missing path: {}",
        b.json
    );

    let snaps = repo.snapshot_ids(&[] as &[&str]);
    assert_eq!(
        snaps,
        vec![b.id.clone()],
        "the partial snapshot must be saved"
    );
    let t = tempdir();
    repo.restore(&b.id, t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
    assert!(!restored(t.path(), &missing).exists());
}

/// A backup whose only path is missing fails (or is partial) and names the path; it
/// never claims success.
#[test]
fn only_missing_source_path_is_not_success() {
    let repo = Repo::new();
    let work = tempdir();
    let missing = work.path().join("gone-away");
    let run = repo.backup_run(&[&missing], &[] as &[&str]);
    run.assert_failed().assert_stderr_contains("gone-away");
    assert!(
        [exit::FAILURE, exit::PARTIAL].contains(&run.code().unwrap()),
        "{run}"
    );
}

/// Invalid arguments and invalid patterns are clean errors.
#[test]
fn invalid_usage_is_a_clean_error() {
    let repo = Repo::new();
    let work = tempdir();
    let src = small_src(work.path());
    repo.cmd(&["no-such-command"])
        .assert_failed()
        .assert_code(exit::USAGE);
    repo.cmd(&["restore", "latest"])
        .assert_failed()
        .assert_code(exit::USAGE);
    repo.backup_run(&[&src], &["--exclude", "a[b"])
        .assert_failed()
        .assert_code(exit::USAGE)
        .assert_stderr_contains("a[b");
    repo.init(&["--pack-size-mib", "0"])
        .assert_failed()
        .assert_code(exit::USAGE);
    repo.cmd(&["cat", "nonsense"])
        .assert_failed()
        .assert_code(exit::USAGE);
    repo.cmd(&["cat", "snapshot"])
        .assert_failed()
        .assert_code(exit::USAGE);
    repo.cmd(&["cat", "tree", "xyz"]).assert_code(exit::FAILURE);
    let t = tempdir();
    repo.backup(&[&src], &[] as &[&str]);
    repo.restore_run("latest:relative/path", t.path(), &[] as &[&str])
        .assert_failed()
        .assert_code(exit::USAGE)
        .assert_stderr_contains("absolute");
    let exclude_file = work.path().join("no-such-exclude-file");
    repo.backup_run(
        &[&src],
        &[OsStr::new("--exclude-file"), exclude_file.as_os_str()],
    )
    .assert_failed()
    .assert_stderr_contains("no-such-exclude-file");
    assert_eq!(repo.snapshots(&[] as &[&str]).len(), 1);
}

/// A reader that goes away early (`holdfast ls | head -1`) must not make holdfast panic:
/// a write to a closed pipe ends the command with an error (or SIGPIPE), not exit 101.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    for i in 0..300 {
        write_file(&src.join(format!("dir{}/file-{i:04}", i % 7)), b"x");
    }
    write_file(&src.join("big"), &random_bytes(3_000_000, 9));
    let b = repo.backup(&[&src], &[] as &[&str]);
    let index = file_id(&repo.files("index")[0]);
    let pack = file_id(&repo.packs()[0]);
    let key = file_id(&repo.files("keys")[0]);
    let tree = repo.snapshots(&[] as &[&str])[0]["tree"]
        .as_str()
        .unwrap()
        .to_string();
    let big = src.join("big");
    let big = big.to_str().unwrap();
    let target = work.path().join("target");
    let target = target.to_str().unwrap();
    let src_s = src.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup", src_s],
        vec!["backup", "--json", src_s],
        vec!["restore", "latest", "--target", target],
        vec!["ls", "latest"],
        vec!["ls", "--json", "latest"],
        vec!["ls", "--long", "latest"],
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["dump", "latest", big],
        vec!["cat", "config"],
        vec!["cat", "index", &index],
        vec!["cat", "pack", &pack],
        vec!["cat", "key", &key],
        vec!["cat", "tree", &tree],
        vec!["cat", "snapshot", &b.id],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["key", "list"],
        vec!["key", "list", "--json"],
    ];
    let mut panicked = Vec::new();
    for args in &commands {
        let run = run_command_with(repo.command(args), COMMAND_TIMEOUT, StdoutTo::Closed);
        if run.code() == Some(exit::PANIC) || run.stderr_str().contains("panicked") {
            panicked.push(format!("{run}"));
        }
    }
    assert!(
        panicked.is_empty(),
        "{} commands panicked writing to a closed pipe:\n\n{}",
        panicked.len(),
        panicked.join("\n\n")
    );
}

/// Values that are not understood are usage errors (exit 2) found before the repository is
/// opened: against a location with no repository they still exit 2 (not 10), name the
/// option, and create nothing there (not even for `init`). With `--json` the message is a
/// JSON document on stderr.
#[test]
fn invalid_values_are_usage_errors_before_the_repository_is_opened() {
    let repo = Repo::uninit();
    let work = tempdir();
    let target = work.path().join("t");
    let t = target.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["prune", "--safety-margin", ""], "--safety-margin"),
        (vec!["prune", "--safety-margin", "30m"], "--safety-margin"),
        (vec!["prune", "--max-unused", "101"], "--max-unused"),
        (vec!["prune", "--max-unused", "NaN"], "--max-unused"),
        (vec!["forget", "--keep-within", "2y5m"], "--keep-within"),
        (vec!["forget", "--keep-daily", "lots"], "--keep-daily"),
        (vec!["forget", "--keep-tag", ","], "--keep-tag"),
        (
            vec!["forget", "--keep-last", "1", "--group-by", "color"],
            "--group-by",
        ),
        (
            vec!["check", "--read-data-subset", "1/0"],
            "--read-data-subset",
        ),
        (
            vec!["check", "--read-data-subset", "0%"],
            "--read-data-subset",
        ),
        (vec!["cat", "nonsense"], "nonsense"),
        (vec!["cat", "index"], "<ID>"),
        (vec!["restore", "latest:etc", "--target", t], "absolute"),
        (
            vec!["restore", "latest", "--target", t, "-i", "a[b"],
            "--include",
        ),
        (
            vec!["backup", "/nonexistent", "--exclude", "x[y"],
            "--exclude",
        ),
        (vec!["init", "--pack-size-mib", "0"], "--pack-size-mib"),
        (vec!["init", "--pack-size-mib", "2000"], "--pack-size-mib"),
        (vec!["init", "--kdf-memory-kib", "4"], "--kdf-memory-kib"),
        (vec!["init", "--kdf-iterations", "0"], "--kdf-iterations"),
    ];
    for (args, names) in &cases {
        repo.cmd(args)
            .assert_code(exit::USAGE)
            .assert_stderr_contains(names);
        let mut json = args.clone();
        json.push("--json");
        let run = repo.cmd(&json);
        run.assert_code(exit::USAGE);
        let err: Value = serde_json::from_str(run.stderr_str().trim())
            .unwrap_or_else(|e| panic!("stderr is not one JSON document: {e}\n{run}"));
        assert_eq!(err["exit_code"], exit::USAGE, "{run}");
        assert!(
            err["error"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains(&names.to_lowercase())),
            "the JSON error does not name {names:?}\n{run}"
        );
    }
    assert!(
        !repo.path.exists(),
        "a refused command created the repository"
    );
    assert!(!target.exists(), "a refused restore created its target");
}

/// A restore that could not restore everything exits 3 (as a backup that could not read
/// everything does) and names each entry on stderr and in the JSON; the rest is restored.
/// Provoked with an extended attribute in the `trusted.` namespace, which only root may
/// set: the backup runs as root, the restore as the unprivileged user `nobody`.
#[test]
fn restore_with_unrestorable_entries_exits_3_and_names_them() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot set a trusted.* attribute to provoke the failure; skipped");
        return;
    }
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write_file(&src.join("plain.txt"), b"restores fine\n");
    let special = src.join("special.txt");
    write_file(&special, b"restores, but not its trusted attribute\n");
    if let Err(e) = xattr::set(&special, "trusted.holdfast-e2e", b"1") {
        eprintln!("this filesystem refuses trusted.* attributes ({e}); skipped");
        return;
    }
    repo.backup(&[&src], &[] as &[&str]);
    // As root the restore is complete: exit 0, attribute and all.
    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
    assert_eq!(
        xattr::get(restored(t.path(), &special), "trusted.holdfast-e2e").unwrap(),
        Some(b"1".to_vec())
    );

    // Everything the unprivileged restore reads or writes belongs to nobody.
    const NOBODY: u32 = 65534;
    fn chown_tree(p: &Path) {
        std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        if fs::symlink_metadata(p).unwrap().is_dir() {
            for e in fs::read_dir(p).unwrap() {
                chown_tree(&e.unwrap().path());
            }
        }
    }
    let target = repo.scratch().join("target");
    let json_target = repo.scratch().join("json-target");
    chown_tree(repo.scratch());
    let restore_as_nobody = |target: &Path, json: bool| {
        let mut args: Vec<&OsStr> = vec![
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ];
        if json {
            args.push("--json".as_ref());
        }
        let mut c = repo.command(&args);
        c.uid(NOBODY).gid(NOBODY);
        run_command(c, COMMAND_TIMEOUT)
    };

    let run = restore_as_nobody(&target, false);
    run.assert_code(exit::PARTIAL)
        .assert_stderr_contains("special.txt")
        .assert_stderr_contains("trusted.holdfast-e2e")
        .assert_stderr_contains("could not be restored");
    assert!(
        !run.stderr_str().contains("plain.txt"),
        "stderr names an entry that was restored\n{run}"
    );
    assert_eq!(
        fs::read(restored(&target, &src.join("plain.txt"))).unwrap(),
        b"restores fine\n"
    );
    assert_eq!(
        fs::read(restored(&target, &special)).unwrap(),
        b"restores, but not its trusted attribute\n"
    );

    let run = restore_as_nobody(&json_target, true);
    run.assert_code(exit::PARTIAL);
    let v = run.json();
    let warnings = v["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap_or("").contains("special.txt"),
        "the JSON should name the one entry that was not restored completely: {v}\n{run}"
    );
}

/// `--help` (and `-h`) lists the exit codes, usage errors (2) and incomplete restores (3)
/// among them, and the duration grammar.
#[test]
fn help_documents_the_exit_codes() {
    for flag in ["--help", "-h"] {
        let mut cmd = std::process::Command::new(holdfast_bin());
        cmd.arg(flag);
        let run = run_command(cmd, COMMAND_TIMEOUT);
        run.assert_ok();
        let out = run.stdout_str();
        let codes = out
            .split_once("Exit codes:")
            .unwrap_or_else(|| panic!("holdfast {flag} lists no exit codes:\n{out}"))
            .1;
        for (code, what) in [
            ("0", "success"),
            ("1", "failure"),
            ("2", "usage error"),
            ("3", "backup"),
            ("10", "no repository"),
            ("12", "wrong password"),
        ] {
            assert!(
                codes
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} ")) && l.contains(what)),
                "holdfast {flag}: exit code {code} ({what}) is not documented:\n{codes}"
            );
        }
        assert!(
            codes.contains("restore: restored, but some entries could not be restored"),
            "holdfast {flag}: exit code 3 of restore is not documented:\n{codes}"
        );
        assert!(
            out.contains("min") && out.contains("mo (months)"),
            "holdfast {flag} does not explain durations:\n{out}"
        );
    }
}

/// `--help` documents the environment variables that tune S3 repositories (they are not
/// options, so only this list tells a user they exist).
#[test]
fn help_lists_the_s3_environment_variables() {
    let mut cmd = std::process::Command::new(holdfast_bin());
    cmd.arg("--help");
    let run = run_command(cmd, COMMAND_TIMEOUT);
    run.assert_ok();
    let out = run.stdout_str();
    for var in [
        "HOLDFAST_S3_CONNECTIONS",
        "HOLDFAST_S3_TIMEOUT",
        "HOLDFAST_S3_READ_AHEAD_MIB",
        "HOLDFAST_CACHE_DIR",
    ] {
        assert!(out.contains(var), "--help does not mention {var}:\n{out}");
    }
}
