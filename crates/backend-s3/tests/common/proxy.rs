//! A TCP proxy on 127.0.0.1 between holdfast and an S3 server that injects faults.
//!
//! Every request is forced onto a connection of its own (`Connection: close`), so a fault
//! chosen per connection is a fault per request. Faults, chosen at random from a seed:
//! * `503`/`500`: a canned S3 error (SlowDown / InternalError) instead of forwarding;
//! * `drop`: the connection is closed as soon as the request head has arrived;
//! * `cut-request`: the request is forwarded only partly, then both sides are closed;
//! * `cut-response`: the response is forwarded only partly (somewhere in its first 96 KiB);
//! * `stall`: the response is held back for [`FaultPlan::stall`] before it is forwarded;
//! * `stall-mid-response`: part of the response, a pause, then the rest.
//!
//! [`Mode::CorruptUploads`] instead flips one byte in the body of every PUT (a request that
//! must then be rejected by the server). All loops are bounded by socket timeouts and EOF.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Probabilities (per request) of each fault, and the stall length.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Seed of the fault choices.
    pub seed: u64,
    /// Canned 503 SlowDown.
    pub p503: f64,
    /// Canned 500 InternalError.
    pub p500: f64,
    /// Connection closed after the request head.
    pub drop: f64,
    /// Request body cut short.
    pub cut_request: f64,
    /// Response cut short.
    pub cut_response: f64,
    /// Response held back before it starts.
    pub stall: f64,
    /// Response paused in the middle.
    pub stall_mid: f64,
    /// How long a stall lasts.
    pub stall_for: Duration,
}

impl FaultPlan {
    /// About one request in five fails in some way.
    pub fn moderate(seed: u64, stall_for: Duration) -> FaultPlan {
        FaultPlan {
            seed,
            p503: 0.05,
            p500: 0.03,
            drop: 0.03,
            cut_request: 0.03,
            cut_response: 0.04,
            stall: 0.015,
            stall_mid: 0.015,
            stall_for,
        }
    }

    /// About two requests in five fail in some way.
    pub fn heavy(seed: u64, stall_for: Duration) -> FaultPlan {
        let m = FaultPlan::moderate(seed, stall_for);
        FaultPlan {
            p503: 2.0 * m.p503,
            p500: 2.0 * m.p500,
            drop: 2.0 * m.drop,
            cut_request: 2.0 * m.cut_request,
            cut_response: 2.0 * m.cut_response,
            stall: 2.0 * m.stall,
            stall_mid: 2.0 * m.stall_mid,
            ..m
        }
    }

    /// Every request gets a 503.
    pub fn always_503() -> FaultPlan {
        FaultPlan {
            seed: 0,
            p503: 1.0,
            p500: 0.0,
            drop: 0.0,
            cut_request: 0.0,
            cut_response: 0.0,
            stall: 0.0,
            stall_mid: 0.0,
            stall_for: Duration::ZERO,
        }
    }
}

/// What the proxy does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Forward everything (counting requests).
    Pass,
    /// Inject faults.
    Faults(FaultPlan),
    /// Flip one byte of every PUT body.
    CorruptUploads,
    /// Answer 503 SlowDown to every request with this method whose request target (path
    /// and query) contains `target` (e.g. `POST` + `uploadId=`: every
    /// CompleteMultipartUpload); forward the rest.
    Reject {
        /// The HTTP method.
        method: &'static str,
        /// A substring of the request target.
        target: &'static str,
    },
    /// Forward every request, but hold back the response of the first `first` requests
    /// matching `method` and `target` (as for [`Mode::Reject`]) for `stall_for` (the
    /// server has acted on them; the client times out).
    StallMatching {
        /// The HTTP method.
        method: &'static str,
        /// A substring of the request target.
        target: &'static str,
        /// How many matching requests are stalled.
        first: u64,
        /// For how long.
        stall_for: Duration,
    },
}

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests seen (heads read).
    pub requests: AtomicU64,
    /// Faults injected, by name.
    pub faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests by method.
    pub methods: Mutex<BTreeMap<String, u64>>,
    /// Every request as "METHOD TARGET", in arrival order.
    pub log: Mutex<Vec<String>>,
    /// Requests that matched [`Mode::StallMatching`].
    pub matched: AtomicU64,
}

impl Stats {
    fn fault(&self, name: &'static str) {
        *self.faults.lock().unwrap().entry(name).or_default() += 1;
    }

    /// Total faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.lock().unwrap().values().sum()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} requests {:?}, faults {:?}",
            self.requests.load(Ordering::Relaxed),
            self.methods.lock().unwrap(),
            self.faults.lock().unwrap()
        )
    }
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(120);

impl Proxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str, mode: Mode) -> Proxy {
        let up: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream:?} is not http://IP:PORT: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(match &mode {
                Mode::Faults(p) => p.seed,
                _ => 0,
            });
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let conn_seed: u64 = rng.gen();
                        let (mode, st) = (mode.clone(), st.clone());
                        std::thread::spawn(move || {
                            let _ = handle(client, up, &mode, &st, conn_seed);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            addr,
            stats,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads up to the end of the request head; returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > 256 * 1024 {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with any Connection/Keep-Alive headers replaced by `Connection: close`; also
/// returns the method, the request target and Content-Length.
fn rewrite_head(head: &[u8]) -> (Vec<u8>, String, String, u64) {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut method = String::new();
    let mut target = String::new();
    let mut len = 0u64;
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i == 0 {
            let mut words = line.split(' ');
            method = words.next().unwrap_or("").to_string();
            target = words.next().unwrap_or("").to_string();
        } else {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
                continue;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    (out.into_bytes(), method, target, len)
}

fn canned(status: &str, code: &str, head_only: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Forward,
    Reply503,
    Reply500,
    Drop,
    CutRequest(u64),
    CutResponse(u64),
    Stall,
    StallMid(u64),
    Corrupt(u64),
}

fn choose(
    mode: &Mode,
    stats: &Stats,
    rng: &mut StdRng,
    method: &str,
    target: &str,
    body_len: u64,
) -> Action {
    match mode {
        Mode::Pass => Action::Forward,
        Mode::StallMatching {
            method: m,
            target: t,
            first,
            ..
        } => {
            if method == *m
                && target.contains(t)
                && stats.matched.fetch_add(1, Ordering::SeqCst) < *first
            {
                Action::Stall
            } else {
                Action::Forward
            }
        }
        Mode::Reject {
            method: m,
            target: t,
        } => {
            if method == *m && target.contains(t) {
                Action::Reply503
            } else {
                Action::Forward
            }
        }
        Mode::CorruptUploads => {
            if method == "PUT" && body_len > 0 {
                Action::Corrupt(rng.gen_range(0..body_len))
            } else {
                Action::Forward
            }
        }
        Mode::Faults(p) => {
            let x: f64 = rng.gen();
            let mut acc = 0.0;
            let mut hit = |q: f64| {
                acc += q;
                x < acc
            };
            if hit(p.p503) {
                Action::Reply503
            } else if hit(p.p500) {
                Action::Reply500
            } else if hit(p.drop) {
                Action::Drop
            } else if hit(p.cut_request) {
                if body_len > 1 {
                    Action::CutRequest(rng.gen_range(0..body_len))
                } else {
                    Action::Drop
                }
            } else if hit(p.cut_response) {
                Action::CutResponse(rng.gen_range(0..96 * 1024))
            } else if hit(p.stall) {
                Action::Stall
            } else if hit(p.stall_mid) {
                Action::StallMid(rng.gen_range(0..64 * 1024))
            } else {
                Action::Forward
            }
        }
    }
}

fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: &Mode,
    stats: &Stats,
    seed: u64,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some((head, early_body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let (head, method, target, body_len) = rewrite_head(&head);
    stats.requests.fetch_add(1, Ordering::Relaxed);
    *stats
        .methods
        .lock()
        .unwrap()
        .entry(method.clone())
        .or_default() += 1;
    stats.log.lock().unwrap().push(format!("{method} {target}"));
    let mut rng = StdRng::seed_from_u64(seed);
    let action = choose(mode, stats, &mut rng, &method, &target, body_len);
    let stall_for = match mode {
        Mode::Faults(p) => p.stall_for,
        Mode::StallMatching { stall_for, .. } => *stall_for,
        _ => Duration::ZERO,
    };
    match action {
        Action::Reply503 | Action::Reply500 => {
            let (status, code, name) = match action {
                Action::Reply503 => ("503 Slow Down", "SlowDown", "503"),
                _ => ("500 Internal Server Error", "InternalError", "500"),
            };
            stats.fault(name);
            client.write_all(&canned(status, code, method == "HEAD"))?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Write);
            // Let the client finish sending so that it reads the reply instead of a reset.
            client.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut sink = [0u8; 65536];
            let mut left = body_len.saturating_sub(early_body.len() as u64);
            while left > 0 {
                match client.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
            return Ok(());
        }
        Action::Drop => {
            stats.fault("drop");
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(10))?;
    server.set_read_timeout(Some(IO_TIMEOUT))?;
    server.set_write_timeout(Some(IO_TIMEOUT))?;
    server.write_all(&head)?;

    // Request body: client -> server, on its own thread.
    let mut c2 = client.try_clone()?;
    let mut s2 = server.try_clone()?;
    let body_action = action;
    let up = std::thread::spawn(move || -> std::io::Result<()> {
        let mut sent = 0u64;
        let mut pending = early_body;
        let mut buf = vec![0u8; 65536];
        loop {
            if pending.is_empty() {
                let n = c2.read(&mut buf)?;
                if n == 0 {
                    let _ = s2.shutdown(Shutdown::Write);
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let mut piece = std::mem::take(&mut pending);
            match body_action {
                Action::CutRequest(at) if sent + piece.len() as u64 > at => {
                    let keep = (at - sent) as usize;
                    s2.write_all(&piece[..keep])?;
                    let _ = s2.shutdown(Shutdown::Both);
                    let _ = c2.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Action::Corrupt(at) if sent <= at && at < sent + piece.len() as u64 => {
                    piece[(at - sent) as usize] ^= 0x55;
                }
                _ => {}
            }
            s2.write_all(&piece)?;
            sent += piece.len() as u64;
        }
    });
    match action {
        Action::CutRequest(_) => stats.fault("cut-request"),
        Action::Corrupt(_) => stats.fault("corrupt-upload"),
        _ => {}
    }

    // Response: server -> client.
    let mut forwarded = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut stalled = false;
    if let Action::Stall = action {
        stats.fault("stall");
        std::thread::sleep(stall_for);
    }
    let result = loop {
        let n = match server.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let mut piece = &buf[..n];
        match action {
            Action::CutResponse(at) if forwarded + n as u64 > at => {
                stats.fault("cut-response");
                piece = &buf[..(at - forwarded) as usize];
                let _ = client.write_all(piece);
                break Ok(());
            }
            Action::StallMid(at) if !stalled && forwarded + n as u64 > at => {
                stalled = true;
                stats.fault("stall-mid-response");
                let k = (at - forwarded) as usize;
                if client.write_all(&buf[..k]).is_err() {
                    break Ok(());
                }
                forwarded += k as u64;
                std::thread::sleep(stall_for);
                piece = &buf[k..n];
            }
            _ => {}
        }
        if let Err(e) = client.write_all(piece) {
            break Err(e);
        }
        forwarded += piece.len() as u64;
    };
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
    result
}
