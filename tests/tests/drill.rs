//! `holdfast drill`: restore drills with the real binary. A PostgreSQL dump restored into
//! a scratch server the drill starts itself passes its checks, or fails naming the check;
//! a volume drill passes on a sound snapshot and fails, naming the file, after a pack is
//! damaged; every outcome is recorded in the repository and listed by `drill history`.
//! Servers started here (and by the drill) are stopped whatever happens.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_e2e::*;

/// Whether a program is on the PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether process `pid` exists.
fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The user PostgreSQL runs as when the tests run as root (it refuses root).
fn pg_user() -> Option<nix::unistd::User> {
    if !is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name("postgres").ok().flatten();
    require(
        u.is_some(),
        "a `postgres` user to run PostgreSQL as (the tests run as root)",
    );
    u
}

/// A PostgreSQL server in a temporary directory with trust authentication on a random
/// loopback port; stopped (immediately) and deleted when dropped.
struct Pg {
    dir: TempDir,
    port: u16,
    server: Option<Child>,
}

impl Pg {
    fn start() -> Pg {
        require(
            have("initdb") && have("pg_ctl"),
            "PostgreSQL's server programs (initdb, pg_ctl)",
        );
        require(have("psql") && have("pg_dumpall"), "psql and pg_dumpall");
        let dir = tempdir();
        let user = pg_user();
        if let Some(u) = &user {
            nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).expect("chown");
        }
        let as_pg = |c: &mut Command| {
            if let Some(u) = &user {
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
        };
        let data = dir.path().join("data");
        let mut init = Command::new("initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "--locale=C"])
            .stdout(Stdio::null());
        as_pg(&mut init);
        let out = init.output().expect("run initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        let port = free_port();
        // The server runs in the foreground as a child, so the guard owns its process.
        let mut cmd = Command::new(postgres_bin());
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"));
        as_pg(&mut cmd);
        let server = cmd.spawn().expect("start postgres");
        let mut pg = Pg {
            dir,
            port,
            server: Some(server),
        };
        let start = Instant::now();
        while !pg.psql("postgres", "select 1").status.success() {
            if let Some(st) = pg.server.as_mut().and_then(|s| s.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default();
                panic!("postgres exited ({st}):\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn pid(&self) -> i32 {
        self.server.as_ref().map(|s| s.id() as i32).unwrap_or(0)
    }

    /// Runs SQL in `db` as the superuser.
    fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env_remove("PGPASSWORD")
            .output()
            .expect("run psql")
    }

    fn exec(&self, db: &str, sql: &str) {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "psql {sql}: {out:?}");
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            // SIGQUIT: immediate shutdown (the data is thrown away).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.id() as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let start = Instant::now();
            while s.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = s.kill();
                    let _ = s.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The `postgres` server program next to `initdb`.
fn postgres_bin() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("sh");
    let initdb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let p = real.with_file_name("postgres");
    require(p.is_file(), "the postgres server program next to initdb");
    p
}

/// A database `app` with a few tables: `t` with 10,000 rows, `users` with 3, `orders`
/// with 500; dumped with pg_dumpall into `dir/pg.sql` and backed up. Returns the dump's
/// path (as recorded) and the snapshot ID.
///
/// (`holdfast backup --stdin-from-command` is being added on main; until this branch has
/// it, the dump is written to a file by the shell and backed up as a file.)
fn dump_and_back_up(pg: &Pg, repo: &Repo, dir: &Path) -> (PathBuf, String) {
    pg.exec("postgres", "create database app");
    pg.exec(
        "app",
        "create table t (id int primary key, v text);
         insert into t select i, md5(i::text) from generate_series(1, 10000) i;
         create table users (id int primary key, name text);
         insert into users values (1, 'alice'), (2, 'bob'), (3, 'carol');
         create table orders (id serial primary key, user_id int references users, total numeric);
         insert into orders (user_id, total) select 1 + i % 3, i * 1.5 from generate_series(1, 500) i;",
    );
    let dump = dir.join("pg.sql");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pg_dumpall -h 127.0.0.1 -p {} -U postgres > '{}'",
            pg.port,
            dump.display()
        ))
        .output()
        .expect("run pg_dumpall");
    assert!(out.status.success(), "pg_dumpall: {out:?}");
    let b = repo.backup(&[&dump], &["--host", "db1", "--tag", "kind=postgres"]);
    (dump, b.id)
}

/// Scratch directories the drill leaves in `tmp` (it must leave none).
fn leftovers(tmp: &Path) -> Vec<PathBuf> {
    list_tree(tmp)
}

#[test]
fn postgres_drill_passes_its_checks_and_a_failing_check_is_named_and_recorded() {
    let pg = Pg::start();
    let repo = Repo::new();
    let work = tempdir();
    let (dump, snap) = dump_and_back_up(&pg, &repo, work.path());
    // The drill's temporary directories go here, to see that none is left.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let env = [("TMPDIR", tmp.as_os_str())];
    let file = dump.display().to_string();

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
    assert_eq!(
        rec["bytes_restored"].as_u64(),
        Some(std::fs::metadata(&dump).expect("dump").len())
    );
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
    let pg = Pg::start();
    let repo = Repo::new();
    let work = tempdir();
    // A pg_dump of one database (a pg_dumpall would create roles on the server).
    pg.exec("postgres", "create database shop");
    pg.exec(
        "shop",
        "create table items (id int); insert into items select generate_series(1, 42);",
    );
    let dump = work.path().join("shop.sql");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pg_dump -h 127.0.0.1 -p {} -U postgres shop > '{}'",
            pg.port,
            dump.display()
        ))
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump: {out:?}");
    repo.backup(&[&dump], &[] as &[&str]);
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
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
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0\n"),
        "scratch database left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
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
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let p2 = pid.clone();
    let outcome = std::panic::catch_unwind(move || {
        let pg = Pg::start();
        p2.store(pg.pid(), std::sync::atomic::Ordering::SeqCst);
        assert!(alive(pg.pid()));
        panic!("an assertion that fails while the server runs");
    });
    assert!(outcome.is_err());
    let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pid > 0);
    assert!(
        !alive(pid),
        "postgres {pid} still runs after the failed test"
    );
}
