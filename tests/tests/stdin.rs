//! Standard input and command output as sources (issue 12): `backup --stdin` and
//! `backup --stdin-from-command`, a failing or killed command saving no snapshot, and the
//! PostgreSQL case with a real server: `pg_dumpall` through holdfast, a second dump that
//! adds little, and the first dump loaded into a fresh server.

use std::fs::File;
use std::process::Stdio;

use holdfast_e2e::postgres::Postgres;
use holdfast_e2e::*;

/// `backup --json --stdin ...` with standard input read from `input`.
fn backup_stdin(repo: &Repo, input: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec!["backup", "--json", "--stdin"];
    args.extend_from_slice(extra);
    let f = File::open(input).expect("open input");
    run_command_full(
        repo.command(&args),
        COMMAND_TIMEOUT,
        StdoutTo::Capture,
        Some(Stdio::from(f)),
    )
}

#[test]
fn stdin_is_recorded_as_one_file_and_restores_byte_identical() {
    let repo = Repo::new();
    let input = repo.scratch().join("input.bin");
    write_random(&input, 24 * 1024 * 1024 + 123, 7);
    let run = backup_stdin(
        &repo,
        &input,
        &["--stdin-filename", "db/dump.sql", "--tag", "db"],
    );
    run.assert_ok();
    let b = Repo::parse_backup(&run);
    assert_eq!(b.stat("bytes_read"), 24 * 1024 * 1024 + 123);
    let snaps = repo.snapshots(&["--tag", "db"]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/db/dump.sql"]));
    repo.assert_dump_equals("latest", std::path::Path::new("/db/dump.sql"), &input);
}

#[test]
fn stdin_filename_must_be_recordable() {
    let repo = Repo::new();
    let run = repo.cmd(&["backup", "--stdin", "--stdin-filename", "../x"]);
    run.assert_code(exit::USAGE).assert_stderr_contains("..");
    let run = repo.cmd(&["backup", "--stdin", "/etc"]);
    run.assert_code(exit::USAGE);
}

#[test]
fn command_output_is_backed_up_and_a_failing_command_saves_nothing() {
    let repo = Repo::new();
    let ok = repo.cmd(&[
        "backup",
        "--json",
        "--stdin-from-command",
        "--stdin-filename",
        "numbers.txt",
        "--",
        "sh",
        "-c",
        "seq 1 300000",
    ]);
    ok.assert_ok();
    let expected = repo.scratch().join("expected.txt");
    let seq = std::process::Command::new("seq")
        .args(["1", "300000"])
        .output()
        .expect("seq");
    std::fs::write(&expected, &seq.stdout).unwrap();
    repo.assert_dump_equals("latest", std::path::Path::new("/numbers.txt"), &expected);

    // Output, then a failure: the partial output must not become a snapshot.
    let failed = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "numbers.txt",
        "--",
        "sh",
        "-c",
        "seq 1 100000; echo 'pg_dump: error: connection lost' >&2; exit 3",
    ]);
    failed
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("exited with status 3")
        .assert_stderr_contains("pg_dump: error: connection lost")
        .assert_stderr_contains("no snapshot was written");
    assert_eq!(repo.snapshots::<&str>(&[]).len(), 1, "{failed}");

    let killed = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "seq 1 1000; kill -9 $$",
    ]);
    killed
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("killed by signal 9");
    let missing = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--",
        "/nonexistent/dumper",
    ]);
    missing
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("/nonexistent/dumper");
    assert_eq!(repo.snapshots::<&str>(&[]).len(), 1);
}

#[test]
fn a_wrong_password_does_not_start_the_command() {
    let repo = Repo::new();
    let marker = repo.scratch().join("ran");
    let mut c = repo.command(&[
        "backup",
        "--stdin-from-command",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    c.env("HOLDFAST_PASSWORD", "wrong");
    run_command(c, COMMAND_TIMEOUT).assert_code(exit::WRONG_PASSWORD);
    assert!(
        !marker.exists(),
        "the command ran although the repository did not open"
    );
}

/// pg_dumpall of the server, through holdfast, as `/pg/all.sql`; returns the backup.
fn dump_through_holdfast(repo: &Repo, pg: &Postgres) -> Backup {
    let mut c = repo.command(&[
        "backup",
        "--json",
        "--tag",
        "pg",
        "--stdin-from-command",
        "--stdin-filename",
        "pg/all.sql",
        "--",
        "pg_dumpall",
    ]);
    c.envs(pg.env());
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_ok();
    Repo::parse_backup(&run)
}

#[test]
fn postgres_dump_round_trip_and_a_second_dump_adds_little() {
    let pg = Postgres::start();
    pg.psql("postgres", "create database shop");
    pg.psql(
        "shop",
        "create table users (id int primary key, name text, email text);
         insert into users select i, 'user ' || i, 'u' || i || '@example.com'
           from generate_series(1, 400000) i;
         create table orders (id serial primary key, user_id int, total numeric);
         insert into orders (user_id, total) select i % 1000, i * 1.5
           from generate_series(1, 200000) i;",
    );
    let repo = Repo::new();
    let first = dump_through_holdfast(&repo, &pg);
    let dump_bytes = first.stat("bytes_read");
    assert!(dump_bytes > 15 << 20, "a dump of some size: {dump_bytes}");

    // A slowly changing database: a few rows change.
    pg.psql(
        "shop",
        "update users set name = 'renamed' where id between 1000 and 1020;
         insert into orders (user_id, total) values (1, 99), (2, 98);",
    );
    let second = dump_through_holdfast(&repo, &pg);
    let added = second.stat("bytes_added_raw");
    println!(
        "pg_dumpall: {dump_bytes} bytes; first added {}; second added {added} ({:.1}%)",
        first.stat("bytes_added_raw"),
        added as f64 * 100.0 / dump_bytes as f64
    );
    // Three places changed (rows 1000-1020 leave the start of `users` and are appended at
    // its end; two orders at the end of `orders`): with 1 MiB average chunks, a chunk or
    // two around each, whatever the dump's size; everything else deduplicates.
    assert!(
        added < 8 << 20,
        "the second dump added {added} of {dump_bytes} bytes"
    );

    // The first dump restores into a fresh server and holds the old data.
    let out = repo.scratch().join("restored");
    repo.restore(&first.id, &out, &[] as &[&str]);
    let fresh = Postgres::start();
    // pg_dumpall recreates the postgres role: the fresh server's own, so that line fails
    // harmlessly; load without ON_ERROR_STOP on that statement alone by dropping it.
    let sql = std::fs::read_to_string(out.join("pg/all.sql")).unwrap();
    let sql: String = sql
        .lines()
        .filter(|l| !l.starts_with("CREATE ROLE postgres;"))
        .map(|l| format!("{l}\n"))
        .collect();
    let cleaned = repo.scratch().join("all.sql");
    std::fs::write(&cleaned, sql).unwrap();
    fresh.load("postgres", &cleaned);
    assert_eq!(fresh.psql("shop", "select count(*) from users"), "400000");
    assert_eq!(
        fresh.psql("shop", "select count(*) from users where name = 'renamed'"),
        "0",
        "the first dump has the data before the change"
    );
    assert_eq!(
        fresh.psql("shop", "select sum(total) from orders"),
        pg.psql("shop", "select sum(total) from orders where id <= 200000")
    );
}

#[test]
fn a_dump_that_fails_midway_saves_no_snapshot() {
    let pg = Postgres::start();
    pg.psql(
        "postgres",
        "create table big as select i from generate_series(1, 200000) i",
    );
    let repo = Repo::new();
    // The dump streams, then the server refuses the next database: pg_dumpall exits 1.
    let mut c = repo.command(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "all.sql",
        "--",
        "sh",
        "-c",
        "pg_dumpall && pg_dump -d no_such_database",
    ]);
    c.envs(pg.env());
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_code(exit::FAILURE)
        .assert_stderr_contains("exited with status 1")
        .assert_stderr_contains("no_such_database");
    assert!(repo.snapshots::<&str>(&[]).is_empty(), "{run}");
}
