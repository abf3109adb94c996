//! Damaged repositories: every kind of damage is detected and reported (object kind, ID
//! or what is wrong), with exit code 1 and never a panic; undamaged parts stay usable.

use std::fs::{self, OpenOptions};
use std::path::PathBuf;

use holdfast_e2e::*;

/// Two snapshots of two different trees; returns (repo, work dir, src A, src B, id A, id B).
struct Setup {
    repo: Repo,
    _work: TempDir,
    a: PathBuf,
    b: PathBuf,
    id_a: String,
    id_b: String,
}

fn setup() -> Setup {
    let repo = Repo::new();
    let work = tempdir();
    let a = work.path().join("a");
    let b = work.path().join("b");
    write_file(&a.join("one.bin"), &random_bytes(3_000_000, 1));
    write_file(&a.join("dir/two.txt"), lorem(100_000).as_bytes());
    write_file(&b.join("three.bin"), &random_bytes(2_000_000, 2));
    write_file(&b.join("four.txt"), b"four\n");
    let id_a = repo.backup(&[&a], &[] as &[&str]).id;
    let id_b = repo.backup(&[&b], &[] as &[&str]).id;
    Setup {
        repo,
        _work: work,
        a,
        b,
        id_a,
        id_b,
    }
}

/// Whether stderr names one of `ids` (by a prefix of at least 8 hex digits).
fn names_an_id(run: &Run, ids: &[String]) -> bool {
    let e = run.stderr_str();
    ids.iter().any(|id| e.contains(&id[..8]))
}

/// Asserts a clean failure (exit 1) whose message names `kind` (one of the words) and
/// either one of `ids` or says what is wrong.
fn assert_reported(run: &Run, kinds: &[&str], ids: &[String]) {
    run.assert_code(exit::FAILURE);
    run.assert_stderr_contains_any(kinds);
    let e = run.stderr_str().to_lowercase();
    let says_what = [
        "corrupt",
        "damaged",
        "missing",
        "authentic",
        "integrity",
        "mismatch",
        "truncated",
        "invalid",
        "hash",
        "too short",
        "not found",
    ]
    .iter()
    .any(|w| e.contains(w));
    assert!(
        names_an_id(run, ids) || says_what,
        "the error names no ID and does not say what is wrong\n{run}"
    );
}

fn ids_of(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| file_id(p)).collect()
}

fn restore_a(s: &Setup) -> (Run, TempDir) {
    let t = tempdir();
    let run = s.repo.restore_run(&s.id_a, t.path(), &[] as &[&str]);
    (run, t)
}

/// A flipped byte in the middle of every data pack makes restore and dump fail, naming
/// the damaged blob or pack.
#[test]
fn corrupt_pack_byte_flip_fails_restore_naming_blob_or_pack() {
    let s = setup();
    let packs = s.repo.packs_of_type("data");
    assert!(!packs.is_empty());
    for p in &packs {
        let len = fs::metadata(p).unwrap().len() as i64;
        flip_byte(p, len / 3);
    }
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["pack", "blob"], &ids_of(&packs));
    let one = s.a.join("one.bin");
    let run = s
        .repo
        .cmd(&["dump".as_ref(), s.id_a.as_ref(), one.as_os_str()]);
    assert_reported(&run, &["pack", "blob"], &ids_of(&packs));
    assert!(
        run.stdout.len() < 3_000_000,
        "dump wrote the whole file although its data is damaged"
    );
}

/// A flipped byte in the last bytes of a pack (where the header lives) is detected too.
#[test]
fn corrupt_pack_header_fails_restore() {
    let s = setup();
    let packs = s.repo.packs_of_type("data");
    for p in &packs {
        flip_byte(p, -5);
        flip_byte(p, 3);
    }
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["pack", "blob"], &ids_of(&packs));
}

/// Truncated data packs make restore fail and say so.
#[test]
fn truncated_pack_fails_restore() {
    let s = setup();
    let packs = s.repo.packs_of_type("data");
    for p in &packs {
        let len = fs::metadata(p).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["pack", "blob"], &ids_of(&packs));
}

/// Deleted data packs make restore fail saying data is missing.
#[test]
fn deleted_pack_fails_restore_saying_missing() {
    let s = setup();
    let packs = s.repo.packs_of_type("data");
    for p in &packs {
        fs::remove_file(p).unwrap();
    }
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["pack", "blob"], &ids_of(&packs));
    run.assert_stderr_contains_any(&["missing", "not found", "no such"]);
}

/// Damaged tree packs make `ls` and `restore` fail naming the tree, blob or pack.
#[test]
fn corrupt_tree_pack_fails_ls_and_restore() {
    let s = setup();
    let packs = s.repo.packs_of_type("tree");
    assert!(!packs.is_empty(), "no tree packs found");
    for p in &packs {
        let len = fs::metadata(p).unwrap().len() as i64;
        flip_byte(p, len / 2);
    }
    let run = s.repo.cmd(&["ls", &s.id_a]);
    assert_reported(&run, &["tree", "pack", "blob"], &ids_of(&packs));
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["tree", "pack", "blob"], &ids_of(&packs));
}

/// A damaged index file makes commands that need the index fail naming the index
/// (a backup must not silently ignore it and store everything again).
#[test]
fn corrupt_index_fails_naming_index() {
    let s = setup();
    let index = s.repo.files("index");
    assert!(!index.is_empty());
    flip_byte(&index[0], 40);
    let ids = ids_of(&index[..1]);
    let (run, _t) = restore_a(&s);
    assert_reported(&run, &["index"], &ids);
    let run = s.repo.cmd(&["ls", &s.id_b]);
    assert_reported(&run, &["index"], &ids);
    let run = s.repo.backup_run(&[&s.a], &[] as &[&str]);
    assert_reported(&run, &["index"], &ids);
    assert_eq!(s.repo.snapshot_ids(&[] as &[&str]).len(), 2);
}

/// A truncated (empty) index file is reported the same way.
#[test]
fn empty_index_file_fails_naming_index() {
    let s = setup();
    let index = s.repo.files("index");
    OpenOptions::new()
        .write(true)
        .open(&index[0])
        .unwrap()
        .set_len(0)
        .unwrap();
    let run = s.repo.cmd(&["ls", &s.id_b]);
    assert_reported(&run, &["index"], &ids_of(&index[..1]));
}

/// A damaged snapshot file: `snapshots` still lists the other snapshot and reports the
/// bad one; restoring the bad one fails naming it; the good one still restores.
#[test]
fn corrupt_snapshot_is_reported_and_others_still_work() {
    let s = setup();
    let bad = s.repo.path.join("snapshots").join(&s.id_a);
    assert!(bad.is_file(), "snapshot file {} not found", bad.display());
    flip_byte(&bad, 20);

    let run = s.repo.cmd(&["snapshots", "--json"]);
    run.assert_no_panic();
    let listed: Vec<String> = run
        .json()
        .as_array()
        .expect("snapshots --json is an array")
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![s.id_b.clone()], "{run}");
    assert!(
        names_an_id(&run, std::slice::from_ref(&s.id_a)),
        "snapshots does not report the damaged snapshot\n{run}"
    );
    let run = s.repo.cmd(&["snapshots"]);
    run.assert_no_panic();
    assert!(run.stdout_str().contains(&s.id_b[..8]), "{run}");

    let (run, t) = restore_a(&s);
    assert_reported(&run, &["snapshot"], std::slice::from_ref(&s.id_a));
    assert!(list_tree(t.path()).is_empty(), "failed restore wrote files");

    let t = tempdir();
    s.repo.restore(&s.id_b, t.path(), &[] as &[&str]);
    assert_trees_equal(&s.b, &restored(t.path(), &s.b));
    // By prefix too.
    let t = tempdir();
    s.repo.restore(&s.id_b[..10], t.path(), &[] as &[&str]);
    assert_trees_equal(&s.b, &restored(t.path(), &s.b));
}

/// A snapshot file cut to nothing is reported, not skipped silently or fatal for others.
#[test]
fn empty_snapshot_file_is_reported() {
    let s = setup();
    let bad = s.repo.path.join("snapshots").join(&s.id_b);
    fs::write(&bad, b"").unwrap();
    let run = s.repo.cmd(&["snapshots", "--json"]);
    run.assert_no_panic();
    let listed: Vec<String> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![s.id_a.clone()], "{run}");
    assert!(names_an_id(&run, std::slice::from_ref(&s.id_b)), "{run}");
    let t = tempdir();
    s.repo.restore(&s.id_a, t.path(), &[] as &[&str]);
    assert_trees_equal(&s.a, &restored(t.path(), &s.a));
}

/// With a single key file, damage to it makes every command fail with an error about the
/// key (not a panic, not success).
#[test]
fn corrupt_single_key_file_fails() {
    let s = setup();
    let keys = s.repo.files("keys");
    assert_eq!(keys.len(), 1);
    let len = fs::metadata(&keys[0]).unwrap().len() as i64;
    flip_byte(&keys[0], len / 2);
    let run = s.repo.cmd(&["snapshots"]);
    assert_reported(&run, &["key"], &ids_of(&keys));
}

/// With two keys, damage to one does not lock out the other's password.
#[test]
fn corrupt_other_key_file_does_not_matter() {
    let s = setup();
    let first_key = s.repo.files("keys");
    let run = s.repo.cmd_env(
        &["key", "add"],
        &[("HOLDFAST_NEW_PASSWORD", "second password".as_ref())],
    );
    run.assert_ok();
    let keys = s.repo.files("keys");
    assert_eq!(keys.len(), 2);
    let second: Vec<&PathBuf> = keys.iter().filter(|k| !first_key.contains(k)).collect();
    assert_eq!(second.len(), 1);
    // Damage the second key; the first password still works.
    flip_byte(second[0], 30);
    s.repo.cmd(&["snapshots"]).assert_no_panic();
    let t = tempdir();
    s.repo.restore(&s.id_a, t.path(), &[] as &[&str]);
    assert_trees_equal(&s.a, &restored(t.path(), &s.a));
}

/// A damaged config makes every command fail naming the config.
#[test]
fn corrupt_config_fails_naming_config() {
    let s = setup();
    let config = s.repo.files("config");
    assert_eq!(config.len(), 1);
    flip_byte(&config[0], 40);
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["cat", "config"],
    ] {
        let run = s.repo.cmd(&args);
        assert_reported(&run, &["config"], &ids_of(&config));
    }
    let run = s.repo.backup_run(&[&s.a], &[] as &[&str]);
    assert_reported(&run, &["config"], &ids_of(&config));
}

/// A second config file makes the repository unusable (the format allows exactly one).
#[test]
fn two_config_files_are_refused() {
    let s = setup();
    let config = s.repo.files("config");
    let bytes = fs::read(&config[0]).unwrap();
    // (Its name is not the hash of its bytes; either problem must stop the command.)
    fs::write(s.repo.path.join("config").join("0".repeat(64)), &bytes).unwrap();
    let run = s.repo.cmd(&["snapshots"]);
    run.assert_code(exit::FAILURE)
        .assert_stderr_contains("config");
}

/// Files in the repository whose names are not 64 hex digits are ignored.
#[test]
fn stray_files_in_repository_are_ignored() {
    let s = setup();
    for (dir, name) in [
        ("snapshots", "README"),
        ("snapshots", ".DS_Store"),
        ("index", "notes.txt"),
        ("keys", "backup-of-key.bak"),
        ("data/00", "junk.tmp"),
        ("config", "old"),
    ] {
        write_file(
            &s.repo.path.join(dir).join(name),
            b"not a repository object",
        );
    }
    let ids: Vec<String> = s.repo.snapshot_ids(&[] as &[&str]);
    assert_eq!(ids.len(), 2);
    let t = tempdir();
    s.repo.restore(&s.id_a, t.path(), &[] as &[&str]);
    assert_trees_equal(&s.a, &restored(t.path(), &s.a));
    s.repo.backup(&[&s.b], &[] as &[&str]);
    s.repo.json(&["stats"]);
    s.repo.json(&["key", "list"]);
}
