//! The repository fixture of format 1 as holdfast 0.1.0 wrote it
//! (`tests/fixtures/repo-format-1-2026-12`, see its README) must stay readable by every
//! future holdfast: listed as that version listed it, restored byte for byte, checked
//! clean, written to without a migration, and migrated (SPEC.md §13).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use holdfast_e2e::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURE: &str = "tests/fixtures/repo-format-1-2026-12";
const FIXTURE_PASSWORD: &str = "fixture-password";
/// Where the fixture's snapshots were taken from.
const SOURCE: &str = "/tmp/fx/src";

/// A copy of the fixture repository in a temporary directory (the fixture itself is never
/// written to).
fn fixture_copy() -> Repo {
    let mut r = Repo::uninit();
    copy_tree(&workspace_root().join(FIXTURE).join("repo"), &r.path);
    r.password = FIXTURE_PASSWORD.into();
    r
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// One manifest line per entry below `root` in the fixture's format (`file MODE SIZE
/// SHA256 PATH`, `dir MODE PATH`, `symlink TARGET PATH`, `fifo MODE PATH`), sorted.
fn manifest_of(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("./{}", p.strip_prefix(root).unwrap().display());
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.mode() & 0o7777;
            let ft = m.file_type();
            if ft.is_dir() {
                out.insert(format!("dir {mode:o} {rel}"));
                walk(root, &p, out);
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(format!("symlink {} {rel}", t.display()));
            } else if ft.is_fifo() {
                out.insert(format!("fifo {mode:o} {rel}"));
            } else if ft.is_file() {
                let sum = hex(&Sha256::digest(fs::read(&p).unwrap()));
                out.insert(format!("file {mode:o} {} {sum} {rel}", m.len()));
            } else {
                out.insert(format!("other {rel}"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expected_manifest(short: &str) -> BTreeSet<String> {
    let p = workspace_root()
        .join(FIXTURE)
        .join(format!("{short}.manifest"));
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Restores `spec` into a new directory under the scratch space and compares it with the
/// manifest `short`.
fn assert_restores_as(r: &Repo, spec: &str, short: &str, to: &str) {
    let target = r.scratch().join(to);
    r.restore(spec, &target, &[] as &[&str]);
    let got = manifest_of(&restored(&target, Path::new(SOURCE)));
    let want = expected_manifest(short);
    assert_eq!(
        got,
        want,
        "restore of {spec} differs from {short}.manifest:\nmissing: {:?}\nunexpected: {:?}",
        want.difference(&got).collect::<Vec<_>>(),
        got.difference(&want).collect::<Vec<_>>()
    );
}

fn config_files(r: &Repo) -> Vec<PathBuf> {
    r.files("config")
}

fn feature<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no feature {name} in {list}"))
}

#[test]
fn the_format_1_fixture_is_listed_restored_checked_written_and_migrated() {
    let r = fixture_copy();
    // Listed exactly as holdfast 0.1.0 listed it.
    let want: Value = serde_json::from_str(
        &fs::read_to_string(workspace_root().join(FIXTURE).join("snapshots.json")).unwrap(),
    )
    .unwrap();
    let got = Value::Array(r.snapshots(&[] as &[&str]));
    assert_eq!(got, want);

    // Both snapshots restore byte for byte, modes, links, the fifo and the empty directory.
    assert_restores_as(&r, "aa1337d6", "aa1337d6", "first");
    assert_restores_as(&r, "cb56a3bb", "cb56a3bb", "second");
    r.cmd(&["check", "--read-data"]).assert_ok();

    // The features: a version-1 config, nothing on.
    let list = r.json(&["migrate", "--list"]);
    assert_eq!(list["config_version"], 1);
    assert_eq!(list["generation"], 1);
    assert_eq!(feature(&list, "snapshot-v2")["state"], "off");
    assert_eq!(feature(&list, "session-v2")["state"], "off");

    // A backup into it works without a migration and writes a version-1 snapshot.
    let src = r.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("new.txt"), b"written by a newer holdfast\n").unwrap();
    let b1 = r.backup(&[&src], &[] as &[&str]);
    let entry = r.json(&["cat", "snapshot", &b1.id]);
    assert!(entry.get("host_seq").is_none(), "{entry}");
    assert_eq!(config_files(&r).len(), 1, "a backup must not migrate");

    // Migrate: a second config file (generation 2); the version-1 file stays.
    let m = r.json(&["migrate", "snapshot-v2"]);
    assert_eq!(m["generation"], 2);
    assert_eq!(m["in_force"], true);
    assert_eq!(config_files(&r).len(), 2);
    let list = r.json(&["migrate", "--list"]);
    assert_eq!(
        (list["config_version"].clone(), list["generation"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(feature(&list, "snapshot-v2")["state"], "on");
    assert_eq!(feature(&list, "session-v2")["state"], "on");
    // Again: refused.
    r.cmd(&["migrate", "snapshot-v2"])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("already on");
    r.cmd(&["migrate", "no-such-feature"])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("unknown feature `no-such-feature`");

    // Now backups write version-2 snapshots with the host's sequence number.
    fs::write(src.join("second.txt"), b"after the migration\n").unwrap();
    let b2 = r.backup(&[&src], &[] as &[&str]);
    let entry = r.json(&["cat", "snapshot", &b2.id]);
    assert_eq!(entry["host_seq"], 1, "{entry}");

    // Everything still restores and checks clean.
    assert_restores_as(&r, "aa1337d6", "aa1337d6", "first-again");
    assert_restores_as(&r, "cb56a3bb", "cb56a3bb", "second-again");
    let target = r.scratch().join("new");
    r.restore(&b2.id, &target, &[] as &[&str]);
    assert_eq!(
        fs::read(restored(&target, &src).join("second.txt")).unwrap(),
        b"after the migration\n"
    );
    r.cmd(&["check", "--read-data"]).assert_ok();
    assert_eq!(r.snapshots(&[] as &[&str]).len(), 4);
}

#[test]
fn new_repositories_have_the_current_features_and_migrate_lists_them() {
    let r = Repo::new();
    assert_eq!(config_files(&r).len(), 1);
    let list = r.json(&["migrate", "--list"]);
    assert_eq!(list["config_version"], 2);
    assert_eq!(list["generation"], 1);
    for name in ["session-v2", "snapshot-v2"] {
        let f = feature(&list, name);
        assert_eq!(f["state"], "on", "{f}");
        assert_eq!(f["known"], true);
    }
    assert_eq!(feature(&list, "snapshot-v2")["class"], "incompatible");
    assert_eq!(feature(&list, "session-v2")["class"], "compatible");
    let text = r.cmd(&["migrate", "--list"]);
    text.assert_ok();
    assert!(
        text.stdout_str().contains("snapshot-v2")
            && text.stdout_str().contains("since holdfast 0.2.0"),
        "{text}"
    );
    // A first backup is number 1 of its host.
    let src = r.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    let b = r.backup(&[&src], &[] as &[&str]);
    assert_eq!(r.json(&["cat", "snapshot", &b.id])["host_seq"], 1);
    r.cmd(&["migrate", "snapshot-v2"])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("already on");
    // Usage errors: neither a feature nor --list; both.
    r.cmd(&["migrate"]).assert_code(exit::USAGE);
    r.cmd(&["migrate", "--list", "snapshot-v2"])
        .assert_code(exit::USAGE);
}
