//! `holdfast check`: a clean repository passes; every kind of damage (a flipped byte, a
//! truncation, a deletion) of a pack, a tree pack, an index file and a snapshot file is
//! reported naming exactly that object and the snapshot it affects, with exit code 1 and
//! never a panic; a backup killed with SIGKILL leaves packs that are reported as
//! information only.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;

/// Two snapshots of two unrelated trees, made by separate backups, with the repository
/// files each backup added.
struct Setup {
    repo: Repo,
    _work: TempDir,
    a: PathBuf,
    b: PathBuf,
    id_a: String,
    id_b: String,
    /// Data packs, tree packs and index files written by the backup of `a`.
    data_a: Vec<PathBuf>,
    tree_a: Vec<PathBuf>,
    index_a: Vec<PathBuf>,
}

fn new_files(before: &[PathBuf], after: Vec<PathBuf>) -> Vec<PathBuf> {
    after.into_iter().filter(|p| !before.contains(p)).collect()
}

fn setup() -> Setup {
    let repo = Repo::new();
    let work = tempdir();
    let a = work.path().join("a");
    let b = work.path().join("b");
    write_file(&a.join("one.bin"), &random_bytes(3_000_000, 11));
    write_file(&a.join("dir/two.txt"), lorem(100_000).as_bytes());
    write_file(&b.join("three.bin"), &random_bytes(2_000_000, 12));
    write_file(&b.join("sub/four.txt"), b"four\n");
    let id_a = repo.backup(&[&a], &[] as &[&str]).id;
    let packs_a = repo.packs();
    let index_a = repo.files("index");
    let data_a: Vec<PathBuf> = repo.packs_of_type("data");
    let tree_a: Vec<PathBuf> = repo.packs_of_type("tree");
    let id_b = repo.backup(&[&b], &[] as &[&str]).id;
    assert!(!new_files(&packs_a, repo.packs()).is_empty());
    assert!(!data_a.is_empty() && !tree_a.is_empty() && !index_a.is_empty());
    Setup {
        repo,
        _work: work,
        a,
        b,
        id_a,
        id_b,
        data_a,
        tree_a,
        index_a,
    }
}

/// `check --json EXTRA...` (any exit code): the run and its document.
fn check_json(repo: &Repo, extra: &[&str]) -> (Run, Value) {
    let mut a = vec!["check", "--json"];
    a.extend_from_slice(extra);
    let run = repo.cmd(&a);
    run.assert_no_panic();
    let v = run.json();
    (run, v)
}

fn problems<'a>(v: &'a Value, which: &str) -> &'a Vec<Value> {
    v[which]
        .as_array()
        .unwrap_or_else(|| panic!("no {which} array: {v}"))
}

/// (kind, id) of every error.
fn error_objects(v: &Value) -> BTreeSet<(String, String)> {
    problems(v, "errors")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_string(),
                e["id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

fn snapshots_of(p: &Value) -> BTreeSet<String> {
    p["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s.as_str().expect("snapshot id").to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Asserts exit 1, that every error affects exactly `affected`, and that the text output
/// names `ids` and the affected snapshots.
fn assert_errors_affect(s: &Setup, v: &Value, run: &Run, affected: &[&str]) {
    assert_errors_affect_with(s, v, run, affected, &[])
}

/// [`assert_errors_affect`], the text report run with `extra` arguments.
fn assert_errors_affect_with(s: &Setup, v: &Value, run: &Run, affected: &[&str], extra: &[&str]) {
    run.assert_code(exit::FAILURE);
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    let errors = problems(v, "errors");
    assert!(!errors.is_empty(), "{v}");
    for e in errors {
        assert_eq!(
            snapshots_of(e),
            set(affected),
            "error {e} affects other snapshots"
        );
    }
    // The same in the text report, which must also exit 1, naming the snapshots.
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    let text = s.repo.cmd(&args);
    text.assert_code(exit::FAILURE);
    let out = text.stdout_str();
    for e in errors {
        let id = e["id"].as_str().unwrap();
        assert!(out.contains(id), "text report does not name {id}\n{text}");
    }
    for a in affected {
        assert!(
            out.contains(&a[..8]),
            "text report does not name snapshot {a}\n{text}"
        );
    }
    assert!(
        !text.stderr_str().trim().is_empty(),
        "no message on stderr\n{text}"
    );
}

/// Restoring the undamaged snapshot still works.
fn assert_b_restores(s: &Setup) {
    let t = tempdir();
    s.repo.restore(&s.id_b, t.path(), &[] as &[&str]);
    assert_trees_equal(&s.b, &restored(t.path(), &s.b));
}

fn truncate(p: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn clean_repository_after_several_backups_passes() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("big.bin"), &random_bytes(5_000_000, 1));
    write_file(&src.join("text.txt"), lorem(300_000).as_bytes());
    repo.backup(&[&src], &[] as &[&str]);
    write_file(&src.join("more/new.bin"), &random_bytes(1_000_000, 2));
    repo.backup(&[&src], &[] as &[&str]);
    fs::remove_file(src.join("text.txt")).unwrap();
    write_file(&src.join("big.bin"), &random_bytes(2_000_000, 3));
    repo.backup(&[&src], &["--tag", "x"]);

    let v = repo.json(&["check"]);
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert!(problems(&v, "errors").is_empty(), "{v}");
    assert!(problems(&v, "infos").is_empty(), "{v}");
    let c = &v["counts"];
    assert_eq!(c["snapshots"], 3, "{v}");
    assert_eq!(c["packs"].as_u64(), Some(repo.packs().len() as u64), "{v}");
    assert_eq!(c["packs_read"], 0, "{v}");
    assert!(c["trees"].as_u64().unwrap() >= 3, "{v}");

    let v = repo.json(&["check", "--read-data"]);
    let packs = repo.packs().len() as u64;
    assert_eq!(v["counts"]["packs_read"].as_u64(), Some(packs), "{v}");
    let total: u64 = repo
        .packs()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(v["counts"]["bytes_read"].as_u64(), Some(total), "{v}");

    // Three parts read every pack exactly once, the same packs every time.
    let part = |spec: &str| {
        repo.json(&["check", "--read-data-subset", spec])["counts"]["packs_read"]
            .as_u64()
            .unwrap()
    };
    let parts: Vec<u64> = ["1/3", "2/3", "3/3"].iter().map(|s| part(s)).collect();
    assert_eq!(parts.iter().sum::<u64>(), packs, "{parts:?}");
    assert_eq!(part("2/3"), parts[1]);
    assert_eq!(part("100%"), packs);
    assert_eq!(part("1/1"), packs);
    let ten = part("10%");
    assert_eq!(part("10%"), ten);
    assert!(ten <= packs);

    // Text output.
    let run = repo.cmd(&["check"]);
    run.assert_ok();
    assert!(run.stdout_str().contains("no errors"), "{run}");
}

#[test]
fn bad_arguments_are_refused_cleanly() {
    let repo = Repo::new();
    for bad in ["0/5", "6/5", "1/0", "0%", "150%", "abc"] {
        repo.cmd(&["check", "--read-data-subset", bad])
            .assert_failed()
            .assert_stderr_contains("subset");
    }
    repo.cmd(&["check", "--read-data", "--read-data-subset", "1/2"])
        .assert_failed();
}

#[test]
fn data_pack_header_flip_names_the_pack_and_snapshot() {
    let s = setup();
    let p = &s.data_a[0];
    flip_byte(p, -20);
    let (run, v) = check_json(&s.repo, &[]);
    assert_eq!(
        error_objects(&v),
        [("pack".to_string(), file_id(p))].into_iter().collect(),
        "{v}"
    );
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    let paths = &problems(&v, "errors")[0]["paths"];
    let want = s.a.join("one.bin").to_string_lossy().into_owned();
    assert!(
        paths
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str() == Some(&want)),
        "affected paths do not name {want}: {v}"
    );
    assert_b_restores(&s);
}

/// A byte flipped inside blob data is invisible to the structure check (it reads no
/// data) and found by --read-data, which names the pack and the blob.
#[test]
fn data_pack_content_flip_is_found_by_read_data() {
    let s = setup();
    let p = &s.data_a[0];
    flip_byte(p, 1000);
    s.repo.json(&["check"]);
    let (run, v) = check_json(&s.repo, &["--read-data"]);
    let errs = error_objects(&v);
    assert!(errs.contains(&("pack".to_string(), file_id(p))), "{v}");
    assert_eq!(
        errs.iter().filter(|(k, _)| k == "pack").count(),
        1,
        "only the damaged pack is named: {v}"
    );
    assert!(
        errs.iter().any(|(k, _)| k == "blob"),
        "the damaged blob is named: {v}"
    );
    assert_errors_affect_with(&s, &v, &run, &[&s.id_a], &["--read-data"]);
    // The subset that holds this pack finds it too; the others do not read it.
    let first = u8::from_str_radix(&file_id(p)[..2], 16).unwrap();
    let part = format!("{}/4", first % 4 + 1);
    let (run, _) = check_json(&s.repo, &["--read-data-subset", &part]);
    run.assert_code(exit::FAILURE);
    let other = format!("{}/4", (first + 1) % 4 + 1);
    let (_, v) = check_json(&s.repo, &["--read-data-subset", &other]);
    assert!(
        !error_objects(&v).contains(&("pack".to_string(), file_id(p))),
        "{v}"
    );
}

#[test]
fn truncated_data_pack_names_the_pack_and_snapshot() {
    let s = setup();
    let p = &s.data_a[0];
    let len = fs::metadata(p).unwrap().len();
    truncate(p, len / 2);
    let (run, v) = check_json(&s.repo, &[]);
    assert_eq!(
        error_objects(&v),
        [("pack".to_string(), file_id(p))].into_iter().collect(),
        "{v}"
    );
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    assert_b_restores(&s);
}

#[test]
fn deleted_data_pack_names_the_pack_and_snapshot() {
    let s = setup();
    let p = &s.data_a[0];
    fs::remove_file(p).unwrap();
    let (run, v) = check_json(&s.repo, &[]);
    assert_eq!(
        error_objects(&v),
        [("pack".to_string(), file_id(p))].into_iter().collect(),
        "{v}"
    );
    let e = &problems(&v, "errors")[0];
    assert!(e["details"][0].as_str().unwrap().contains("missing"), "{v}");
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    assert_b_restores(&s);
}

/// Damage inside a tree blob: the tree cannot be read; the error names the tree and the
/// pack it is in.
#[test]
fn tree_pack_flip_names_the_tree_pack_and_snapshot() {
    let s = setup();
    let p = &s.tree_a[0];
    flip_byte(p, 60);
    let (run, v) = check_json(&s.repo, &[]);
    let errs = problems(&v, "errors");
    assert!(!errs.is_empty(), "{v}");
    assert!(
        v["errors"].to_string().contains(&file_id(p)),
        "no error names the tree pack {}: {v}",
        file_id(p)
    );
    assert!(errs.iter().all(|e| e["kind"] == "tree"), "{v}");
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    // --read-data names the pack itself.
    let (_, v) = check_json(&s.repo, &["--read-data"]);
    assert!(
        error_objects(&v).contains(&("pack".to_string(), file_id(p))),
        "{v}"
    );
    assert_b_restores(&s);
}

#[test]
fn truncated_and_deleted_tree_packs_name_the_pack_and_snapshot() {
    let s = setup();
    let p = &s.tree_a[0];
    let len = fs::metadata(p).unwrap().len();
    truncate(p, len - 3);
    let (run, v) = check_json(&s.repo, &[]);
    assert!(
        error_objects(&v).contains(&("pack".to_string(), file_id(p))),
        "{v}"
    );
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);

    fs::remove_file(p).unwrap();
    let (run, v) = check_json(&s.repo, &[]);
    assert_eq!(
        error_objects(&v),
        [("pack".to_string(), file_id(p))].into_iter().collect(),
        "{v}"
    );
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    assert_b_restores(&s);
}

/// A damaged index file is named, with the snapshot whose data it described; the packs
/// it described are now in no index and are named as errors too (a snapshot needs them).
#[test]
fn damaged_index_file_names_the_index_and_snapshot() {
    for damage in ["flip", "truncate"] {
        let s = setup();
        let f = &s.index_a[0];
        match damage {
            "flip" => flip_byte(f, 40),
            _ => truncate(f, 0),
        }
        let (run, v) = check_json(&s.repo, &[]);
        let errs = error_objects(&v);
        assert!(
            errs.contains(&("index".to_string(), file_id(f))),
            "{damage}: {v}"
        );
        for (kind, id) in &errs {
            assert!(
                kind == "index" && id == &file_id(f)
                    || kind == "pack"
                        && s.data_a.iter().chain(&s.tree_a).any(|p| &file_id(p) == id),
                "{damage}: unexpected error {kind} {id}: {v}"
            );
        }
        assert_errors_affect(&s, &v, &run, &[&s.id_a]);
    }
}

/// A deleted index file leaves no file to name: the packs it described are named, with
/// the snapshot that needs them, and the fix (`repair index`) is given.
#[test]
fn deleted_index_file_names_its_packs_and_snapshot() {
    let s = setup();
    fs::remove_file(&s.index_a[0]).unwrap();
    let (run, v) = check_json(&s.repo, &[]);
    let errs = error_objects(&v);
    assert!(!errs.is_empty(), "{v}");
    for (kind, id) in &errs {
        assert_eq!(kind, "pack", "{v}");
        assert!(
            s.data_a.iter().chain(&s.tree_a).any(|p| &file_id(p) == id),
            "{id} is not a pack of the first backup: {v}"
        );
    }
    assert!(v["errors"].to_string().contains("repair index"), "{v}");
    assert_errors_affect(&s, &v, &run, &[&s.id_a]);
}

#[test]
fn damaged_snapshot_file_is_named() {
    for damage in ["flip", "truncate"] {
        let s = setup();
        let f: PathBuf = s.repo.path.join("snapshots").join(&s.id_a);
        match damage {
            "flip" => flip_byte(&f, 50),
            _ => truncate(&f, 10),
        }
        let (run, v) = check_json(&s.repo, &[]);
        assert_eq!(
            error_objects(&v),
            [("snapshot".to_string(), s.id_a.clone())]
                .into_iter()
                .collect(),
            "{damage}: {v}"
        );
        assert_errors_affect(&s, &v, &run, &[&s.id_a]);
        assert_b_restores(&s);
    }
    // A deleted snapshot is a forgotten snapshot: nothing is wrong.
    let s = setup();
    fs::remove_file(s.repo.path.join("snapshots").join(&s.id_a)).unwrap();
    let v = s.repo.json(&["check"]);
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    let _ = (&s.a, &s.b);
}

/// kill -9 during a backup once a pack is written: the packs it left are in no index;
/// check passes (exit 0) and reports each of them as information.
#[test]
fn check_after_killed_backup_reports_unindexed_packs_as_info() {
    let repo = Repo::new();
    let work = tempdir();
    let small = work.path().join("small");
    write_file(&small.join("f"), b"complete\n");
    let done = repo.backup(&[&small], &[] as &[&str]).id;
    let before: BTreeSet<PathBuf> = repo.packs().into_iter().collect();

    let src = work.path().join("big");
    for i in 0..10u64 {
        write_random(&src.join(format!("f{i}")), 20 * MIB, 100 + i);
    }
    let mut c = repo.command(&[std::ffi::OsStr::new("backup"), src.as_os_str()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    loop {
        if repo.packs().len() > before.len() {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("backup finished ({st}) before a pack appeared: too little data to interrupt");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no pack appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "not killed: {st}");

    let left: BTreeSet<String> = repo
        .packs()
        .iter()
        .filter(|p| !before.contains(*p))
        .map(|p| file_id(p))
        .collect();
    assert!(!left.is_empty());
    assert_eq!(repo.snapshot_ids(&[] as &[&str]), vec![done.clone()]);

    let v = repo.json(&["check"]);
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert!(problems(&v, "errors").is_empty(), "{v}");
    let infos: BTreeSet<String> = problems(&v, "infos")
        .iter()
        .filter(|i| i["kind"] == "pack")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    // Every pack the killed backup left that no index names is reported; a pack it did
    // index (every 64 packs) is not.
    let indexed: BTreeSet<String> = repo
        .files("index")
        .iter()
        .flat_map(|f| {
            repo.json(&["cat", "index", &file_id(f)])["packs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let unindexed: BTreeSet<String> = left.difference(&indexed).cloned().collect();
    assert!(!unindexed.is_empty());
    assert_eq!(infos, unindexed, "{v}");
    assert_eq!(
        v["counts"]["unindexed_packs"].as_u64(),
        Some(unindexed.len() as u64),
        "{v}"
    );
    let run = repo.cmd(&["check"]);
    run.assert_ok();
    assert!(run.stdout_str().contains("info: pack"), "{run}");
    // --read-data passes too (unindexed packs are not read).
    repo.json(&["check", "--read-data"]);
    // The complete snapshot still restores.
    let t = tempdir();
    repo.restore(&done, t.path(), &[] as &[&str]);
    assert_trees_equal(&small, &restored(t.path(), &small));
}
