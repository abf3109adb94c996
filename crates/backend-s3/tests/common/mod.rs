//! What the S3 test binaries share: finding the test servers, backends and repositories on
//! them, and the fault-injecting proxy ([`proxy`]).
//!
//! The servers are given by environment variables that `.ci/run` (through
//! `scripts/s3-test-servers.sh`) exports:
//! * `HOLDFAST_TEST_RGW=http://127.0.0.1:PORT`: a Ceph RADOS Gateway;
//! * `HOLDFAST_TEST_MOTO=http://127.0.0.1:PORT`: a moto server;
//! * `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (default `test` / `testtest`).
//!
//! The tests that need a server are `rgw::NAME` and `moto::NAME` ([`per_server!`]). A plain
//! `cargo nextest run` leaves them out and counts them as skipped (the default profile's
//! `default-filter` in `.config/nextest.toml`); the env.sh of the servers selects the `s3`
//! profile, which runs them, and CI runs them too. A test that runs without its server fails
//! with a message saying how to start it: it never passes without having run.

#![allow(dead_code, unused_macros)]

pub mod proxy;

/// `per_server!(a, b)` makes the tests `rgw::a`, `moto::a`, `rgw::b`, `moto::b`, each
/// calling `a(&Server)` (a function of the test file) with that server; without the server
/// they fail (see [`server`]). `per_server!(a; rgw_only: c)` adds `rgw::c`, for what only
/// RGW does (moto checks no signatures).
macro_rules! per_server {
    ($($name:ident),* $(,)? $(; rgw_only: $($rgw:ident),* $(,)?)?) => {
        mod rgw {
            $(#[test] fn $name() { super::$name(&crate::common::server("rgw")) })*
            $($(#[test] fn $rgw() { super::$rgw(&crate::common::server("rgw")) })*)?
        }
        mod moto {
            $(#[test] fn $name() { super::$name(&crate::common::server("moto")) })*
        }
    };
}

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use holdfast_backend_s3::{S3Backend, S3Options};
use holdfast_e2e::{run_command, Backup, Repo, Run, Value, COMMAND_TIMEOUT};

/// A test S3 server.
#[derive(Debug, Clone)]
pub struct Server {
    /// `rgw` or `moto`.
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// The server `name` ("rgw" or "moto"). Panics when its variable is not set: a test that
/// did not run must not pass. (A plain `cargo nextest run` does not select these tests; see
/// the module documentation.)
#[track_caller]
pub fn server(name: &'static str) -> Server {
    let var = format!("HOLDFAST_TEST_{}", name.to_uppercase());
    let endpoint = match std::env::var(&var) {
        Ok(v) if !v.trim().is_empty() => v.trim().trim_end_matches('/').to_string(),
        _ if holdfast_e2e::in_ci() => panic!(
            "{var} is not set but CI is: the S3 tests must run in CI. .ci/run starts the \
             servers with scripts/s3-test-servers.sh and exports {var}; see its output for \
             why the {name} server did not start"
        ),
        _ => panic!(
            "{var} is not set: this S3 test needs the {name} test server and did not run. \
             Start the servers with `scripts/s3-test-servers.sh start DIR`, then \
             `source DIR/env.sh` (it sets {var} and NEXTEST_PROFILE=s3) and run the tests \
             again. A plain `cargo nextest run` skips these tests; this run selected them \
             (`cargo test`, `--profile s3`/`ci`, or `--ignore-default-filter`)"
        ),
    };
    Server {
        name,
        endpoint,
        access_key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        secret_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testtest".into()),
    }
}

/// The bucket the tests share (each test works under a prefix of its own).
pub const BUCKET: &str = "holdfast-tests";

/// A name unique to this process and call: `TAG-PID-NANOS-N`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Server {
    /// `s3:ENDPOINT/BUCKET/PREFIX`.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.endpoint)
    }

    /// The same location through another endpoint (a proxy at `addr`).
    pub fn location_via(&self, addr: std::net::SocketAddr, bucket: &str, prefix: &str) -> String {
        format!("s3:http://{addr}/{bucket}/{prefix}")
    }

    /// Options with this server's credentials and test-friendly timeouts.
    pub fn options(&self) -> S3Options {
        S3Options {
            credentials: Some((self.access_key.clone(), self.secret_key.clone())),
            region: Some("us-east-1".into()),
            ..S3Options::default()
        }
    }

    /// A backend at `location` with `options`.
    pub fn backend_at(&self, location: &str, options: S3Options) -> S3Backend {
        S3Backend::new(location, options).unwrap_or_else(|e| panic!("{location}: {e}"))
    }

    /// A backend under a fresh prefix of the shared bucket, which it creates if needed.
    pub fn fresh_backend(&self, tag: &str) -> S3Backend {
        let b = self.backend_at(&self.location(BUCKET, &unique(tag)), self.options());
        holdfast_repo::backend::Backend::create(&b)
            .unwrap_or_else(|e| panic!("create bucket {BUCKET} on {}: {e}", self.name));
        b
    }

    /// A holdfast repository location (not initialised) under a fresh prefix.
    pub fn repo(&self, tag: &str) -> S3Repo {
        let location = self.location(BUCKET, &unique(tag));
        S3Repo::new(self, location)
    }
}

/// A repository on S3 driven through the real `holdfast` binary. Commands get the server's
/// credentials in their environment, plus `extra_env`.
pub struct S3Repo {
    /// The e2e helper; its `path` is the `s3:` location.
    pub repo: Repo,
    /// The `s3:` location.
    pub location: String,
    /// The server it is on.
    pub server: Server,
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the repository in its bucket.
    pub prefix: String,
    env: Vec<(String, String)>,
    /// Added to every command's environment.
    pub extra_env: Vec<(String, String)>,
}

impl S3Repo {
    /// A repository at `location`, an `s3:` location on `server` (or a malformed one, for
    /// tests of errors).
    pub fn new(server: &Server, location: String) -> S3Repo {
        let mut repo = Repo::uninit();
        repo.path = location.clone().into();
        let (bucket, prefix) = match holdfast_backend_s3::S3Location::parse(&location) {
            Ok(l) => (l.bucket, l.prefix),
            Err(_) => (String::new(), String::new()),
        };
        S3Repo {
            repo,
            location,
            server: server.clone(),
            bucket,
            prefix,
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), server.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY".into(), server.secret_key.clone()),
                ("AWS_REGION".into(), "us-east-1".into()),
                // No profile or instance-metadata lookups from the test machine's config.
                ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
                ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ],
            extra_env: Vec::new(),
        }
    }

    /// A repository at another location on the same server (or the same repository seen
    /// through a proxy), with the same credentials and extra environment.
    pub fn at(&self, location: String) -> S3Repo {
        let mut r = S3Repo::new(&self.server, location);
        r.extra_env = self.extra_env.clone();
        r
    }

    /// The same repository through a proxy listening at `addr`.
    pub fn via(&self, addr: std::net::SocketAddr) -> S3Repo {
        self.at(self.server.location_via(addr, &self.bucket, &self.prefix))
    }

    /// A backend on the repository's objects, straight to the server (for looking at
    /// them).
    pub fn backend(&self) -> S3Backend {
        self.server.backend_at(
            &self.server.location(&self.bucket, &self.prefix),
            self.server.options(),
        )
    }

    /// Multipart uploads pending under the repository's prefix, as "KEY UPLOAD-ID".
    pub fn pending_uploads(&self) -> Vec<String> {
        pending_uploads(&self.backend())
    }

    /// Scratch space removed with the repository helper.
    pub fn scratch(&self) -> &Path {
        self.repo.scratch()
    }

    /// The command, not yet run.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = self.repo.command(args);
        for (k, v) in self.env.iter().chain(&self.extra_env) {
            c.env(k, v);
        }
        c
    }

    /// Runs a command.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run_command(self.command(args), COMMAND_TIMEOUT)
    }

    /// `init` with a fast key derivation and `extra` arguments.
    pub fn init<S: AsRef<OsStr>>(&self, extra: &[S]) -> Run {
        let mut a: Vec<OsString> = ["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        self.cmd(&a)
    }

    /// `backup --json PATHS EXTRA`, whatever the outcome.
    pub fn backup_run<S: AsRef<OsStr>>(&self, paths: &[&Path], extra: &[S]) -> Run {
        let mut a: Vec<OsString> = vec!["backup".into(), "--json".into()];
        a.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
        a.extend(extra.iter().map(|s| s.as_ref().to_os_string()));
        self.cmd(&a)
    }

    /// `backup --json PATHS EXTRA`; asserts success.
    pub fn backup<S: AsRef<OsStr>>(&self, paths: &[&Path], extra: &[S]) -> Backup {
        let run = self.backup_run(paths, extra);
        run.assert_ok();
        Repo::parse_backup(&run)
    }

    /// `restore SPEC --target TARGET`, whatever the outcome.
    pub fn restore_run(&self, spec: &str, target: &Path) -> Run {
        let a: Vec<&OsStr> = vec![
            "restore".as_ref(),
            spec.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ];
        self.cmd(&a)
    }

    /// `restore SPEC --target TARGET`; asserts success.
    pub fn restore(&self, spec: &str, target: &Path) -> Run {
        let r = self.restore_run(spec, target);
        r.assert_ok();
        r
    }

    /// `snapshots --json` as an array; asserts success.
    pub fn snapshots(&self) -> Vec<Value> {
        let r = self.cmd(&["snapshots", "--json"]);
        r.assert_ok();
        match r.json() {
            Value::Array(v) => v,
            other => panic!("snapshots --json is not an array: {other}\n{r}"),
        }
    }

    /// IDs of the snapshots.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("snapshot id").to_string())
            .collect();
        v.sort();
        v
    }
}

/// Writes a tree of mixed content at `root`: `files` small text files in nested
/// directories, a few random (incompressible) files, and one larger file whose middle
/// repeats its start (deduplication inside a file).
pub fn make_tree(root: &Path, seed: u64, files: usize, big: usize) {
    use holdfast_e2e::{lorem, random_bytes, write_file};
    std::fs::create_dir_all(root).expect("tree root");
    for i in 0..files {
        let p = root.join(format!("d{}/e{}/f{i}.txt", i % 7, i % 3));
        let mut text = lorem(200 + (i * 37) % 5000).into_bytes();
        text.extend_from_slice(format!("\nfile {i} seed {seed}\n").as_bytes());
        write_file(&p, &text);
    }
    for j in 0..3 {
        let p = root.join(format!("bin/r{j}.dat"));
        write_file(
            &p,
            &random_bytes(100_000 + j * 250_000, seed * 100 + j as u64),
        );
    }
    if big > 0 {
        let half = random_bytes(big / 2, seed ^ 0xb16);
        let mut v = half.clone();
        v.extend_from_slice(&half);
        write_file(&root.join("big.bin"), &v);
    }
}

/// Multipart uploads pending under a backend's prefix, as "KEY UPLOAD-ID".
pub fn pending_uploads(b: &S3Backend) -> Vec<String> {
    let loc = b.s3_location().clone();
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    loop {
        let page = b
            .block_on(
                b.client()
                    .list_multipart_uploads()
                    .bucket(&loc.bucket)
                    .prefix(loc.key(""))
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send(),
            )
            .expect("list multipart uploads");
        out.extend(page.uploads().iter().map(|u| {
            format!(
                "{} {}",
                u.key().unwrap_or("?"),
                u.upload_id().unwrap_or("?")
            )
        }));
        if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
            return out;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
}

/// Waits until `f` returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
