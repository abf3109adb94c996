//! `holdfast drill`: restore drills with the real binary. A PostgreSQL dump restored into
//! a scratch server the drill starts itself passes its checks, or fails naming the check;
//! a volume drill passes on a sound snapshot and fails, naming the file, after a pack is
//! damaged; every outcome is recorded in the repository and listed by `drill history`.
//! Servers started here (and by the drill) are stopped whatever happens.

use std::path::{Path, PathBuf};

use holdfast_e2e::postgres::Postgres;
use holdfast_e2e::*;

/// A database `app` with a few tables: `t` with 10,000 rows, `users` with 3, `orders`
/// with 500; dumped by `holdfast backup --stdin-from-command -- pg_dumpall` as `/pg.sql` on
/// host `db1`. Returns the snapshot and the dump's size.
fn dump_and_back_up(pg: &Postgres, repo: &Repo) -> (String, u64) {
    pg.psql("postgres", "create database app");
    pg.psql(
        "app",
        "create table t (id int primary key, v text);
         insert into t select i, md5(i::text) from generate_series(1, 10000) i;
         create table users (id int primary key, name text);
         insert into users values (1, 'alice'), (2, 'bob'), (3, 'carol');
         create table orders (id serial primary key, user_id int references users, total numeric);
         insert into orders (user_id, total) select 1 + i % 3, i * 1.5 from generate_series(1, 500) i;",
    );
    let env = pg.env();
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let run = repo.cmd_env(
        &[
            "backup",
            "--json",
            "--host",
            "db1",
            "--tag",
            "kind=postgres",
            "--stdin-from-command",
            "--stdin-filename",
            "pg.sql",
            "--",
            "pg_dumpall",
        ],
        &env,
    );
    run.assert_ok();
    let b = Repo::parse_backup(&run);
    (b.id.clone(), b.stat("bytes_total"))
}

/// Scratch directories the drill leaves in `tmp` (it must leave none).
fn leftovers(tmp: &Path) -> Vec<PathBuf> {
    list_tree(tmp)
}

#[test]
fn postgres_drill_passes_its_checks_and_a_failing_check_is_named_and_recorded() {
    let pg = Postgres::start();
    let repo = Repo::new();
    let work = tempdir();
    let (snap, dump_len) = dump_and_back_up(&pg, &repo);
    // The drill's temporary directories go here, to see that none is left.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let env = [("TMPDIR", tmp.as_os_str())];
    let file = "/pg.sql".to_string();

    let run = repo.cmd_env(
        &[
            "drill",
            "postgres",
            "--json",
            "--tag",
            "kind=postgres",
            "--file",
            &file,
            "--database",
            "app",
            "--check",
            "select count(*) from t",
            "--expect",
            ">= 10000",
            "--check",
            "select name from users where id = 1",
            "--expect",
            "= alice",
            "--check",
            "select * from orders where total > 700",
            "--expect-rows",
            "--check",
            "select sum(total) from orders",
        ],
        &env,
    );
    run.assert_ok();
    let rec = run.json();
    assert_eq!(rec["result"], "pass", "{run}");
    assert_eq!(rec["snapshot"]["id"], snap.as_str(), "{run}");
    assert_eq!(rec["snapshot"]["host"], "db1", "{run}");
    let checks = rec["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 5, "restore and four checks: {run}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{run}");
    assert_eq!(
        checks[1]["detail"], "returned 10000, expected >= 10000",
        "{run}"
    );
    assert_eq!(
        checks[2]["detail"], "returned alice, expected = alice",
        "{run}"
    );
    assert!(rec["target"]
        .as_str()
        .expect("target")
        .starts_with("scratch PostgreSQL on 127.0.0.1:"));
    let rto = rec["restore_s"].as_f64().expect("restore_s");
    assert!(rto > 0.0, "{run}");
    eprintln!(
        "postgres drill: dump of {} bytes restored in {rto:.3} s",
        rec["bytes_restored"]
    );
    assert_eq!(rec["bytes_restored"].as_u64(), Some(dump_len));
    assert!(
        leftovers(&tmp).is_empty(),
        "the drill left {:?}",
        leftovers(&tmp)
    );

    // A check that does not hold, and one whose query fails.
    let run = repo.cmd_env(
        &[
            "drill",
            "postgres",
            "--json",
            "--tag",
            "kind=postgres",
            "--file",
            &file,
            "--database",
            "app",
            "--name",
            "pg-strict",
            "--check",
            "select count(*) from users",
            "--expect",
            ">= 100",
            "--check",
            "select count(*) from missing_table",
        ],
        &env,
    );
    run.assert_code(exit::FAILURE);
    let err: Value = serde_json::from_str(run.stderr_str().trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON document under --json ({e})\n{run}"));
    assert_eq!(err["exit_code"], exit::FAILURE, "{run}");
    run.assert_stderr_contains("drill pg-strict failed");
    run.assert_stderr_contains("check 1 `select count(*) from users`: returned 3, expected >= 100");
    let rec = run.json();
    assert_eq!(rec["result"], "fail", "{run}");
    let checks = rec["checks"].as_array().expect("checks");
    assert_eq!(checks[2]["passed"], false, "{run}");
    assert!(
        checks[2]["detail"]
            .as_str()
            .expect("detail")
            .contains("missing_table"),
        "the failing query's error is recorded: {run}"
    );
    assert!(
        leftovers(&tmp).is_empty(),
        "the drill left {:?}",
        leftovers(&tmp)
    );

    // Both outcomes are in the repository, as snapshots tagged for it.
    let hist = repo.json(&["drill", "history"]);
    let hist = hist.as_array().expect("history");
    assert_eq!(hist.len(), 2, "{hist:?}");
    assert_eq!(hist[0]["result"], "pass");
    assert_eq!(hist[1]["name"], "pg-strict");
    assert_eq!(hist[1]["result"], "fail");
    let strict = repo.json(&["drill", "history", "--name", "pg-strict"]);
    assert_eq!(strict.as_array().expect("history").len(), 1);
    let snaps = repo.snapshots(&["--tag", "kind=drill,drill=pg-strict,result=fail"]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["host"], "db1");
    assert_eq!(snaps[0]["paths"][0], "/drills/pg-strict/result.json");
    let text = repo.cmd(&["drill", "history"]);
    text.assert_ok();
    assert!(text.stdout_str().contains("pg-strict  fail"), "{text}");

    // `latest` never picks a drill record, even with only a host filter (records are on
    // the drilled snapshot's host).
    let run = repo.cmd_env(
        &[
            "drill", "postgres", "--json", "--host", "db1", "--file", &file,
        ],
        &env,
    );
    run.assert_ok();
    assert_eq!(run.json()["snapshot"]["id"], snap.as_str());
}

#[test]
fn postgres_drill_into_a_scratch_database_of_a_running_server() {
    let pg = Postgres::start();
    let repo = Repo::new();
    let work = tempdir();
    // A pg_dump of one database (a pg_dumpall would create roles on the server).
    pg.psql("postgres", "create database shop");
    pg.psql(
        "shop",
        "create table items (id int); insert into items select generate_series(1, 42);",
    );
    let dump = work.path().join("shop.sql");
    let out = pg
        .client("pg_dump")
        .args(["-d", "shop", "-f"])
        .arg(&dump)
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump: {out:?}");
    repo.backup(&[&dump], &[] as &[&str]);
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/postgres",
        pg.password, pg.port
    );
    let run = repo.cmd(&[
        "drill",
        "postgres",
        "--json",
        "--file",
        &dump.display().to_string(),
        "--target-url",
        &url,
        "--check",
        "select count(*) from items",
        "--expect",
        "= 42",
    ]);
    run.assert_ok();
    let rec = run.json();
    assert_eq!(rec["result"], "pass", "{run}");
    let target = rec["target"].as_str().expect("target");
    assert!(
        target.starts_with("scratch database holdfast_drill_"),
        "{target}"
    );
    // The scratch database is gone.
    let out = pg.psql(
        "postgres",
        "select count(*) from pg_database where datname like 'holdfast_drill_%'",
    );
    assert_eq!(out, "0", "scratch databases left");
}

#[test]
fn volume_drill_passes_then_fails_naming_the_file_after_a_pack_is_damaged() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("ns/pvc");
    write_file(&src.join("a.bin"), &random_bytes(2_000_000, 1));
    write_file(&src.join("dir/b.txt"), lorem(200_000).as_bytes());
    write_file(&src.join("empty"), b"");
    // A file of zeros (stored as nothing) and a small one.
    write_file(&src.join("zeros"), &vec![0u8; 300_000]);
    write_file(&src.join("dir/c"), b"c\n");
    repo.backup(&[&src], &["--host", "node1"]);
    let before = repo.packs();
    let other = work.path().join("other");
    write_file(&other.join("big.bin"), &random_bytes(3_000_000, 2));
    let damaged = repo.backup(&[&other], &["--host", "node1"]);
    let new_data: Vec<PathBuf> = repo
        .packs_of_type("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new_data.is_empty(), "the second backup wrote no data pack");

    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let env = [("TMPDIR", tmp.as_os_str())];
    let path = src.display().to_string();
    let run = repo.cmd_env(
        &[
            "drill", "volume", "--json", "--host", "node1", "--path", &path,
        ],
        &env,
    );
    run.assert_ok();
    let rec = run.json();
    assert_eq!(rec["result"], "pass", "{run}");
    assert_eq!(
        rec["name"],
        format!("volume-{}", path.trim_start_matches('/').replace('/', "-"))
    );
    assert_eq!(rec["files_restored"], 5, "{run}");
    assert_eq!(
        rec["bytes_restored"],
        2_000_000 + 200_000 + 300_000 + 2,
        "{run}"
    );
    let checks = rec["checks"].as_array().expect("checks");
    assert_eq!(
        checks
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["restore", "content", "counts"]
    );
    eprintln!(
        "volume drill RTO: {} bytes in {:.3} s ({:.1} MB/s)",
        rec["bytes_restored"],
        rec["restore_s"].as_f64().unwrap_or(0.0),
        rec["bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6
    );
    assert!(
        leftovers(&tmp).is_empty(),
        "the drill left {:?}",
        leftovers(&tmp)
    );

    // Damage the data of the second snapshot: its drill fails and names the file.
    let pack = &new_data[0];
    let len = std::fs::metadata(pack).expect("pack").len() as i64;
    flip_byte(pack, len / 2);
    let run = repo.cmd_env(
        &[
            "drill",
            "volume",
            "--json",
            "--snapshot",
            &damaged.id,
            "--name",
            "other",
        ],
        &env,
    );
    run.assert_code(exit::FAILURE);
    run.assert_stderr_contains("drill other failed");
    let big = other.join("big.bin").display().to_string();
    run.assert_stderr_contains(&big);
    run.assert_stderr_contains("damaged");
    assert_eq!(run.json()["result"], "fail");
    assert!(
        leftovers(&tmp).is_empty(),
        "the drill left {:?}",
        leftovers(&tmp)
    );
    // The first snapshot's data is untouched: still a pass.
    repo.cmd_env(
        &["drill", "volume", "--host", "node1", "--path", &path],
        &env,
    )
    .assert_ok();
    let hist = repo.json(&["drill", "history", "--name", "other"]);
    let hist = hist.as_array().expect("history");
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["result"], "fail");
    assert!(
        hist[0]["failure"].as_str().expect("failure").contains(&big),
        "{hist:?}"
    );
}

#[test]
fn test_servers_are_stopped_when_an_assertion_fails() {
    let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let p2 = port.clone();
    let outcome = std::panic::catch_unwind(move || {
        let pg = Postgres::start();
        p2.store(pg.port, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(pg.psql("postgres", "select 1"), "1");
        panic!("an assertion that fails while the server runs");
    });
    assert!(outcome.is_err());
    let port = port.load(std::sync::atomic::Ordering::SeqCst);
    assert!(port > 0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "postgres on port {port} still runs after the failed test"
    );
}
