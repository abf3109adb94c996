//! `holdfast copy` (issue 14): snapshots from one repository into another, driving the real
//! binary. The `rgw::` test needs the Ceph RGW test server: a plain `cargo nextest run`
//! leaves it out (`.config/nextest.toml`); `scripts/s3-test-servers.sh start DIR` and
//! `source DIR/env.sh` select it. Selected without the server, it fails.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;

/// Runs `-r TO copy --from-repo FROM --json EXTRA...` with `target`'s environment and the
/// source password (the same as the target's) in HOLDFAST_FROM_PASSWORD.
fn copy(target: &Repo, to: &Path, from: &Path, extra: &[&str]) -> Run {
    copy_at(
        target,
        &to.display().to_string(),
        &from.display().to_string(),
        extra,
    )
}

/// [`copy`] with locations given as strings (`s3:...`).
fn copy_at(target: &Repo, to: &str, from: &str, extra: &[&str]) -> Run {
    let mut a = vec!["-r", to, "copy", "--from-repo", from, "--json"];
    a.extend(extra);
    target.cmd_env(
        &a,
        &[("HOLDFAST_FROM_PASSWORD", OsStr::new(&target.password))],
    )
}

/// A counter of a copy's JSON report.
fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

/// (source ID, target ID) of each copied snapshot in a copy's report.
fn pairs(v: &Value) -> Vec<(String, String)> {
    v["copied"]
        .as_array()
        .unwrap_or_else(|| panic!("no copied list in {v}"))
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_string(),
                c["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Restores snapshot `id` of the repository at `loc` (run through `via`) into a new
/// directory under `scratch`; returns the directory.
fn restore_at(via: &Repo, loc: &str, id: &str, scratch: &Path, name: &str) -> PathBuf {
    let target = scratch.join(name);
    via.cmd(&[
        "-r",
        loc,
        "restore",
        id,
        "--target",
        &target.display().to_string(),
    ])
    .assert_ok();
    target
}

/// Three states of `data`, one snapshot of each in `src`: a rich tree (hard link, symlinks,
/// empty file, xattrs, …), then a changed file and a new 12 MiB file, then a removed file
/// and the large one grown. Returns the snapshot IDs, oldest first.
fn three_snapshots(src: &Repo, data: &Path) -> Vec<String> {
    build_rich_tree(
        data,
        TreeOptions {
            big: false,
            special: is_root(),
        },
        None,
    );
    let mut ids = vec![src.backup(&[data], &["--tag", "one"]).id];
    write_file(&data.join("small.txt"), b"changed between snapshots\n");
    write_random(&data.join("large.bin"), 12 * MIB, 7);
    ids.push(src.backup(&[data], &["--tag", "two"]).id);
    std::fs::remove_file(data.join("one-byte")).unwrap();
    write_random(&data.join("large.bin"), 14 * MIB, 7);
    ids.push(src.backup(&[data], &["--tag", "three"]).id);
    ids
}

/// Asserts that every copied snapshot restores from `to_loc` exactly as its source from
/// `from_loc` (content, metadata, hard links), and that the copy has the source's time,
/// host, paths and tags.
fn assert_copies_restore_identical(
    via: &Repo,
    from_loc: &str,
    to_loc: &str,
    copied: &[(String, String)],
) {
    let scratch = tempdir();
    let snaps = |loc: &str| -> Vec<Value> {
        via.cmd(&["-r", loc, "snapshots", "--json"])
            .assert_ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let (from, to) = (snaps(from_loc), snaps(to_loc));
    for (i, (s, t)) in copied.iter().enumerate() {
        let a = restore_at(via, from_loc, s, scratch.path(), &format!("s{i}"));
        let b = restore_at(via, to_loc, t, scratch.path(), &format!("t{i}"));
        let find = |l: &[Value], id: &str| l.iter().find(|x| x["id"] == id).cloned().unwrap();
        let (x, y) = (find(&from, s), find(&to, t));
        // The recorded paths (the restore targets' own roots are not in the snapshot).
        for p in x["paths"].as_array().unwrap() {
            let p = Path::new(p.as_str().unwrap());
            assert_trees_equal(&restored(&a, p), &restored(&b, p));
        }
        for key in [
            "time", "time_ns", "host", "user", "paths", "tags", "summary",
        ] {
            assert_eq!(x[key], y[key], "{key} of the copy of {s}: {x} vs {y}");
        }
    }
}

/// Local → local between repositories with different keys (a plain `init`: another
/// chunker key and blob-ID key): three snapshots of changing data restore identical; the
/// copies keep time, host, paths and tags; a second copy sends nothing and adds no file to
/// the target's data/ and index/.
#[test]
fn copy_between_different_keys_restores_identical_and_a_second_copy_sends_nothing() {
    let src = Repo::new();
    let work = tempdir();
    let data = work.path().join("data");
    let ids = three_snapshots(&src, &data);
    let dst = Repo::new();
    let first = copy(&dst, &dst.path, &src.path, &[]).assert_ok().json();
    assert_eq!(n(&first, "snapshots_copied"), 3, "{first}");
    assert_eq!(first["shared_keys"], false, "{first}");
    assert!(n(&first, "bytes_read") > 14 * MIB, "{first}");
    assert!(n(&first, "bytes_written") > 14 * MIB, "{first}");
    let copied = pairs(&first);
    assert_eq!(
        copied.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        ids,
        "oldest first"
    );
    let (s, d) = (
        src.path.display().to_string(),
        dst.path.display().to_string(),
    );
    assert_copies_restore_identical(&dst, &s, &d, &copied);
    // The newest copy also equals the live data.
    let scratch = tempdir();
    let out = restore_at(&dst, &d, &copied[2].1, scratch.path(), "live");
    assert_trees_equal(&data, &restored(&out, &data));

    let before = (dst.files("data"), dst.files("index"));
    let second = copy(&dst, &dst.path, &src.path, &[]).assert_ok().json();
    for (key, want) in [
        ("snapshots_copied", 0),
        ("snapshots_skipped", 3),
        ("blobs_copied", 0),
        ("bytes_read", 0),
        ("bytes_written", 0),
    ] {
        assert_eq!(n(&second, key), want, "{key}: {second}");
    }
    assert_eq!(before, (dst.files("data"), dst.files("index")));
    // Human output says so too.
    let text = dst
        .cmd_env(
            &["copy", "--from-repo", &s],
            &[("HOLDFAST_FROM_PASSWORD", OsStr::new(&dst.password))],
        )
        .assert_ok()
        .stdout_str();
    assert!(
        text.contains("0 snapshots copied, 3 already in the target"),
        "{text}"
    );
}

/// Host, tag and path filters and explicit snapshot IDs select what is copied; --dry-run
/// lists it and writes nothing.
#[test]
fn filters_ids_and_dry_run() {
    let src = Repo::new();
    let work = tempdir();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write_file(&a.join("f"), b"a");
    write_file(&b.join("g"), b"b");
    let a1 = src.backup(&[&a], &["--host", "ha", "--tag", "x"]).id;
    let a2 = src.backup(&[&b], &["--host", "ha"]).id;
    let b1 = src.backup(&[&b], &["--host", "hb", "--tag", "x"]).id;

    let dst = Repo::new();
    let dry = copy(&dst, &dst.path, &src.path, &["--dry-run", "--host", "ha"])
        .assert_ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    let listed: Vec<String> = pairs(&dry).into_iter().map(|(s, _)| s).collect();
    assert_eq!(listed, vec![a1.clone(), a2.clone()], "{dry}");
    assert!(dst.files("snapshots").is_empty() && dst.files("sessions").is_empty());

    let r = copy(&dst, &dst.path, &src.path, &["--host", "ha", "--tag", "x"])
        .assert_ok()
        .json();
    assert_eq!(
        pairs(&r).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        vec![a1.clone()]
    );
    let r = copy(
        &dst,
        &dst.path,
        &src.path,
        &["--path", &b.display().to_string()],
    )
    .assert_ok()
    .json();
    assert_eq!(
        pairs(&r).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        vec![a2.clone(), b1.clone()]
    );
    let dst2 = Repo::new();
    let r = copy(&dst2, &dst2.path, &src.path, &[&b1[..8], &a1])
        .assert_ok()
        .json();
    assert_eq!(
        pairs(&r).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        vec![a1, b1]
    );
    copy(&dst2, &dst2.path, &src.path, &["nosuchid"])
        .assert_failed()
        .assert_stderr_contains("nosuchid");
}

/// A wrong source password: a clear error naming the source, exit code 12, nothing
/// written; no repository at --from-repo: exit code 10.
#[test]
fn wrong_source_password_and_missing_source() {
    let src = Repo::new();
    let dst = Repo::new();
    let run = dst.cmd_env(
        &["copy", "--from-repo", &src.path.display().to_string()],
        &[("HOLDFAST_FROM_PASSWORD", OsStr::new("not the password"))],
    );
    run.assert_code(exit::WRONG_PASSWORD)
        .assert_stderr_contains("source repository")
        .assert_stderr_contains("wrong password");
    assert!(dst.files("sessions").is_empty());
    let nowhere = src.scratch().join("nowhere");
    copy(&dst, &dst.path, &nowhere, &[])
        .assert_code(exit::NO_REPOSITORY)
        .assert_stderr_contains("source repository");
}

/// A pack missing in the source fails the snapshots that need it, naming snapshot, path
/// and blob, with exit code 3; the other snapshots are copied.
#[test]
fn missing_source_pack_fails_only_its_snapshot() {
    let src = Repo::new();
    let work = tempdir();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write_random(&a.join("doomed.bin"), 300_000, 11);
    write_random(&b.join("fine.bin"), 300_000, 12);
    let before = src.packs_of_type("data");
    let lost = src.backup(&[&a], &[] as &[&str]).id;
    let gone: Vec<PathBuf> = src
        .packs_of_type("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!gone.is_empty());
    let kept = src.backup(&[&b], &[] as &[&str]).id;
    for p in &gone {
        std::fs::remove_file(p).unwrap();
    }
    let dst = Repo::new();
    let run = copy(&dst, &dst.path, &src.path, &[]);
    run.assert_code(exit::PARTIAL)
        .assert_stderr_contains(&lost[..8])
        .assert_stderr_contains("doomed.bin")
        .assert_stderr_contains("blob ");
    let r = run.json();
    assert_eq!(
        (n(&r, "snapshots_copied"), n(&r, "snapshots_failed")),
        (1, 1),
        "{r}"
    );
    assert_eq!(pairs(&r)[0].0, kept);
    let msg = r["errors"][0].as_str().unwrap();
    assert!(
        msg.contains(&lost[..8]) && msg.contains("doomed.bin"),
        "{msg}"
    );
    assert_eq!(dst.snapshot_ids::<&str>(&[]).len(), 1);
}

/// `init --copy-chunker-params --from-repo SRC`: the target has the source's chunk sizes,
/// chunker key and blob-ID key. Copies need no ID translation (`shared_keys`); a backup of
/// the same data made directly into the target adds no data; and a copy into a target that
/// already holds the data reads only the trees.
#[test]
fn copy_chunker_params_shares_ids_and_dedups_with_own_backups() {
    let src = Repo::new();
    let work = tempdir();
    let data = work.path().join("data");
    write_random(&data.join("big.bin"), 20 * MIB, 3);
    write_file(&data.join("note.txt"), b"note");
    src.backup(&[&data], &[] as &[&str]);
    let from = src.path.display().to_string();

    let dst = Repo::uninit();
    dst.cmd_env(
        &[
            "init",
            "--kdf-memory-kib",
            "8",
            "--kdf-iterations",
            "1",
            "--copy-chunker-params",
            "--from-repo",
            &from,
        ],
        &[("HOLDFAST_FROM_PASSWORD", OsStr::new(&dst.password))],
    )
    .assert_ok();
    let r = copy(&dst, &dst.path, &src.path, &[]).assert_ok().json();
    assert_eq!(r["shared_keys"], true, "{r}");
    assert_eq!(n(&r, "snapshots_copied"), 1);
    let direct = dst.backup(&[&data], &["--host", "elsewhere", "--force"]);
    assert_eq!(direct.stat("data_blobs_added"), 0, "{}", direct.json);
    assert!(
        direct.stat("bytes_added_raw") < 64 * 1024,
        "{}",
        direct.json
    );

    // The other way round: the target backs up first, then copies; data blobs are skipped
    // by ID without being read.
    let src2 = Repo::new();
    src2.backup(&[&data], &[] as &[&str]);
    let dst2 = Repo::uninit();
    dst2.cmd_env(
        &[
            "init",
            "--kdf-memory-kib",
            "8",
            "--kdf-iterations",
            "1",
            "--copy-chunker-params",
            "--from-repo",
            &src2.path.display().to_string(),
        ],
        &[("HOLDFAST_FROM_PASSWORD", OsStr::new(&dst2.password))],
    )
    .assert_ok();
    dst2.backup(&[&data], &["--host", "elsewhere"]);
    let r = copy(&dst2, &dst2.path, &src2.path, &[]).assert_ok().json();
    assert_eq!(n(&r, "snapshots_copied"), 1, "{r}");
    assert!(n(&r, "bytes_read") < 64 * 1024, "{r}");
    assert!(n(&r, "blobs_skipped") >= 10, "{r}");
    let (s, d) = (
        src2.path.display().to_string(),
        dst2.path.display().to_string(),
    );
    assert_copies_restore_identical(&dst2, &s, &d, &pairs(&r));

    // Same data copied into a plain target (other keys) restores identical too, but needs
    // translation and reads everything.
    let plain = Repo::new();
    let r = copy(&plain, &plain.path, &src2.path, &[])
        .assert_ok()
        .json();
    assert_eq!(r["shared_keys"], false, "{r}");
    assert!(n(&r, "bytes_read") > 20 * MIB, "{r}");
}

/// A copy killed with SIGKILL once the target holds its first index file resumes: the next
/// run completes, restores identical, and reads and sends less than the whole (what was
/// indexed is not sent again, and the translation map spares reading it).
#[test]
fn killed_copy_resumes_without_resending() {
    let src = Repo::new();
    let work = tempdir();
    let data = work.path().join("data");
    for i in 0..6 {
        write_random(&data.join(format!("part-{i}.bin")), 8 * MIB, 20 + i);
    }
    let sid = src.backup(&[&data], &[] as &[&str]).id;
    let total: u64 = src
        .packs_of_type("data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    // Small packs, an index file every 8 of them; uploads throttled so the kill lands
    // mid-way.
    let dst = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let mut cmd = dst.command(&[
        "copy",
        "--from-repo",
        &src.path.display().to_string(),
        "--limit-upload",
        "8192",
    ]);
    cmd.env("HOLDFAST_FROM_PASSWORD", &dst.password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let map_dir = dst.cache.join("copy");
    let started = Instant::now();
    loop {
        let map_written = std::fs::read_dir(&map_dir)
            .map(|d| d.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
            .unwrap_or(false);
        if !dst.files("index").is_empty() && map_written {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the copy ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no index file after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(
        dst.files("snapshots").is_empty(),
        "killed before the snapshot"
    );
    let indexed = dst.files("index").len();

    let r = copy(&dst, &dst.path, &src.path, &[]).assert_ok().json();
    assert_eq!(n(&r, "snapshots_copied"), 1, "{r}");
    assert!(n(&r, "blobs_skipped") > 0, "{r}");
    assert!(
        n(&r, "bytes_written") < total && n(&r, "bytes_read") < total,
        "resumed copy: {r}, whole: {total} (index files before: {indexed})"
    );
    let (s, d) = (
        src.path.display().to_string(),
        dst.path.display().to_string(),
    );
    assert_copies_restore_identical(&dst, &s, &d, &[(sid, pairs(&r)[0].1.clone())]);
}

mod rgw {
    use super::*;

    /// The RGW endpoint; fails the test when the server is not there.
    fn endpoint() -> String {
        rgw_env("HOLDFAST_TEST_RGW")
    }

    /// Local → RGW → local: three snapshots copied to a repository on RGW and from there
    /// into a third (local) repository restore identical to the originals; the second
    /// copy's snapshots keep the first origin, so copying the original into the third
    /// repository afterwards copies nothing; a second copy to RGW sends nothing.
    #[test]
    fn local_to_rgw_to_local_round_trip() {
        let src = Repo::new();
        let work = tempdir();
        let data = work.path().join("data");
        three_snapshots(&src, &data);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        let remote = format!(
            "s3:{}/hf-copy-{}-{nanos}/offsite",
            endpoint(),
            std::process::id()
        );
        let local = |r: &Repo| r.path.display().to_string();
        src.cmd(&[
            "-r",
            &remote,
            "init",
            "--kdf-memory-kib",
            "8",
            "--kdf-iterations",
            "1",
        ])
        .assert_ok();
        let up = copy_at(&src, &remote, &local(&src), &[]).assert_ok().json();
        assert_eq!(n(&up, "snapshots_copied"), 3, "{up}");
        assert_copies_restore_identical(&src, &local(&src), &remote, &pairs(&up));
        let again = copy_at(&src, &remote, &local(&src), &[]).assert_ok().json();
        assert_eq!(
            (n(&again, "snapshots_copied"), n(&again, "blobs_copied")),
            (0, 0),
            "{again}"
        );

        let back = Repo::new();
        let down = copy_at(&back, &local(&back), &remote, &[])
            .assert_ok()
            .json();
        assert_eq!(n(&down, "snapshots_copied"), 3, "{down}");
        // Each copy of a copy restores as the original.
        let origin: Vec<(String, String)> = pairs(&up)
            .into_iter()
            .zip(pairs(&down))
            .map(|((s, m), (m2, t))| {
                assert_eq!(m, m2);
                (s, t)
            })
            .collect();
        assert_copies_restore_identical(&back, &local(&src), &local(&back), &origin);
        let direct = copy(&back, &back.path, &src.path, &[]).assert_ok().json();
        assert_eq!(
            (
                n(&direct, "snapshots_copied"),
                n(&direct, "snapshots_skipped")
            ),
            (0, 3),
            "{direct}"
        );
    }
}
