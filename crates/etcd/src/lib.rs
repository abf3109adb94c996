//! etcd snapshots through the v3 maintenance API, as a byte stream a backup can record.
//!
//! etcd serves its gRPC API also as JSON over HTTP (the grpc-gateway on the client URL):
//! `POST /v3/maintenance/snapshot` with the body `{}` streams newline-delimited messages
//! `{"result":{"remaining_bytes":"N","blob":"<base64>"}}` (zero values are left out, so the
//! last messages carry no `remaining_bytes`), or `{"error":...}` when the server fails
//! mid-way. Using it needs no gRPC or protobuf toolchain, only HTTP(S) with the client
//! certificates etcdctl would use.
//!
//! A snapshot ends with the sha256 of all the bytes before it (`etcdctl snapshot restore`
//! checks it). [`SnapshotStream`] checks it while streaming: it holds back the last 32
//! bytes, hashes the rest as it hands them out, and at the end of the stream hands out the
//! trailer only if it matches. A stream that ends early, carries an error or fails the
//! check therefore fails the read before its end: a backup reading it writes no snapshot.
//! Memory stays bounded by one message (etcd sends 32 KiB chunks).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Length of the sha256 trailer of an etcd snapshot.
const TRAILER_LEN: usize = 32;

/// The longest message line accepted from the stream: etcd sends 32 KiB chunks (about
/// 44 KiB as base64 in JSON); anything far larger is not a snapshot stream.
const MAX_MESSAGE: u64 = 16 * 1024 * 1024;

/// The most of an error response body kept for a message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// What went wrong talking to etcd; each names the endpoint or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    ReadFile {
        /// Which file (`CA certificate`, `client certificate`, `client key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file holds nothing usable.
    #[error("the {what} {} holds no usable PEM item: {reason}", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options cannot work (no endpoint, a certificate without its key).
    #[error("{0}")]
    Usage(String),
    /// The request did not get an answer (connection refused, TLS failure, timeout).
    #[error("etcd at {endpoint}: {call}: {message}")]
    Request {
        /// The endpoint's URL.
        endpoint: String,
        /// The API call (`/v3/maintenance/status`).
        call: &'static str,
        /// What failed.
        message: String,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoint}: {call} failed: {message}")]
    Server {
        /// The endpoint's URL.
        endpoint: String,
        /// The API call.
        call: &'static str,
        /// etcd's message (and the HTTP status).
        message: String,
    },
    /// Every endpoint failed; each one's error, in the order tried.
    #[error("no etcd endpoint gave a snapshot: {}", join_errors(.0))]
    NoEndpoint(Vec<EtcdError>),
    /// The snapshot stream ended before etcd's announced end.
    #[error(
        "the snapshot stream from {endpoint} ended early after {received} bytes, {remaining} \
         bytes short of the snapshot etcd announced"
    )]
    Truncated {
        /// The endpoint's URL.
        endpoint: String,
        /// Snapshot bytes received.
        received: u64,
        /// Bytes etcd still had to send.
        remaining: u64,
    },
    /// The snapshot's sha256 trailer does not match its content.
    #[error(
        "the snapshot from {endpoint} fails its integrity check after {received} bytes: \
         {reason} (the stream was truncated or corrupted)"
    )]
    Integrity {
        /// The endpoint's URL.
        endpoint: String,
        /// Snapshot bytes received (trailer included).
        received: u64,
        /// What does not match.
        reason: String,
    },
    /// The stream carried something that is not a snapshot message.
    #[error(
        "the snapshot stream from {endpoint} is not understood after {received} bytes: {reason}"
    )]
    Protocol {
        /// The endpoint's URL.
        endpoint: String,
        /// Snapshot bytes received before it.
        received: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream itself failed (connection reset, timeout).
    #[error("reading the snapshot stream from {endpoint} after {received} bytes: {source}")]
    Stream {
        /// The endpoint's URL.
        endpoint: String,
        /// Snapshot bytes received before it.
        received: u64,
        /// The read error.
        source: std::io::Error,
    },
}

/// `a; b; c` of several errors.
fn join_errors(v: &[EtcdError]) -> String {
    v.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result of this crate's calls.
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// TLS files, as etcdctl takes them (`--cacert --cert --key`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) the server's certificate must chain to; the Mozilla roots
    /// when not given.
    pub cacert: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is given (endpoints without a scheme then mean `https://`).
    pub fn any(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// A user name and password for etcd's authentication (`/v3/auth/authenticate`).
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, even in debug output.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Client URLs, tried in order (`https://host:2379`; without a scheme, `https://` when
    /// TLS files are given, else `http://`).
    pub endpoints: Vec<String>,
    /// TLS files.
    pub tls: TlsFiles,
    /// Authentication, if the cluster has it enabled.
    pub credentials: Option<Credentials>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long one read may wait for data (the snapshot as a whole has no limit).
    pub read_timeout: Duration,
}

impl ClientOptions {
    /// Options for these endpoints, without TLS files or authentication, with 10 s to
    /// connect and 60 s per read.
    pub fn new(endpoints: Vec<String>) -> ClientOptions {
        ClientOptions {
            endpoints,
            tls: TlsFiles::default(),
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The member a snapshot comes from, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// The endpoint that answered.
    pub endpoint: String,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The member's ID.
    pub member_id: u64,
    /// The member's name (`--name` of etcd), if the member list has it.
    pub member_name: Option<String>,
    /// etcd's version.
    pub version: String,
    /// The size of its database file, bytes (about the snapshot's size).
    pub db_size: u64,
}

/// A client of one etcd cluster's JSON gateway.
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    credentials: Option<Credentials>,
}

/// Reads a PEM file's items.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<ureq::tls::PemItem<'static>>> {
    let bytes = std::fs::read(path).map_err(|source| EtcdError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let items = ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EtcdError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(items)
}

/// The certificates of a PEM file (at least one).
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let certs: Vec<_> = read_pem(what, path)?
        .into_iter()
        .filter_map(|i| match i {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(EtcdError::Pem {
            what,
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn read_key(path: &Path) -> Result<ureq::tls::PrivateKey<'static>> {
    const WHAT: &str = "client key";
    read_pem(WHAT, path)?
        .into_iter()
        .find_map(|i| match i {
            ureq::tls::PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| EtcdError::Pem {
            what: WHAT,
            path: path.to_path_buf(),
            reason: "no PRIVATE KEY block".into(),
        })
}

/// An endpoint as a base URL: a scheme added if missing, no trailing slash.
fn normalize_endpoint(e: &str, tls: bool) -> Result<String> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err(EtcdError::Usage("an etcd endpoint is empty".into()));
    }
    if e.starts_with("http://") || e.starts_with("https://") {
        return Ok(e.to_string());
    }
    if e.contains("://") {
        return Err(EtcdError::Usage(format!(
            "the etcd endpoint {e:?} is neither http:// nor https://"
        )));
    }
    Ok(format!("{}://{e}", if tls { "https" } else { "http" }))
}

/// A number etcd's gateway writes as a string (64-bit integers) or as a number.
fn json_u64(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The message of an error document (`{"error":"...","message":"...","code":N}`, or
/// `{"error":{"message":...}}` inside a stream), or the text itself.
fn error_message(v: &serde_json::Value) -> String {
    let e = v.get("error").unwrap_or(v);
    let msg = v
        .get("message")
        .or_else(|| e.get("message"))
        .and_then(|m| m.as_str())
        .or_else(|| e.as_str());
    match msg {
        Some(m) => m.to_string(),
        None => e.to_string(),
    }
}

impl Client {
    /// A client for `opts`: reads the TLS files and checks the endpoints (nothing is
    /// contacted yet).
    pub fn new(opts: &ClientOptions) -> Result<Client> {
        if opts.endpoints.is_empty() {
            return Err(EtcdError::Usage("no etcd endpoint given".into()));
        }
        let endpoints = opts
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, opts.tls.any()))
            .collect::<Result<Vec<_>>>()?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &opts.tls.cacert {
            let certs = read_certs("CA certificate", ca)?;
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        match (&opts.tls.cert, &opts.tls.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("client certificate", cert)?;
                let key = read_key(key)?;
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
            }
            (None, None) => {}
            _ => {
                return Err(EtcdError::Usage(
                    "a client certificate needs its key, and a key its certificate (give both \
                     --cert and --key)"
                        .into(),
                ))
            }
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            // Responses are read as they come; gzip is not asked for (the feature is off).
            .max_redirects(0)
            .build()
            .new_agent();
        Ok(Client {
            agent,
            endpoints,
            credentials: opts.credentials.clone(),
        })
    }

    /// The endpoints, normalised, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends `body` to `call` on `endpoint`; on success, the response (body unread).
    fn post(
        &self,
        endpoint: &str,
        call: &'static str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.post(format!("{endpoint}{call}"));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let resp = req
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| EtcdError::Request {
                endpoint: endpoint.to_string(),
                call,
                message: e.to_string(),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        // etcd's error document, or whatever the body holds.
        let status = resp.status();
        let mut text = String::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut text);
        let message = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => error_message(&v),
            Err(_) => text.trim().to_string(),
        };
        Err(EtcdError::Server {
            endpoint: endpoint.to_string(),
            call,
            message: format!("HTTP {status}: {message}"),
        })
    }

    /// A small JSON call: the whole answer as a document.
    fn call(
        &self,
        endpoint: &str,
        call: &'static str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let resp = self.post(endpoint, call, token, body)?;
        let mut text = String::new();
        resp.into_body()
            .into_reader()
            .take(MAX_MESSAGE)
            .read_to_string(&mut text)
            .map_err(|e| EtcdError::Request {
                endpoint: endpoint.to_string(),
                call,
                message: e.to_string(),
            })?;
        serde_json::from_str(&text).map_err(|e| EtcdError::Server {
            endpoint: endpoint.to_string(),
            call,
            message: format!("the answer is not JSON: {e}"),
        })
    }

    /// A token for the credentials, if any (`/v3/auth/authenticate`).
    fn token(&self, endpoint: &str) -> Result<Option<String>> {
        const CALL: &str = "/v3/auth/authenticate";
        let Some(c) = &self.credentials else {
            return Ok(None);
        };
        let v = self.call(
            endpoint,
            CALL,
            None,
            &serde_json::json!({"name": c.user, "password": c.password}),
        )?;
        match v.get("token").and_then(|t| t.as_str()) {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(EtcdError::Server {
                endpoint: endpoint.to_string(),
                call: CALL,
                message: "the answer holds no token".into(),
            }),
        }
    }

    /// The status of the member behind `endpoint`, and its name from the member list.
    fn member(&self, endpoint: &str, token: Option<&str>) -> Result<MemberInfo> {
        const CALL: &str = "/v3/maintenance/status";
        let st = self.call(endpoint, CALL, token, &serde_json::json!({}))?;
        let header = st.get("header");
        let (Some(cluster_id), Some(member_id)) = (
            json_u64(header.and_then(|h| h.get("cluster_id"))),
            json_u64(header.and_then(|h| h.get("member_id"))),
        ) else {
            return Err(EtcdError::Server {
                endpoint: endpoint.to_string(),
                call: CALL,
                message: format!("the status has no cluster and member ID: {st}"),
            });
        };
        let members = self.call(
            endpoint,
            "/v3/cluster/member/list",
            token,
            &serde_json::json!({}),
        )?;
        let member_name = members
            .get("members")
            .and_then(|m| m.as_array())
            .and_then(|ms| {
                ms.iter()
                    .find(|m| json_u64(m.get("ID")) == Some(member_id))
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .filter(|n| !n.is_empty())
                    .map(String::from)
            });
        Ok(MemberInfo {
            endpoint: endpoint.to_string(),
            cluster_id,
            member_id,
            member_name,
            version: st
                .get("version")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            db_size: json_u64(st.get("dbSize")).unwrap_or(0),
        })
    }

    /// Starts a snapshot on the first endpoint that answers (authenticating first when
    /// credentials are given): the member it comes from and the stream of its bytes.
    /// Endpoints are tried only until a stream starts: a stream that fails later fails the
    /// read (a snapshot is not resumable).
    pub fn snapshot(&self) -> Result<(MemberInfo, SnapshotStream)> {
        const CALL: &str = "/v3/maintenance/snapshot";
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            let attempt = (|| {
                let token = self.token(endpoint)?;
                let member = self.member(endpoint, token.as_deref())?;
                let resp = self.post(endpoint, CALL, token.as_deref(), &serde_json::json!({}))?;
                let body = resp.into_body().into_reader();
                Ok((
                    member,
                    SnapshotStream::new(endpoint.clone(), BufReader::new(body)),
                ))
            })();
            match attempt {
                Ok(x) => return Ok(x),
                Err(e) => errors.push(e),
            }
        }
        Err(EtcdError::NoEndpoint(errors))
    }
}

/// One message of the snapshot stream.
#[derive(serde::Deserialize)]
struct Message {
    /// A chunk.
    result: Option<Chunk>,
    /// Or an error.
    error: Option<serde_json::Value>,
}

/// A chunk of the snapshot.
#[derive(serde::Deserialize)]
struct Chunk {
    /// Bytes still to come after this chunk (left out when 0).
    remaining_bytes: Option<serde_json::Value>,
    /// The chunk, base64 (left out when empty).
    #[serde(default)]
    blob: String,
}

/// The raw bytes of an etcd snapshot, decoded from the gateway's message stream and
/// checked against its sha256 trailer as they are read (see the crate documentation).
/// Reads fail with an [`EtcdError`] (as an `io::Error`) before the end if the stream ends
/// early, carries an error or does not match its trailer.
pub struct SnapshotStream {
    endpoint: String,
    src: Box<dyn BufRead + Send>,
    /// Decoded bytes ready to hand out, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The last bytes received, not yet hashed or handed out: the trailer, at the end.
    held: Vec<u8>,
    hasher: Sha256,
    /// Bytes received, trailer included.
    received: u64,
    /// `remaining_bytes` of the last message.
    remaining: u64,
    /// Messages with a chunk.
    chunks: u64,
    /// The line being read.
    line: Vec<u8>,
    /// Every byte was handed out, trailer checked.
    finished: bool,
    /// The error that ended the stream, repeated on later reads.
    failed: Option<String>,
}

impl SnapshotStream {
    /// A stream decoding the messages `src` gives (the body of a snapshot call to
    /// `endpoint`, named in errors).
    pub fn new(endpoint: String, src: impl BufRead + Send + 'static) -> SnapshotStream {
        SnapshotStream {
            endpoint,
            src: Box::new(src),
            out: Vec::new(),
            out_pos: 0,
            held: Vec::with_capacity(TRAILER_LEN * 2),
            hasher: Sha256::new(),
            received: 0,
            remaining: 0,
            chunks: 0,
            line: Vec::new(),
            finished: false,
            failed: None,
        }
    }

    /// Snapshot bytes received so far (the trailer included).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes in decoded bytes: all but the last [`TRAILER_LEN`] received become ready and
    /// are hashed.
    fn take_in(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        self.held.extend_from_slice(bytes);
        if self.held.len() > TRAILER_LEN {
            let cut = self.held.len() - TRAILER_LEN;
            self.out.clear();
            self.out.extend_from_slice(&self.held[..cut]);
            self.out_pos = 0;
            self.hasher.update(&self.out);
            self.held.drain(..cut);
        }
    }

    /// Reads the next message and takes in its bytes, or ends the stream.
    fn advance(&mut self) -> Result<()> {
        self.line.clear();
        let n = (&mut self.src)
            .take(MAX_MESSAGE)
            .read_until(b'\n', &mut self.line)
            .map_err(|source| EtcdError::Stream {
                endpoint: self.endpoint.clone(),
                received: self.received,
                source,
            })?;
        if n == 0 {
            return self.end();
        }
        if n as u64 == MAX_MESSAGE && self.line.last() != Some(&b'\n') {
            return Err(self.protocol(format!("a message longer than {MAX_MESSAGE} bytes")));
        }
        let text = self.line.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        let msg: Message = serde_json::from_slice(text)
            .map_err(|e| self.protocol(format!("a message that is not JSON ({e})")))?;
        if let Some(e) = msg.error {
            return Err(EtcdError::Server {
                endpoint: self.endpoint.clone(),
                call: "/v3/maintenance/snapshot",
                message: format!(
                    "the stream failed after {} bytes: {}",
                    self.received,
                    error_message(&serde_json::json!({ "error": e }))
                ),
            });
        }
        let Some(chunk) = msg.result else {
            return Err(self.protocol("a message with neither result nor error".into()));
        };
        self.remaining = match &chunk.remaining_bytes {
            None => 0,
            v => json_u64(v.as_ref())
                .ok_or_else(|| self.protocol(format!("remaining_bytes {v:?} is not a number")))?,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(chunk.blob.as_bytes())
            .map_err(|e| self.protocol(format!("a blob that is not base64 ({e})")))?;
        self.chunks += 1;
        self.take_in(&bytes);
        Ok(())
    }

    /// The end of the message stream: complete only if etcd announced nothing more and the
    /// trailer matches; then the trailer is ready.
    fn end(&mut self) -> Result<()> {
        if self.remaining > 0 {
            return Err(EtcdError::Truncated {
                endpoint: self.endpoint.clone(),
                received: self.received,
                remaining: self.remaining,
            });
        }
        if self.chunks == 0 {
            return Err(EtcdError::Truncated {
                endpoint: self.endpoint.clone(),
                received: 0,
                remaining: 0,
            });
        }
        if self.held.len() < TRAILER_LEN {
            return Err(self.integrity(format!(
                "{} bytes are too few for a snapshot and its sha256",
                self.received
            )));
        }
        let digest = std::mem::take(&mut self.hasher).finalize();
        if digest.as_slice() != self.held.as_slice() {
            return Err(self.integrity(format!(
                "the sha256 of the first {} bytes is {}, the trailer says {}",
                self.received - TRAILER_LEN as u64,
                hex(digest.as_slice()),
                hex(&self.held)
            )));
        }
        self.out = std::mem::take(&mut self.held);
        self.out_pos = 0;
        self.finished = true;
        Ok(())
    }

    fn protocol(&self, reason: String) -> EtcdError {
        EtcdError::Protocol {
            endpoint: self.endpoint.clone(),
            received: self.received,
            reason,
        }
    }

    fn integrity(&self, reason: String) -> EtcdError {
        EtcdError::Integrity {
            endpoint: self.endpoint.clone(),
            received: self.received,
            reason,
        }
    }
}

/// Lowercase hex of bytes.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Read for SnapshotStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(e) = &self.failed {
                return Err(std::io::Error::other(e.clone()));
            }
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.advance() {
                self.failed = Some(e.to_string());
                return Err(std::io::Error::other(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of `len` bytes of content and its trailer.
    fn snapshot(len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let digest = Sha256::digest(&data);
        data.extend_from_slice(&digest);
        data
    }

    /// The gateway's messages for `data` in chunks of `chunk` bytes, the trailer in its own
    /// message as etcd sends it.
    fn messages(data: &[u8], chunk: usize) -> Vec<String> {
        let (content, trailer) = data.split_at(data.len() - TRAILER_LEN);
        let mut out = Vec::new();
        let mut sent = 0;
        for c in content.chunks(chunk) {
            sent += c.len();
            let remaining = content.len() - sent;
            let b64 = base64::engine::general_purpose::STANDARD.encode(c);
            out.push(if remaining > 0 {
                format!(r#"{{"result":{{"remaining_bytes":"{remaining}","blob":"{b64}"}}}}"#)
            } else {
                format!(r#"{{"result":{{"blob":"{b64}"}}}}"#)
            });
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(trailer);
        out.push(format!(r#"{{"result":{{"blob":"{b64}"}}}}"#));
        out
    }

    fn read_all(lines: &[String]) -> std::io::Result<Vec<u8>> {
        let body = lines.join("\n") + "\n";
        let mut s = SnapshotStream::new("http://e".into(), std::io::Cursor::new(body));
        let mut out = Vec::new();
        // Small reads, so that message boundaries fall inside reads too.
        let mut buf = [0u8; 1000];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn whole_stream_decodes_to_the_snapshot() {
        let data = snapshot(100_000);
        assert_eq!(read_all(&messages(&data, 32 * 1024)).unwrap(), data);
        // Chunks smaller than the trailer.
        let small = snapshot(100);
        assert_eq!(read_all(&messages(&small, 7)).unwrap(), small);
    }

    #[test]
    fn a_stream_cut_short_fails_and_says_how_much_is_missing() {
        let data = snapshot(100_000);
        let m = messages(&data, 32 * 1024);
        let e = read_all(&m[..2]).unwrap_err().to_string();
        assert!(
            e.contains("ended early") && e.contains("bytes short"),
            "{e}"
        );
        // Cut after the last chunk, before the trailer: the sha256 check catches it.
        let e = read_all(&m[..m.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("integrity check"), "{e}");
        let e = read_all(&[]).unwrap_err().to_string();
        assert!(e.contains("ended early"), "{e}");
    }

    #[test]
    fn corrupted_content_fails_the_integrity_check() {
        let mut data = snapshot(50_000);
        data[1234] ^= 1;
        let e = read_all(&messages(&data, 32 * 1024))
            .unwrap_err()
            .to_string();
        assert!(e.contains("integrity check") && e.contains("sha256"), "{e}");
    }

    #[test]
    fn an_error_message_fails_with_its_text() {
        let data = snapshot(100_000);
        let mut m = messages(&data, 32 * 1024);
        m.truncate(1);
        m.push(r#"{"error":{"grpc_code":2,"http_code":500,"message":"etcdserver: boom"}}"#.into());
        let e = read_all(&m).unwrap_err().to_string();
        assert!(e.contains("etcdserver: boom"), "{e}");
        m[1] = "not json".into();
        let e = read_all(&m).unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("h:2379", false).unwrap(),
            "http://h:2379"
        );
        assert_eq!(
            normalize_endpoint("h:2379/", true).unwrap(),
            "https://h:2379"
        );
        assert_eq!(
            normalize_endpoint("https://h:1", false).unwrap(),
            "https://h:1"
        );
        assert!(normalize_endpoint("ftp://h", false).is_err());
        assert!(normalize_endpoint(" ", false).is_err());
    }

    #[test]
    fn half_a_client_certificate_is_refused() {
        let mut o = ClientOptions::new(vec!["h:1".into()]);
        o.tls.cert = Some("/nonexistent".into());
        let e = Client::new(&o).err().expect("refused").to_string();
        assert!(e.contains("--key"), "{e}");
        assert!(Client::new(&ClientOptions::new(vec![])).is_err());
    }
}
