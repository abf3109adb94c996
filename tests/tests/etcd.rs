//! `holdfast etcd backup` against a real etcd (started here on random loopback ports,
//! stopped by a guard even when an assertion fails): the snapshot taken through the
//! maintenance API restores with `etcdctl snapshot restore` into a server holding the same
//! keys; a stream that breaks off, is corrupted or carries an error writes no snapshot and
//! says why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
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
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// TLS files for the server and the client.
struct Tls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// An etcd server on random loopback ports, killed when dropped.
struct Etcd {
    child: Child,
    /// Its client URL.
    url: String,
    /// etcdctl's TLS arguments, if it serves TLS.
    ctl_tls: Vec<String>,
}

impl Etcd {
    /// Starts etcd named `name` on `data` (a new directory, or one `etcdctl snapshot
    /// restore` made with the same name and peer URL `peer_port`).
    fn start(data: &Path, name: &str, peer_port: u16, tls: Option<&Tls>) -> Etcd {
        let client_port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.with_extension("log")).expect("log file"));
        let mut ctl_tls = Vec::new();
        if let Some(t) = tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
            for (flag, p) in [
                ("--cacert", &t.ca),
                ("--cert", &t.client_cert),
                ("--key", &t.client_key),
            ] {
                ctl_tls.push(format!("{flag}={}", p.display()));
            }
        }
        let child = cmd.spawn().expect("start etcd");
        let mut e = Etcd {
            child,
            url,
            ctl_tls,
        };
        let start = Instant::now();
        loop {
            if e.ctl(&["endpoint", "health"]).status.success() {
                return e;
            }
            if let Some(st) = e.child.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                panic!("etcd exited ({st}) before it was healthy:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not become healthy in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs etcdctl (v3) against it.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .args(&self.ctl_tls)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// `etcdctl put KEY` with the value on standard input (values too long for argv).
    fn put(&self, key: &str, value: &[u8]) {
        let mut c = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .args(&self.ctl_tls)
            .args(["put", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run etcdctl put");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(value)
            .expect("write value");
        assert!(
            c.wait().expect("wait").success(),
            "etcdctl put {key} failed"
        );
    }

    /// The value of `key`.
    fn get(&self, key: &str) -> Vec<u8> {
        let out = self.ctl(&["get", key, "--print-value-only"]);
        assert!(out.status.success(), "etcdctl get {key}: {out:?}");
        let mut v = out.stdout;
        // etcdctl ends the value with a newline.
        assert_eq!(v.pop(), Some(b'\n'), "etcdctl get {key} output");
        v
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys and values the tests put: many small ones and a few large ones, so the
/// snapshot spans many stream messages.
fn data_set() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("/app/key{i:04}"), format!("value {i}").into_bytes()))
        .collect();
    for i in 0..3 {
        // Printable (etcdctl prints values as they are), not compressible.
        let big: Vec<u8> = random_bytes(300_000, i)
            .iter()
            .map(|b| b'a' + b % 26)
            .collect();
        v.push((format!("/big/{i}"), big));
    }
    v
}

#[test]
fn etcd_snapshot_restores_with_etcdctl_into_a_server_with_the_same_keys() {
    require(have("etcd") && have("etcdctl"), "etcd and etcdctl (3.4+)");
    let work = tempdir();
    let etcd = Etcd::start(&work.path().join("a"), "a", free_port(), None);
    let data = data_set();
    for (k, v) in &data {
        etcd.put(k, v);
    }
    let repo = Repo::new();
    // A first endpoint that refuses connections: the next one is tried.
    let t0 = Instant::now();
    let run = repo.cmd(&[
        "etcd",
        "backup",
        "--json",
        "--endpoints",
        &format!("http://127.0.0.1:{},{}", free_port(), etcd.url),
        "--name",
        "test",
    ]);
    let took = t0.elapsed();
    run.assert_ok();
    let out = run.json();
    let id = out["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string();
    assert_eq!(out["path"], "/etcd/test/snapshot.db", "{run}");
    assert_eq!(out["member"]["member_name"], "a", "{run}");
    let bytes = out["bytes"].as_u64().expect("bytes");
    eprintln!("etcd snapshot: {bytes} bytes through the maintenance API in {took:?}");
    let snaps = repo.snapshots::<&str>(&[]);
    assert_eq!(snaps.len(), 1);
    let tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tags.contains(&"kind=etcd"), "{tags:?}");
    assert!(tags.contains(&"etcd-member=a"), "{tags:?}");

    // Restore the file, then the etcd data directory from it, and read the keys back from
    // a new server on it.
    let target = work.path().join("restore");
    repo.restore(&id, &target, &[] as &[&str]).assert_ok();
    let file = target.join("etcd/test/snapshot.db");
    assert_eq!(
        std::fs::metadata(&file).expect("restored file").len(),
        bytes
    );
    let peer = free_port();
    let restored_dir = work.path().join("b");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored_dir)
        .args(["--name", "b"])
        .args(["--initial-cluster", &format!("b=http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .output()
        .expect("run etcdctl snapshot restore");
    assert!(
        out.status.success(),
        "etcdctl snapshot restore (which checks the sha256) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(etcd);
    let b = Etcd::start(&restored_dir, "b", peer, None);
    for (k, v) in &data {
        assert!(b.get(k) == *v, "key {k} differs after the restore");
    }
}

/// A fake etcd gateway: answers status and member list, and the snapshot call with
/// `body`. Runs until the test process ends.
fn fake_gateway(body: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut req_body = vec![0u8; len];
            let _ = r.read_exact(&mut req_body);
            let answer: Vec<u8> = if first.contains("/v3/maintenance/status") {
                br#"{"header":{"cluster_id":"7","member_id":"9"},"version":"3.4.23","dbSize":"1000"}"#.to_vec()
            } else if first.contains("/v3/cluster/member/list") {
                br#"{"members":[{"ID":"9","name":"fake"}]}"#.to_vec()
            } else {
                body.clone()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.len()
            );
            let _ = s.write_all(&answer);
        }
    });
    url
}

#[test]
fn a_broken_snapshot_stream_writes_no_snapshot_and_says_why() {
    require(have("etcd") && have("etcdctl"), "etcd and etcdctl (3.4+)");
    require(have("curl"), "curl");
    let work = tempdir();
    let etcd = Etcd::start(&work.path().join("a"), "a", free_port(), None);
    for (k, v) in data_set() {
        etcd.put(&k, &v);
    }
    // The real stream, as etcd's gateway sends it.
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-d", "{}"])
        .arg(format!("{}/v3/maintenance/snapshot", etcd.url))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {out:?}");
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        lines.len() > 10,
        "the snapshot should span many messages: {}",
        lines.len()
    );
    let join = |ls: &[&[u8]]| -> Vec<u8> {
        let mut v = Vec::new();
        for l in ls {
            v.extend_from_slice(l);
            v.push(b'\n');
        }
        v
    };
    let repo = Repo::new();
    // The untouched stream, served by the fake gateway, is accepted: the fakes below
    // differ from it only in their damage.
    let good = fake_gateway(join(&lines));
    repo.cmd(&["etcd", "backup", "--endpoints", &good])
        .assert_ok();
    assert_eq!(repo.snapshots::<&str>(&[]).len(), 1);

    // Half the messages.
    let half = fake_gateway(join(&lines[..lines.len() / 2]));
    // All but the sha256 trailer.
    let no_trailer = fake_gateway(join(&lines[..lines.len() - 1]));
    // One byte of content changed (a base64 character of the third message).
    let mut corrupt: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    let at = corrupt[2]
        .windows(8)
        .position(|w| w == b"\"blob\":\"")
        .expect("a blob")
        + 20;
    corrupt[2][at] = if corrupt[2][at] == b'A' { b'B' } else { b'A' };
    let corrupt = fake_gateway(join(&corrupt.iter().map(|l| &l[..]).collect::<Vec<_>>()));
    // An error message after some data.
    let mut with_error = join(&lines[..3]);
    with_error
        .extend_from_slice(br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: leader changed","http_status":"Service Unavailable"}}"#);
    with_error.push(b'\n');
    let with_error = fake_gateway(with_error);

    for (url, says) in [
        (&half, "ended early"),
        (&no_trailer, "integrity check"),
        (&corrupt, "integrity check"),
        (&with_error, "leader changed"),
    ] {
        let run = repo.cmd(&["etcd", "backup", "--endpoints", url]);
        run.assert_code(exit::FAILURE);
        run.assert_stderr_contains("no snapshot was written");
        run.assert_stderr_contains(says);
        assert_eq!(
            repo.snapshots::<&str>(&[]).len(),
            1,
            "a snapshot was written from a broken stream\n{run}"
        );
    }
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
fn make_tls(dir: &Path) -> Tls {
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write ext");
    // The client certificate has no common name: with authentication on, etcd's gateway
    // refuses certificates that carry one ("CommonName of client sending a request against
    // gateway will be ignored"), since it cannot use it as the user.
    for (who, subject) in [("server", "/CN=server"), ("client", "/O=holdfast-client")] {
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{who}-key.pem"),
            "-out",
            &format!("{who}.csr"),
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}.pem"),
        ]);
    }
    Tls {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    }
}

#[test]
fn etcd_backup_over_tls_with_client_certificates_and_a_user() {
    require(have("etcd") && have("etcdctl"), "etcd and etcdctl (3.4+)");
    require(have("openssl"), "openssl (to make test certificates)");
    let work = tempdir();
    let tls = make_tls(work.path());
    let etcd = Etcd::start(&work.path().join("a"), "a", free_port(), Some(&tls));
    etcd.put("/secure/key", b"secure value");
    // Authentication on: a root user with a password.
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"][..]] {
        let out = etcd.ctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let repo = Repo::new();
    let tls_args = |cert: bool| {
        let mut a = vec![
            "etcd".to_string(),
            "backup".into(),
            "--endpoints".into(),
            etcd.url.clone(),
            "--cacert".into(),
            tls.ca.display().to_string(),
        ];
        if cert {
            a.extend([
                "--cert".into(),
                tls.client_cert.display().to_string(),
                "--key".into(),
                tls.client_key.display().to_string(),
            ]);
        }
        a
    };
    // Without a client certificate the server refuses the connection.
    let run = repo.cmd(&tls_args(false));
    run.assert_code(exit::FAILURE);
    run.assert_stderr_contains(&etcd.url);
    // With it but without a user, etcd refuses the calls (3.4's gateway will not take the
    // certificate's common name as the user).
    let run = repo.cmd(&tls_args(true));
    run.assert_code(exit::FAILURE);
    run.assert_stderr_contains_any(&[
        "CommonName of client",
        "user name is empty",
        "permission denied",
    ]);
    // A wrong password.
    let mut a = tls_args(true);
    a.extend(["--user".into(), "root:wrong".into()]);
    let run = repo.cmd(&a);
    run.assert_code(exit::FAILURE);
    run.assert_stderr_contains("authentication failed");
    assert!(repo.snapshots::<&str>(&[]).is_empty());
    // Certificate and user: a snapshot, which etcdctl accepts.
    let mut a = tls_args(true);
    a.extend(["--user".into(), "root".into()]);
    let run = repo.cmd_env(&a, &[("HOLDFAST_ETCD_PASSWORD", "rootpw".as_ref())]);
    run.assert_ok();
    let target = work.path().join("restore");
    repo.restore("latest", &target, &[] as &[&str]).assert_ok();
    let files = list_tree(&target.join("etcd"));
    let db = files
        .iter()
        .find(|p| p.ends_with("snapshot.db"))
        .unwrap_or_else(|| panic!("no snapshot.db restored: {files:?}"));
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(target.join("etcd").join(db))
        .output()
        .expect("etcdctl snapshot status");
    assert!(out.status.success(), "etcdctl snapshot status: {out:?}");
}

#[test]
fn test_etcd_is_stopped_when_an_assertion_fails() {
    require(have("etcd") && have("etcdctl"), "etcd and etcdctl (3.4+)");
    let work = tempdir();
    let data = work.path().join("a");
    let url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let u2 = url.clone();
    let outcome = std::panic::catch_unwind(move || {
        let etcd = Etcd::start(&data, "a", free_port(), None);
        *u2.lock().expect("lock") = etcd.url.clone();
        panic!("an assertion that fails while etcd runs");
    });
    assert!(outcome.is_err());
    let url = url.lock().expect("lock").clone();
    let addr = url.trim_start_matches("http://");
    assert!(!addr.is_empty());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "etcd at {url} still runs after the failed test"
    );
}
