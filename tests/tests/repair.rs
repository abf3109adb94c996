//! `holdfast repair index` and `holdfast repair snapshots` on damaged repositories: the
//! dry run changes nothing, the real run recovers everything that can be recovered, and
//! what cannot is named; afterwards `check` passes and every intact file restores
//! byte-identical.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use holdfast_e2e::*;

/// Every file below the repository with its bytes: any change shows.
fn contents(repo: &Repo) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&repo.path, &mut out);
    out
}

/// Two snapshots of unrelated trees, each with a large random file (several data blobs)
/// and small files.
fn two_backups() -> (Repo, TempDir, [(String, PathBuf); 2]) {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let a = work.path().join("a");
    let b = work.path().join("b");
    write_file(&a.join("big.bin"), &random_bytes(3_000_000, 1));
    write_file(&a.join("dir/small.txt"), lorem(20_000).as_bytes());
    write_file(&b.join("big.bin"), &random_bytes(2_500_000, 2));
    write_file(&b.join("sub/tiny"), b"tiny\n");
    for d in [&a, &b] {
        write_file(&d.join("x/one"), lorem(3000).as_bytes());
        write_file(&d.join("x/two"), &random_bytes(5000, 3));
    }
    let id_a = repo.backup(&[&a], &[] as &[&str]).id;
    let id_b = repo.backup(&[&b], &[] as &[&str]).id;
    (repo, work, [(id_a, a), (id_b, b)])
}

/// Every string in a `removed` list anywhere in a repair report.
fn removed_paths(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "removed" {
                    if let Some(a) = x.as_array() {
                        out.extend(a.iter().filter_map(|s| s.as_str().map(String::from)));
                    }
                } else {
                    out.extend(removed_paths(x));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(removed_paths(x))),
        _ => {}
    }
    out
}

fn restores_identically(repo: &Repo, id: &str, src: &Path) {
    let t = tempdir();
    repo.restore(id, t.path(), &[] as &[&str]);
    assert_trees_equal(src, &restored(t.path(), src));
}

/// Every index file is lost: `repair index` rebuilds the index from the pack headers, and
/// both snapshots restore as before.
#[test]
fn repair_index_rebuilds_lost_index_files() {
    let (repo, _work, snaps) = two_backups();
    for f in repo.files("index") {
        fs::remove_file(f).expect("remove index file");
    }
    repo.cmd(&["check"]).assert_failed();

    let before = contents(&repo);
    let dry = repo.json(&["repair", "index", "--dry-run"]);
    assert_eq!(
        contents(&repo),
        before,
        "the dry run changed the repository: {dry}"
    );
    assert!(dry.to_string().contains("packs_added"), "{dry}");

    let v = repo.json(&["repair", "index"]);
    let added = v["packs_added"]
        .as_u64()
        .or_else(|| v["report"]["packs_added"].as_u64())
        .unwrap_or_else(|| panic!("no packs_added in {v}"));
    assert_eq!(added as usize, repo.packs().len(), "{v}");
    repo.cmd(&["check", "--read-data"]).assert_ok();
    for (id, src) in &snaps {
        restores_identically(&repo, id, src);
    }
    // Backups go on deduplicating against the rebuilt index.
    let again = repo.backup(&[&snaps[0].1], &["--force"]);
    assert!(
        again.json.to_string().contains("\"data_blobs_added\":0"),
        "{}",
        again.json
    );
}

/// An index file names a pack that is gone: `repair index` drops those entries, and the
/// affected snapshot is then repaired by `repair snapshots`.
#[test]
fn repair_snapshots_drops_only_what_is_lost() {
    let (repo, _work, snaps) = two_backups();
    // Lose the data pack with the fewest blobs: a chunk of one big file, most likely alone.
    let lost = repo
        .packs_of_type("data")
        .into_iter()
        .min_by_key(|p| {
            repo.cat_pack(p)["blobs"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(usize::MAX)
        })
        .expect("a data pack");
    fs::remove_file(&lost).expect("remove pack");
    let run = repo.cmd(&["check"]);
    run.assert_failed();

    repo.json(&["repair", "index"]);
    let before = contents(&repo);
    let dry = repo.json(&["repair", "snapshots", "--dry-run"]);
    assert_eq!(
        contents(&repo),
        before,
        "the dry run changed the repository: {dry}"
    );

    let v = repo.json(&["repair", "snapshots"]);
    let text = v.to_string();
    assert!(text.contains("big.bin"), "the lost file is not named: {v}");
    let repaired = repo.snapshot_ids(&["--tag", "repaired"]);
    assert_eq!(repaired.len(), 1, "one snapshot rewritten, tagged: {v}");
    repo.cmd(&["check"]).assert_ok();

    // The repaired snapshot still has every file whose data is intact, byte-identical,
    // and none of the removed ones; the other snapshot is untouched.
    let removed = removed_paths(&v);
    assert!(!removed.is_empty(), "{v}");
    let t = tempdir();
    repo.restore(&repaired[0], t.path(), &[] as &[&str]);
    let (damaged_src, other) = if text.contains(&snaps[0].0) {
        (&snaps[0].1, &snaps[1])
    } else {
        (&snaps[1].1, &snaps[0])
    };
    let back = restored(t.path(), damaged_src);
    let mut kept = 0;
    for rel in ["big.bin", "dir/small.txt", "sub/tiny", "x/one", "x/two"] {
        let src = damaged_src.join(rel);
        if !src.exists() {
            continue;
        }
        let gone = removed.iter().any(|r| r.ends_with(rel));
        if gone {
            assert!(!back.join(rel).exists(), "{rel} was removed but came back");
        } else {
            kept += 1;
            assert_eq!(
                fs::read(back.join(rel)).expect("restored"),
                fs::read(src).expect("source"),
                "{rel}"
            );
        }
    }
    assert!(kept > 0, "nothing of the damaged snapshot was kept: {v}");
    if repo.snapshot_ids(&[] as &[&str]).contains(&other.0) {
        restores_identically(&repo, &other.0, &other.1);
    }
}
