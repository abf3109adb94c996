//! `holdfast forget`: policies applied per group, dry runs that change nothing, reasons
//! shown for every kept snapshot, explicit IDs, and no deletion without a policy. (The
//! calendar rules themselves are tested over generated timelines in the engine's
//! `retention` module; here the snapshots are made by real backups seconds apart.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use holdfast_e2e::*;

/// A repository with `n` snapshots of one source (changed between backups), oldest
/// first, plus the source.
fn repo_with(n: usize, extra: &[&str]) -> (Repo, TempDir, PathBuf, Vec<String>) {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    let mut ids = Vec::new();
    for i in 0..n {
        write_file(
            &src.join(format!("f{i}")),
            format!("version {i}\n").as_bytes(),
        );
        ids.push(repo.backup(&[&src], extra).id);
    }
    (repo, work, src, ids)
}

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn listed(repo: &Repo) -> BTreeSet<String> {
    repo.snapshot_ids(&[] as &[&str]).into_iter().collect()
}

/// The `keep`/`remove` lists of a group in `forget --json` output: (id, reasons).
fn entries(group: &Value, which: &str) -> Vec<(String, Vec<String>)> {
    group[which]
        .as_array()
        .unwrap_or_else(|| panic!("no {which} list: {group}"))
        .iter()
        .map(|e| {
            (
                e["id"].as_str().expect("id").to_string(),
                e["reasons"]
                    .as_array()
                    .expect("reasons")
                    .iter()
                    .map(|r| r.as_str().expect("reason").to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn no_policy_removes_nothing_and_fails() {
    let (repo, _w, _src, all) = repo_with(2, &[]);
    for args in [
        vec!["forget"],
        vec!["forget", "--keep-daily", "0"],
        vec!["forget", "--dry-run"],
        vec!["forget", "--host", "x"],
    ] {
        repo.cmd(&args)
            .assert_code(exit::FAILURE)
            .assert_stderr_contains("no policy");
    }
    assert_eq!(
        listed(&repo),
        all.iter().map(String::as_str).map(String::from).collect()
    );
}

#[test]
fn keep_last_dry_run_changes_nothing_then_removes_the_oldest() {
    let (repo, _w, src, all) = repo_with(4, &[]);
    let v = repo.json(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(v["dry_run"], Value::Bool(true));
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{v}");
    let g = &groups[0];
    assert_eq!(g["host"].as_str(), Some(host_of(&repo, &all[0]).as_str()));
    assert_eq!(
        g["paths"],
        serde_json::json!([src.to_string_lossy()]),
        "{v}"
    );
    assert_eq!(
        entries(g, "keep"),
        vec![
            (all[3].clone(), vec!["last snapshot".to_string()]),
            (all[2].clone(), vec!["last snapshot".to_string()]),
        ]
    );
    let removed: Vec<String> = entries(g, "remove").into_iter().map(|(id, _)| id).collect();
    assert_eq!(removed, vec![all[1].clone(), all[0].clone()]);
    assert_eq!(listed(&repo).len(), 4, "a dry run removed snapshots");

    // Text dry run says what would happen, with reasons.
    let run = repo.cmd(&["forget", "--keep-last", "2", "--dry-run"]);
    run.assert_ok();
    let out = run.stdout_str();
    assert!(out.contains("last snapshot"), "{run}");
    assert!(out.contains("would remove 2 snapshots"), "{run}");
    assert!(
        out.contains(&all[0][..8]) && out.contains(&all[3][..8]),
        "{run}"
    );
    assert_eq!(listed(&repo).len(), 4);

    let v = repo.json(&["forget", "--keep-last", "2"]);
    let gone: BTreeSet<String> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(gone, ids(&[&all[0], &all[1]]));
    assert_eq!(listed(&repo), ids(&[&all[2], &all[3]]));
    // The rest of the repository is untouched and consistent; kept snapshots restore.
    repo.json(&["check"]);
    let t = tempdir();
    repo.restore(&all[3], t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
}

fn host_of(repo: &Repo, id: &str) -> String {
    repo.json(&["cat", "snapshot", id])["host"]
        .as_str()
        .unwrap()
        .to_string()
}

/// All snapshots of a test run are taken seconds apart, so they share one local day (if
/// they straddle midnight, they are taken again: seconds after midnight they cannot):
/// `--keep-daily 1` keeps the newest, `--keep-daily 5` also keeps the oldest, as restic
/// does when there are fewer days than asked for.
#[test]
fn keep_daily_on_one_day() {
    let days_of = |repo: &Repo| -> BTreeSet<String> {
        repo.snapshots(&[] as &[&str])
            .iter()
            .map(|s| s["time"].as_str().unwrap()[..10].to_string())
            .collect()
    };
    let mut made = repo_with(3, &[]);
    if days_of(&made.0).len() != 1 {
        made = repo_with(3, &[]);
    }
    let (repo, _w, _src, all) = made;
    let days = days_of(&repo);
    assert_eq!(days.len(), 1, "snapshots straddle midnight twice: {days:?}");
    let v = repo.json(&["forget", "--keep-daily", "1", "--dry-run"]);
    assert_eq!(
        entries(&v["groups"][0], "keep"),
        vec![(all[2].clone(), vec!["daily snapshot".to_string()])]
    );
    let v = repo.json(&["forget", "--keep-daily", "5", "--dry-run"]);
    assert_eq!(
        entries(&v["groups"][0], "keep"),
        vec![
            (all[2].clone(), vec!["daily snapshot".to_string()]),
            (all[0].clone(), vec!["oldest daily snapshot".to_string()]),
        ]
    );
    let v = repo.json(&[
        "forget",
        "--keep-within",
        "1d",
        "--keep-daily",
        "1",
        "--dry-run",
    ]);
    assert_eq!(entries(&v["groups"][0], "keep").len(), 3, "{v}");
    assert_eq!(
        entries(&v["groups"][0], "keep")[0].1,
        vec!["within 1d".to_string(), "daily snapshot".to_string()]
    );
}

#[test]
fn groups_by_host_and_paths_and_filters() {
    let repo = Repo::new();
    let work = tempdir();
    let x = work.path().join("x");
    let y = work.path().join("y");
    write_file(&x.join("f"), b"x\n");
    write_file(&y.join("f"), b"y\n");
    let a_x1 = repo.backup(&[&x], &["--host", "a"]).id;
    let a_x2 = repo.backup(&[&x], &["--host", "a"]).id;
    let a_y1 = repo.backup(&[&y], &["--host", "a"]).id;
    let a_y2 = repo.backup(&[&y], &["--host", "a", "--tag", "keep"]).id;
    let b_x1 = repo
        .backup(&[&x], &["--host", "b", "--tag", "keep,more"])
        .id;
    let b_x2 = repo.backup(&[&x], &["--host", "b"]).id;

    // Default grouping: host and paths, three groups, the newest of each kept.
    let v = repo.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 3, "{v}");
    let kept: BTreeSet<String> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| entries(g, "keep"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(kept, ids(&[&a_x2, &a_y2, &b_x2]));

    // By host only: two groups.
    let v = repo.json(&[
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "host",
        "--dry-run",
    ]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 2, "{v}");
    // No grouping: one.
    let v = repo.json(&["forget", "--keep-last", "1", "--group-by", "", "--dry-run"]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        entries(&v["groups"][0], "keep"),
        vec![(b_x2.clone(), vec!["last snapshot".to_string()])]
    );

    // keep-tag keeps tagged snapshots besides the newest per group.
    let v = repo.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "keep",
        "--group-by",
        "",
        "--dry-run",
    ]);
    let kept = entries(&v["groups"][0], "keep");
    assert_eq!(
        kept,
        vec![
            (b_x2.clone(), vec!["last snapshot".to_string()]),
            (b_x1.clone(), vec!["tag keep".to_string()]),
            (a_y2.clone(), vec!["tag keep".to_string()]),
        ]
    );
    // A tag list must match all its tags.
    let v = repo.json(&[
        "forget",
        "--keep-tag",
        "keep,more",
        "--group-by",
        "",
        "--dry-run",
    ]);
    assert_eq!(
        entries(&v["groups"][0], "keep"),
        vec![(b_x1.clone(), vec!["tags keep,more".to_string()])]
    );

    // --host limits what forget looks at: host b is left alone.
    repo.json(&[
        "forget",
        "--host",
        "a",
        "--keep-last",
        "1",
        "--group-by",
        "host",
    ]);
    assert_eq!(listed(&repo), ids(&[&a_y2, &b_x1, &b_x2]));
    let _ = (a_x1, a_y1);
}

#[test]
fn forget_by_id() {
    let (repo, _w, _src, all) = repo_with(4, &[]);
    // An unknown ID removes nothing.
    repo.cmd(&["forget", "0123456789abcdef"]).assert_failed();
    assert_eq!(listed(&repo).len(), 4);
    // A policy and IDs together are refused.
    repo.cmd(&["forget", "--keep-last", "1", &all[0]])
        .assert_failed();
    assert_eq!(listed(&repo).len(), 4);
    // Dry run, then for real: a prefix and a full ID.
    let v = repo.json(&["forget", "--dry-run", &all[0][..10], &all[1]]);
    assert_eq!(
        entries(&v["groups"][0], "remove")
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![all[0].clone(), all[1].clone()]
    );
    assert_eq!(listed(&repo).len(), 4);
    repo.json(&["forget", &all[0][..10], &all[1]]);
    assert_eq!(listed(&repo), ids(&[&all[2], &all[3]]));
    repo.json(&["forget", "latest"]);
    assert_eq!(listed(&repo), ids(&[&all[2]]));
}

#[test]
fn invalid_options_are_refused_cleanly() {
    let (repo, _w, _src, _all) = repo_with(1, &[]);
    for (args, needle) in [
        (vec!["forget", "--keep-daily", "-3"], "keep-daily"),
        (vec!["forget", "--keep-last", "many"], "keep-last"),
        (vec!["forget", "--keep-within", "5x"], "keep-within"),
        (
            vec!["forget", "--keep-within-daily", "-1d"],
            "keep-within-daily",
        ),
        (
            vec!["forget", "--keep-last", "1", "--group-by", "color"],
            "group-by",
        ),
        (vec!["forget", "--keep-tag", ",", "--dry-run"], "keep-tag"),
    ] {
        // Usage errors from the argument parser, before the repository is opened.
        repo.cmd(&args)
            .assert_code(exit::USAGE)
            .assert_stderr_contains(needle);
    }
    assert_eq!(listed(&repo).len(), 1);
    // `unlimited` (or restic's -1) is a count.
    let v = repo.json(&["forget", "--keep-daily", "unlimited", "--dry-run"]);
    assert_eq!(entries(&v["groups"][0], "keep").len(), 1);
    let v = repo.json(&["forget", "--keep-last", "-1", "--dry-run"]);
    assert_eq!(entries(&v["groups"][0], "keep").len(), 1);
}

/// `--prune` runs a prune after removing snapshots; the repository stays consistent and
/// the kept snapshot restores.
#[test]
fn forget_with_prune() {
    let (repo, _w, src, all) = repo_with(3, &[]);
    let run = repo.cmd(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--safety-margin",
        "0s",
    ]);
    run.assert_ok();
    assert_eq!(listed(&repo), ids(&[&all[2]]));
    repo.json(&["check"]);
    let t = tempdir();
    repo.restore(&all[2], t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
    // --safety-margin without --prune is a usage error.
    repo.cmd(&["forget", "--keep-last", "1", "--safety-margin", "0s"])
        .assert_code(exit::USAGE);
}

/// Retention windows take months as `mo` and years as `y` (shown back the same way, weeks
/// as days), and keep every snapshot inside them; restic's `m` for months is refused with
/// a usage error that says to write `mo` (or `min`), and so are minutes, seconds, empty
/// and negative windows: nothing is removed.
#[test]
fn keep_within_takes_months_and_refuses_an_ambiguous_m() {
    let (repo, _w, _src, all) = repo_with(3, &[]);
    for (window, shown) in [
        ("1mo", "1mo"),
        ("1y6mo", "1y6mo"),
        ("6mo1y", "1y6mo"),
        ("2w", "14d"),
        ("1d12h", "1d12h"),
    ] {
        let v = repo.json(&["forget", "--keep-within", window, "--dry-run"]);
        assert_eq!(
            v["policy"].as_str(),
            Some(format!("keep all snapshots within {shown} of the newest").as_str()),
            "--keep-within {window}: {v}"
        );
        let keep = entries(&v["groups"][0], "keep");
        assert_eq!(keep.len(), 3, "--keep-within {window}: {v}");
        assert!(
            keep.iter()
                .all(|(_, r)| r == &vec![format!("within {shown}")]),
            "--keep-within {window}: {v}"
        );
        assert!(entries(&v["groups"][0], "remove").is_empty(), "{v}");
    }
    // The calendar rules take months too.
    let v = repo.json(&["forget", "--keep-within-daily", "3mo", "--dry-run"]);
    assert_eq!(
        entries(&v["groups"][0], "keep")[0].1,
        vec!["daily within 3mo".to_string()],
        "{v}"
    );
    // For real: with a window in months, nothing recent is removed.
    let v = repo.json(&["forget", "--keep-within", "1mo"]);
    assert_eq!(v["removed"], serde_json::json!([]), "{v}");
    assert_eq!(listed(&repo).len(), 3);

    for (window, says) in [
        ("2y5m", &["--keep-within", "ambiguous", "5mo", "5min"][..]),
        ("30m", &["--keep-within", "ambiguous", "30mo"]),
        ("90min", &["--keep-within", "whole hours"]),
        ("3600s", &["--keep-within", "whole hours"]),
        ("", &["--keep-within", "empty"]),
        ("-1mo", &["--keep-within", "negative"]),
        ("1.5y", &["--keep-within", "whole numbers"]),
        ("1y1y", &["--keep-within", "twice"]),
        ("4294967296d", &["--keep-within", "too large"]),
    ] {
        let run = repo.cmd(&["forget", "--keep-within", window, "--keep-last", "1"]);
        run.assert_code(exit::USAGE);
        for s in says {
            run.assert_stderr_contains(s);
        }
    }
    let run = repo.cmd(&["forget", "--keep-within-weekly", "1m", "--keep-last", "1"]);
    run.assert_code(exit::USAGE)
        .assert_stderr_contains("--keep-within-weekly")
        .assert_stderr_contains("mo");
    assert_eq!(
        listed(&repo),
        all.iter().cloned().collect::<BTreeSet<String>>(),
        "a refused forget removed snapshots"
    );
}
