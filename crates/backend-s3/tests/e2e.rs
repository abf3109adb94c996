//! The `holdfast` binary on S3 repositories, end to end, on Ceph RGW and on moto: init,
//! backup, incremental backup, restore, check --read-data, forget + prune, keys, and two
//! backups into one repository at the same time.

#[macro_use]
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use common::{make_tree, S3Repo, Server};
use holdfast_e2e::{assert_trees_equal, random_bytes, restored, tempdir, write_file, PASSWORD};
use holdfast_repo::backend::{Backend, FileKind};

const NO: &[&str] = &[];
const MIB: usize = 1024 * 1024;

/// Total bytes of the repository's pack objects, and their number.
fn pack_bytes(repo: &S3Repo) -> (u64, usize) {
    let packs = repo.backend().list(FileKind::Pack).expect("list packs");
    (packs.iter().map(|p| p.1).sum(), packs.len())
}

fn check_read_data(repo: &S3Repo) {
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

fn restore_equals(repo: &S3Repo, spec: &str, src: &Path) {
    let target = tempdir();
    repo.restore(spec, target.path());
    assert_trees_equal(src, &restored(target.path(), src));
}

/// The whole life of a repository on S3: `init` creates it (and the bucket); a backup;
/// a second backup of the unchanged tree reads no file; a changed file is read again;
/// restores are byte-identical; `check --read-data` passes; `forget` and two prunes free
/// the space of a forgotten snapshot's data; keys can be added and listed and the new
/// password opens the repository.
fn life_of_a_repository(s: &Server) {
    let repo = s.repo("e2e");
    // A bucket of its own, so that `init` must create it.
    let bucket = common::unique("hf-e2e").to_lowercase();
    let repo = repo.at(s.location(&bucket, &repo.prefix));
    repo.init(NO).assert_ok();
    // A second init is refused: the repository exists.
    repo.init(NO).assert_failed();

    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src, 1, 60, 2 * MIB);

    let first = repo.backup(&[&src], NO);
    assert!(first.stat("files_new") >= 60, "{}", first.json);
    assert!(first.stat("bytes_read") > 2 * MIB as u64, "{}", first.json);

    // Incremental: nothing is read again.
    let second = repo.backup(&[&src], NO);
    assert_eq!(second.stat("files_new"), 0, "{}", second.json);
    assert_eq!(second.stat("files_changed"), 0, "{}", second.json);
    assert_eq!(
        second.stat("files_unchanged"),
        first.stat("files_new"),
        "{}",
        second.json
    );
    assert_eq!(second.stat("bytes_read"), 0, "{}", second.json);
    assert_eq!(second.stat("data_blobs_added"), 0, "{}", second.json);

    // One changed file is read again, the others are not.
    let changed = src.join("d1/e1/f1.txt");
    let mut text = std::fs::read(&changed).unwrap();
    text.extend_from_slice(b"one more line\n");
    write_file(&changed, &text);
    // Data only the third snapshot has: freed once it is forgotten.
    write_file(&src.join("only-third.bin"), &random_bytes(3 * MIB, 99));
    let third = repo.backup(&[&src], NO);
    assert_eq!(third.stat("files_changed"), 1, "{}", third.json);
    assert_eq!(third.stat("files_new"), 1, "{}", third.json);
    assert_eq!(
        third.stat("bytes_read"),
        text.len() as u64 + 3 * MIB as u64,
        "{}",
        third.json
    );
    restore_equals(&repo, &third.id, &src);
    check_read_data(&repo);

    // forget + prune: the third snapshot's own data goes (by the second prune).
    std::fs::remove_file(src.join("only-third.bin")).unwrap();
    let fourth = repo.backup(&[&src], NO);
    let (before, _) = pack_bytes(&repo);
    repo.cmd(&["forget", &third.id]).assert_ok();
    assert_eq!(repo.snapshot_ids().len(), 3);
    for _ in 0..2 {
        repo.cmd(&["prune", "--safety-margin", "0s"]).assert_ok();
    }
    let (after, _) = pack_bytes(&repo);
    assert!(
        after + 2 * MIB as u64 <= before,
        "prune freed {} bytes of the 3 MiB only the forgotten snapshot used ({before} -> {after})",
        before.saturating_sub(after)
    );
    check_read_data(&repo);
    restore_equals(&repo, &fourth.id, &src);
    restore_equals(&repo, "latest", &src);

    // Keys.
    let pw_file = work.path().join("second-password");
    std::fs::write(&pw_file, "second password\n").unwrap();
    let add = repo.cmd(&[
        OsStr::new("key"),
        OsStr::new("add"),
        OsStr::new("--new-password-file"),
        pw_file.as_os_str(),
        OsStr::new("--json"),
    ]);
    add.assert_ok();
    let added = add.json()["id"].as_str().expect("key id").to_string();
    let list = repo.cmd(&["key", "list", "--json"]);
    list.assert_ok();
    let keys = list.json();
    let keys = keys.as_array().expect("key list is an array");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k["id"] == added.as_str()), "{keys:?}");
    let mut other = repo.at(repo.location.clone());
    other.repo.password = "second password".into();
    assert_eq!(other.snapshot_ids(), repo.snapshot_ids());
    other.repo.password = format!("not {PASSWORD}");
    other
        .cmd(&["snapshots"])
        .assert_code(holdfast_e2e::exit::WRONG_PASSWORD);
}

/// A location where nothing was initialised is "no repository" (exit 10), on a missing
/// bucket and on an empty prefix alike; bad locations are clear usage errors.
fn no_repository(s: &Server) {
    let missing_bucket = s.repo("none");
    let missing_bucket =
        missing_bucket.at(s.location(&common::unique("hf-none"), &missing_bucket.prefix));
    let empty_prefix = s.repo("none");
    s.fresh_backend("bucket-exists");
    for r in [&missing_bucket, &empty_prefix] {
        r.cmd(&["snapshots"])
            .assert_code(holdfast_e2e::exit::NO_REPOSITORY);
    }
    let bad = empty_prefix.at(format!("s3:{}", s.endpoint));
    let run = bad.cmd(&["snapshots"]);
    run.assert_failed();
    run.assert_stderr_contains("S3 location");
}

/// Two `holdfast backup` processes into the same S3 repository at the same time (sharing
/// some data) both succeed, and each snapshot restores byte-identical.
fn concurrent_backups(s: &Server) {
    let repo = s.repo("concurrent");
    repo.init(NO).assert_ok();
    let work = tempdir();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    make_tree(&a, 2, 40, 2 * MIB);
    make_tree(&b, 3, 40, 2 * MIB);
    // The same content in both: the two race to store its blobs.
    let shared = random_bytes(4 * MIB, 4242);
    write_file(&a.join("shared.bin"), &shared);
    write_file(&b.join("shared.bin"), &shared);

    let run = |src: &Path| {
        let t0 = Instant::now();
        let r = repo.backup_run(&[src], NO);
        (r, t0, Instant::now())
    };
    let (ra, rb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| run(&a));
        let hb = sc.spawn(|| run(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let ((run_a, start_a, end_a), (run_b, start_b, end_b)) = (ra, rb);
    run_a.assert_ok();
    run_b.assert_ok();
    assert!(
        start_a < end_b && start_b < end_a,
        "the two backups did not overlap"
    );
    let (ba, bb) = (
        holdfast_e2e::Repo::parse_backup(&run_a),
        holdfast_e2e::Repo::parse_backup(&run_b),
    );
    assert_ne!(ba.id, bb.id);
    let mut want = vec![ba.id.clone(), bb.id.clone()];
    want.sort();
    assert_eq!(repo.snapshot_ids(), want);
    check_read_data(&repo);
    restore_equals(&repo, &ba.id, &a);
    restore_equals(&repo, &bb.id, &b);
}

per_server!(life_of_a_repository, no_repository, concurrent_backups);
