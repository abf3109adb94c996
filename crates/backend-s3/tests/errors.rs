//! What a user sees when an S3 repository cannot be used at all, through the real `holdfast`
//! binary: no credentials, credentials the server refuses, a bucket that does not exist and
//! an endpoint nothing listens at. Each is one readable line (no SDK debug dump), and comes
//! within a few seconds (no long retries, no long wait for EC2 instance metadata).
//!
//! The no-credentials and unreachable-endpoint tests need no S3 server; the others run on
//! the test servers (`rgw::`, `moto::`; see `common`).

#[macro_use]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use holdfast_e2e::{exit, holdfast_bin, run_command, tempdir, Repo, Run, COMMAND_TIMEOUT};

/// How long any of these failures may take.
const QUICK: Duration = Duration::from_secs(8);

/// An address on 127.0.0.1 where nothing listens.
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr");
    drop(l);
    addr
}

/// `holdfast snapshots` on `location`, with none of the caller's AWS settings: no AWS_*
/// variables, and a home directory without AWS files; `env` is added.
fn snapshots_without_aws(location: &str, env: &[(&str, &str)]) -> (Run, Duration) {
    let mut repo = Repo::uninit();
    repo.path = location.into();
    let home = tempdir();
    let mut cmd: Command = repo.command(&["snapshots"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let run = run_command(cmd, COMMAND_TIMEOUT);
    (run, start.elapsed())
}

/// A failure that is one clear line, soon.
fn assert_readable(run: &Run, took: Duration, message: &str) {
    run.assert_no_panic().assert_code(exit::FAILURE);
    assert_one_line(run, took, message);
}

fn assert_one_line(run: &Run, took: Duration, message: &str) {
    run.assert_stderr_contains(message);
    let stderr = run.stderr_str();
    assert_eq!(
        stderr.matches(message).count(),
        1,
        "said more than once:\n{run}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line:\n{run}");
    for dump in ["DispatchFailure", "ConnectorError", "SdkBody", "{ "] {
        assert!(!stderr.contains(dump), "SDK debug output:\n{run}");
    }
    assert!(took < QUICK, "took {took:?} (limit {QUICK:?}):\n{run}");
}

/// No credentials anywhere (environment, profile files): one line saying what to set, at
/// once, without waiting on retries. Instance metadata is not disabled: holdfast still
/// asks for it (credentials of an EC2 instance role), briefly.
#[test]
fn no_credentials() {
    let location = format!("s3:http://{}/bucket/repo", closed_port());
    let (run, took) = snapshots_without_aws(&location, &[("AWS_REGION", "us-east-1")]);
    assert_readable(
        &run,
        took,
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
    );
    // The same with no region either (which is looked up in instance metadata too).
    let (run, took) = snapshots_without_aws(&location, &[]);
    assert_readable(
        &run,
        took,
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
    );
}

/// An endpoint where nothing listens: "connection refused" after a few quick attempts.
#[test]
fn unreachable_endpoint() {
    let addr = closed_port();
    let location = format!("s3:http://{addr}/bucket/repo");
    let (run, took) = snapshots_without_aws(
        &location,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "testtest"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_readable(
        &run,
        took,
        &format!("cannot reach the S3 endpoint http://{addr}: connection refused"),
    );
}

/// A wrong secret, and an access key the server does not know: the server refused the
/// credentials, and which variable to check. (Only RGW: moto checks no signatures.)
fn refused_credentials(s: &Server) {
    // Built (if need be) before any timing starts.
    holdfast_bin();
    s.fresh_backend("bucket-exists");
    let mut repo = s.repo("refused");
    repo.extra_env = vec![("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into())];
    let start = Instant::now();
    let run = repo.cmd(&["snapshots"]);
    assert_readable(
        &run,
        start.elapsed(),
        "the S3 server refused the credentials (SignatureDoesNotMatch): check \
         AWS_SECRET_ACCESS_KEY",
    );

    repo.extra_env = vec![("AWS_ACCESS_KEY_ID".into(), "no-such-access-key".into())];
    let start = Instant::now();
    let run = repo.cmd(&["snapshots"]);
    assert_readable(
        &run,
        start.elapsed(),
        "the S3 server refused the credentials (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID",
    );
}

/// A bucket that does not exist: "no repository" (exit 10), saying the bucket is missing
/// and that `init` creates it.
fn unknown_bucket(s: &Server) {
    holdfast_bin();
    let repo = s.repo("no-bucket");
    let bucket = common::unique("hf-missing").to_lowercase();
    let repo = repo.at(s.location(&bucket, &repo.prefix));
    let start = Instant::now();
    let run = repo.cmd(&["snapshots"]);
    let took = start.elapsed();
    run.assert_no_panic().assert_code(exit::NO_REPOSITORY);
    assert_one_line(
        &run,
        took,
        &format!("bucket {bucket} does not exist (run `holdfast init` to create it)"),
    );
}

per_server!(unknown_bucket; rgw_only: refused_credentials);
