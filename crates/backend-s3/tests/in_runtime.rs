//! The backend's synchronous methods called from inside a tokio runtime (the agent is
//! async): they must not panic ("Cannot start a runtime from within a runtime") but run
//! their requests and return the server's failure as a typed error. No S3 server is
//! needed: a local listener answers every request with HTTP 500.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use holdfast_backend_s3::{S3Backend, S3Options};
use holdfast_repo::backend::{Backend, FileKind};
use holdfast_repo::{Error, Id};

/// A listener on 127.0.0.1 that answers every request with `500 Internal Server Error`
/// and closes the connection; returns its port. The thread lives as long as the test
/// process.
fn failing_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("local_addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8192];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// A backend for that server with static credentials and few, quick retries.
fn backend(port: u16) -> S3Backend {
    let options = S3Options {
        region: Some("us-east-1".into()),
        credentials: Some(("AK".into(), "SK".into())),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(5),
        ..S3Options::default()
    };
    S3Backend::new(&format!("s3:http://127.0.0.1:{port}/bucket/repo"), options)
        .expect("a backend with static credentials sends no request when made")
}

/// Lists and reads through the backend on the calling thread; both fail with the server's
/// error, typed.
fn list_and_read(b: &S3Backend) {
    match b.list(FileKind::Snapshot) {
        Err(Error::Io { .. }) => {}
        other => panic!("list: expected an I/O error for HTTP 500, got {other:?}"),
    }
    match b.read(FileKind::Snapshot, &Id([7; 32])) {
        Err(Error::Io { .. }) => {}
        other => panic!("read: expected an I/O error for HTTP 500, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_calls_inside_a_multi_thread_runtime() {
    let b = backend(failing_server());
    list_and_read(&b);
    // And from a blocking thread of that runtime, as async callers are told to.
    let b = std::sync::Arc::new(b);
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || list_and_read(&b2))
        .await
        .expect("no panic");
    drop(b);
}

#[tokio::test]
async fn sync_calls_inside_a_current_thread_runtime() {
    let b = backend(failing_server());
    list_and_read(&b);
    // Dropped inside the runtime too.
    drop(b);
}

#[test]
fn sync_calls_outside_any_runtime() {
    let b = backend(failing_server());
    list_and_read(&b);
}
