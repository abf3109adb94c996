//! S3 storage for holdfast repositories, on aws-sdk-s3.
//!
//! [`S3Backend`] implements the repository's [`Backend`] interface over any S3 server: Ceph
//! RADOS Gateway, MinIO, moto, AWS. Locations are `s3:http://HOST:PORT/BUCKET/PREFIX`,
//! `s3:https://...` (custom endpoints, path-style addressing) and `s3:BUCKET/PREFIX` (AWS
//! with its default endpoint resolution); see [`S3Location`]. Credentials come from the
//! standard AWS chain (environment variables, profiles, ..., instance metadata), resolved
//! when the backend is made, or from [`S3Options::credentials`].
//!
//! # Layout
//! A repository file `kind/name` (as [`FileKind::path`] names it, the same layout as a local
//! repository) is the object `PREFIX/kind/name`. Listing returns only canonical names (64
//! lowercase hex digits at the right place); anything else under the prefix is ignored.
//!
//! # Guarantees
//! * **Complete objects only.** A small object is one `PutObject` with `Content-MD5`: the
//!   server stores it only if the bytes it received hash to what we sent, and S3 makes it
//!   visible atomically. Servers that ignore `Content-MD5` (moto) are caught by the ETag
//!   they return (the MD5 of what they stored): a mismatch is retried, and if the last
//!   attempt still stored damaged bytes the object is deleted again. Objects over
//!   [`S3Options::multipart_threshold`] are uploaded in parts, each with its own
//!   `Content-MD5` and ETag check; the object appears only when `CompleteMultipartUpload`
//!   succeeds, and any failure aborts the upload so that no parts are left behind. A
//!   completion whose response was lost or unreadable is recognised by the object's
//!   multipart ETag (MD5 of the parts' MD5s) and length. `CreateMultipartUpload` is retried
//!   here rather than by the SDK, and after an attempt that may have reached the server the
//!   uploads it left are aborted. Uploads that a killed process left behind are aborted by
//!   the next writer once they are a day old on the server's clock (measured against the
//!   initiation time of that writer's own upload).
//! * **Timeouts on everything.** Connect and per-attempt timeouts (SDK), plus an idle timeout
//!   while a download streams in.
//! * **Retries.** The SDK's standard retry mode with exponential backoff and full jitter
//!   retries connection failures, timeouts, 5xx and 429/SlowDown up to
//!   [`S3Options::max_attempts`] (its retry quota is disabled: the attempt limit is the
//!   limit). Failures the SDK cannot retry, a download cut halfway or stalled and an upload
//!   rejected as damaged (`BadDigest`), are retried here with the same policy.
//! * **Errors.** A missing object is [`Error::Missing`]; a range past the end of an object is
//!   [`Error::Corrupt`] ("truncated"); everything else is [`Error::Io`] naming the operation
//!   and the object, its I/O error wrapping an [`S3Error`] ([`S3Error::of`]): a missing
//!   bucket (of kind `NotFound`, which the repository reports as "no repository"),
//!   credentials the server refused, an endpoint that could not be reached, or any other
//!   failure with the server's status and error code. Messages are one line, without the
//!   SDK's debug output (`HOLDFAST_LOG=holdfast_backend_s3=debug` shows it).
//! * **Failing fast** (see `connect`): without credentials, [`S3Backend::new`] fails at once;
//!   until the server has answered once, a connection that cannot be made is tried only a
//!   few times.
//!
//! # Reads
//! Whole objects are one GET; ranges are ranged GETs. Once a pack is being read in small
//! pieces (a restore reads blob by blob), it is read in aligned blocks of
//! [`S3Options::read_ahead`] bytes instead, kept in at most [`S3Options::read_cache`] bytes
//! of memory: on a restore of many small files this turns tens of thousands of GETs into a
//! few hundred (see `readahead`).
//!
//! # Threads and signals
//! A write to a connection the server has reset raises SIGPIPE; the backend blocks it in
//! the threads that do socket I/O (see `sigpipe`), so a process that restored SIGPIPE's
//! default action is not killed by a dropped connection.
//!
//! The backend owns a small multi-threaded tokio runtime; the synchronous trait methods
//! run their requests on it and wait, so they may be called from any number of threads at
//! once, including threads that are inside another tokio runtime (see
//! [`S3Backend::block_on`]). At most [`S3Options::concurrency`] requests are in flight;
//! memory is bounded by what the callers pass in and read, plus one copy of each upload.
//!
//! # Async callers
//! The [`Backend`] trait is synchronous: every call waits for its requests. Called from an
//! async task, it works (no "Cannot start a runtime from within a runtime" panic) but the
//! task's worker thread waits with it, so an async program (the Kubernetes agent) should
//! still call the backend, and the engine above it, through
//! `tokio::task::spawn_blocking`.

#![warn(missing_docs)]

mod connect;
mod error;
mod location;
mod options;
mod readahead;
mod sigpipe;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime::client::retries::classifiers::HttpStatusCodeClassifier;
use bytes::Bytes;
use holdfast_repo::backend::{Backend, FileKind, StagedFile};
use holdfast_repo::{Error, Id, Result};
use md5::{Digest, Md5};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

pub use error::S3Error;
pub use location::S3Location;
pub use options::{LockMode, ObjectLock, S3Options, ENV_VARS};

/// HTTP statuses retried as transient (S3 sends SlowDown as 503; others use 429).
const RETRYABLE_STATUS: &[u16] = &[429, 500, 502, 503, 504];

/// Parts of one multipart upload in flight at once (within the global limit).
const PARTS_IN_FLIGHT: usize = 4;

/// Incomplete multipart uploads older than this are taken to be abandoned and aborted.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// A repository in an S3 bucket (see the crate documentation).
pub struct S3Backend {
    location: S3Location,
    /// `ENDPOINT/BUCKET/` (or `s3://BUCKET/`), prefixed to keys in messages.
    display_base: String,
    client: Client,
    options: S3Options,
    /// Bounds the requests in flight.
    limiter: Arc<Semaphore>,
    /// Blocks of packs kept for small reads (see `readahead`).
    read_ahead: readahead::ReadAhead,
    /// Whether abandoned multipart uploads have been looked for yet.
    stale_uploads_checked: AtomicBool,
    /// Describes failed requests.
    describe: Describe,
    runtime: Option<Runtime>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location.to_string())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Never blocks, and is safe even if dropped inside another runtime.
            rt.shutdown_background();
        }
    }
}

/// Runs `f` on `rt` and waits for its output, from any thread.
///
/// Outside a tokio runtime the calling thread drives the future itself
/// (`Runtime::block_on`), with SIGPIPE blocked meanwhile. Inside one (an async task, a
/// `spawn_blocking` thread: `Handle::try_current()` is Ok) calling `block_on` of any
/// runtime would panic ("Cannot start a runtime from within a runtime") or stall the
/// caller's runtime, so the future is handed to a short-lived helper thread that is in no
/// runtime, which drives it on `rt` while the caller waits for the result on a blocking
/// join. A helper thread rather than `rt.spawn`: the backend's futures borrow the backend
/// and the caller's buffers (they are not `'static`), and a scoped thread may borrow them
/// safely. The helper thread costs some tens of microseconds, small beside a request.
fn drive<F>(rt: &Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        let _guard = sigpipe::Guard::new();
        return rt.block_on(f);
    }
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("holdfast-s3-call".into())
            .spawn_scoped(scope, || {
                // The thread is ours and ends with the call: no mask to restore.
                sigpipe::block_forever();
                rt.block_on(f)
            });
        match helper {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread could be made (resource limits): nothing else can run the future
            // without blocking inside the caller's runtime.
            Err(e) => panic!("cannot start a thread for an S3 request: {e}"),
        }
    })
}

/// Why a request failed, as far as the callers care.
#[derive(Debug)]
enum FailKind {
    /// 404 for the object.
    Missing,
    /// The bucket does not exist.
    NoBucket,
    /// A range starting past the end of the object (416).
    InvalidRange,
    /// Worth another attempt here (the SDK does not retry it).
    Transient,
    /// An upload's bytes arrived damaged but were stored (the server ignored
    /// `Content-MD5`): worth another attempt, and the damaged object must not stay.
    Damaged,
    /// The server refused the credentials (the code says how).
    CredentialsRefused,
    /// No credentials could be had for the request.
    NoCredentials,
    /// No connection could be made.
    Unreachable {
        /// `connection refused`, ...
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A create-only write (`If-None-Match: *`) found the name taken (412).
    Exists,
    /// A create-only write found the name taken by an object that is not ours: it is
    /// damaged (names are the hash of the bytes).
    ExistsDifferent,
    /// The server refused a deletion (403): writer-only credentials.
    DeleteDenied,
    /// Final.
    Permanent,
}

#[derive(Debug)]
struct Failure {
    kind: FailKind,
    msg: String,
    /// The HTTP status of the response, if there was one.
    status: Option<u16>,
    /// The server's error code, if it sent one.
    code: Option<String>,
}

impl Failure {
    fn new(kind: FailKind, msg: impl Into<String>) -> Failure {
        Failure {
            kind,
            msg: msg.into(),
            status: None,
            code: None,
        }
    }
    fn transient(msg: impl Into<String>) -> Failure {
        Failure::new(FailKind::Transient, msg)
    }
    fn permanent(msg: impl Into<String>) -> Failure {
        Failure::new(FailKind::Permanent, msg)
    }
}

/// What describing a failed request needs: the attempt limit, the endpoint for messages,
/// and whether the server was ever reached (see `connect`).
#[derive(Debug, Clone)]
struct Describe {
    max_attempts: u32,
    /// `http://HOST:PORT`, or AWS's endpoint for the bucket.
    endpoint: Arc<str>,
    reach: Arc<connect::Reach>,
}

impl Describe {
    /// Classifies an SDK error (after the SDK's own retries) and describes it.
    fn failure<E>(&self, e: SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let max_attempts = self.max_attempts;
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        let mut kind = match (status, code.as_deref()) {
            (_, Some("NoSuchBucket")) => FailKind::NoBucket,
            (Some(404), _) | (_, Some("NoSuchKey")) => FailKind::Missing,
            (Some(416), _) | (_, Some("InvalidRange")) => FailKind::InvalidRange,
            // The body arrived damaged, or too slowly for the server: sending again may work.
            // The body arrived damaged, or too slowly for the server, or another conditional
            // write of the same name was in progress (409 ConditionalRequestConflict):
            // sending again may work.
            (
                _,
                Some(
                    "BadDigest"
                    | "XAmzContentSHA256Mismatch"
                    | "RequestTimeout"
                    | "ConditionalRequestConflict",
                ),
            ) => FailKind::Transient,
            (Some(412), _) | (_, Some("PreconditionFailed")) => FailKind::Exists,
            (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId")) => {
                FailKind::CredentialsRefused
            }
            _ => FailKind::Permanent,
        };
        let msg = match &e {
            SdkError::ServiceError(_) => {
                let mut m = format!("HTTP {}", status.unwrap_or(0));
                if let Some(c) = &code {
                    m.push_str(&format!(" {c}"));
                }
                if let Some(text) = e.message().filter(|t| !t.is_empty()) {
                    m.push_str(&format!(": {text}"));
                }
                match status {
                    Some(s) if RETRYABLE_STATUS.contains(&s) => {
                        m.push_str(&format!(" (gave up after {max_attempts} attempts)"));
                    }
                    Some(401 | 403) => m.push_str(
                        " (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the \
                         AWS profile, and the bucket's permissions)",
                    ),
                    Some(301) => m.push_str(" (wrong region? set --s3-region or AWS_REGION)"),
                    _ => {}
                }
                m
            }
            SdkError::DispatchFailure(d) => {
                let connector = d.as_connector_error();
                if let Some(reason) = connector.and_then(connect::connect_failure) {
                    let attempts = if self.reach.answered() {
                        max_attempts
                    } else {
                        max_attempts.min(connect::FIRST_CONTACT_ATTEMPTS)
                    };
                    let m = S3Error::Unreachable {
                        endpoint: self.endpoint.to_string(),
                        reason: reason.clone(),
                        attempts,
                    }
                    .to_string();
                    kind = FailKind::Unreachable { reason, attempts };
                    m
                } else if let Some(c) = connect::credentials_failure(&e) {
                    kind = FailKind::NoCredentials;
                    format!("cannot load S3 credentials: {}", connect::chain_text(c))
                } else {
                    format!(
                        "{} (gave up after up to {max_attempts} attempts)",
                        connect::chain_text(&e)
                    )
                }
            }
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                format!(
                    "{} (gave up after up to {max_attempts} attempts)",
                    connect::chain_text(&e)
                )
            }
            _ => connect::chain_text(&e),
        };
        tracing::debug!("S3 request failed: {}", DisplayErrorContext(&e));
        Failure {
            kind,
            msg,
            status,
            code,
        }
    }
}

/// Whether an SDK error is transient (what the SDK's own retries would retry): no response,
/// a timeout, a damaged response, or a retryable status.
fn sdk_retryable<E>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => e
            .raw_response()
            .is_some_and(|r| RETRYABLE_STATUS.contains(&r.status().as_u16())),
        _ => false,
    }
}

/// A random fraction in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with full jitter before attempt `attempt + 1`.
fn backoff_delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let base = initial.as_secs_f64() * 2f64.powi(attempt.min(30) as i32 - 1);
    Duration::from_secs_f64(base.min(max.as_secs_f64()) * jitter())
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn strip_quotes(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Checks the ETag a server returned for an upload (a whole object or one part) against
/// the MD5 of the bytes sent. Servers that ignore `Content-MD5` (moto, some gateways) still
/// answer with the MD5 of what they stored, so a mismatch means the bytes were damaged on
/// the way: a transient failure, retried by sending them again. ETags that are not an MD5
/// (server-side encryption with KMS or customer keys) are not checked.
fn verify_etag(
    etag: Option<&str>,
    encrypted: bool,
    md5: &[u8; 16],
    what: &str,
) -> Result<(), Failure> {
    let Some(etag) = etag.map(strip_quotes) else {
        return Ok(());
    };
    if encrypted || etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let want = hex::encode(md5);
    if etag.eq_ignore_ascii_case(&want) {
        Ok(())
    } else {
        Err(Failure::new(
            FailKind::Damaged,
            format!(
                "{what}: the server stored bytes with MD5 {etag}, not the {want} that was sent \
                 (damaged on the way)"
            ),
        ))
    }
}

/// Whether a response's encryption headers make its ETag something other than an MD5.
fn etag_not_md5(sse: Option<&ServerSideEncryption>, sse_customer: Option<&str>) -> bool {
    sse_customer.is_some()
        || matches!(
            sse,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        )
}

impl S3Backend {
    /// A backend for an `s3:` location (see [`S3Location`]). Builds the client and its
    /// runtime, and resolves the credentials unless [`S3Options::credentials`] gives them
    /// (failing with [`S3Error::NoCredentials`] when there are none); no request is sent to
    /// the S3 server yet.
    pub fn new(location: &str, options: S3Options) -> Result<S3Backend, S3Error> {
        let loc = S3Location::parse(location)?;
        Self::with_location(loc, options)
    }

    /// A backend for a parsed location.
    pub fn with_location(location: S3Location, options: S3Options) -> Result<S3Backend, S3Error> {
        options.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("holdfast-s3")
            .on_thread_start(sigpipe::block_forever)
            .enable_all()
            .build()
            .map_err(S3Error::Runtime)?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .build();
        let retry = RetryConfig::standard()
            .with_max_attempts(options.max_attempts)
            .with_initial_backoff(options.initial_backoff)
            .with_max_backoff(options.max_backoff);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retry);
        if let Some(r) = &options.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some((ak, sk)) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(
                ak.clone(),
                sk.clone(),
                None,
                None,
                "holdfast",
            ));
        }
        let sdk = drive(&runtime, loader.load());
        let reach = Arc::new(connect::Reach::default());
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            // Ceph RGW 16 rejects the SDK's default streaming checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // The per-request attempt limit is the limit; no process-wide retry quota that
            // a burst of faults could drain.
            .retry_partition(
                RetryPartition::custom("holdfast-s3")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .retry_classifier(HttpStatusCodeClassifier::new_from_codes(RETRYABLE_STATUS))
            // A server never reached gets a few quick attempts, not the full retry policy.
            .retry_classifier(connect::FirstContact {
                reach: reach.clone(),
                limit: connect::FIRST_CONTACT_ATTEMPTS,
            })
            .interceptor(connect::MarkAnswered(reach.clone()));
        if options.credentials.is_none() {
            let Some(chain) = sdk.credentials_provider() else {
                return Err(S3Error::NoCredentials);
            };
            let first = drive(&runtime, connect::resolve(&chain))?;
            b = b.credentials_provider(connect::Primed::new(first, chain));
        }
        if sdk.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &location.endpoint {
            b = b.endpoint_url(ep).force_path_style(true);
        }
        let conf = b.build();
        let endpoint: Arc<str> = match &location.endpoint {
            Some(ep) => ep.as_str().into(),
            None => format!(
                "of AWS (bucket {}, region {})",
                location.bucket,
                conf.region().map_or("us-east-1", |r| r.as_ref())
            )
            .into(),
        };
        let client = Client::from_conf(conf);
        let display_base = match &location.endpoint {
            Some(ep) => format!("{ep}/{}/", location.bucket),
            None => format!("s3://{}/", location.bucket),
        };
        Ok(S3Backend {
            read_ahead: readahead::ReadAhead::new(options.read_ahead, options.read_cache),
            limiter: Arc::new(Semaphore::new(options.concurrency)),
            describe: Describe {
                max_attempts: options.max_attempts,
                endpoint,
                reach,
            },
            location,
            display_base,
            client,
            options,
            stale_uploads_checked: AtomicBool::new(false),
            runtime: Some(runtime),
        })
    }

    /// The parsed location.
    pub fn s3_location(&self) -> &S3Location {
        &self.location
    }

    /// The underlying SDK client (for tests and tools).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future on the backend's runtime, blocking the calling thread until it is done.
    ///
    /// May be called from inside another tokio runtime (an async task, or a
    /// `spawn_blocking` thread): there the future is driven by a short-lived helper thread
    /// that is in no runtime, while the caller waits. SIGPIPE is blocked in the thread
    /// that polls the future (see `sigpipe`): a connection reset by the server fails a
    /// request instead of killing a process that restored SIGPIPE's default action.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        drive(
            self.runtime
                .as_ref()
                .expect("the runtime lives as long as the backend"),
            f,
        )
    }

    fn key(&self, kind: FileKind, id: &Id) -> String {
        self.location.key(&kind.path(id))
    }

    fn shown(&self, key: &str) -> String {
        format!("{}{key}", self.display_base)
    }

    fn to_error(&self, op: &'static str, key: &str, kind: FileKind, id: &Id, f: Failure) -> Error {
        match f.kind {
            FailKind::Missing => Error::Missing {
                kind: kind.name(),
                name: id.to_string(),
            },
            FailKind::ExistsDifferent => Error::corrupt(kind.name(), id, f.msg),
            _ => self.io_error(op, self.shown(key), f),
        }
    }

    /// An I/O error for `op` on `path`, wrapping an [`S3Error`] (see [`S3Error::of`]). A
    /// missing bucket is of kind `NotFound`, which the repository reports as "no
    /// repository".
    fn io_error(&self, op: &'static str, path: String, f: Failure) -> Error {
        let e = match f.kind {
            FailKind::DeleteDenied => {
                return Error::DeleteDenied {
                    path,
                    detail: f.msg,
                }
            }
            FailKind::NoBucket => S3Error::NoSuchBucket {
                bucket: self.location.bucket.clone(),
            },
            FailKind::CredentialsRefused => {
                let code = f.code.unwrap_or_default();
                let check = if code == "InvalidAccessKeyId" {
                    "AWS_ACCESS_KEY_ID"
                } else {
                    "AWS_SECRET_ACCESS_KEY"
                };
                S3Error::CredentialsRefused { code, check }
            }
            FailKind::Unreachable { reason, attempts } => S3Error::Unreachable {
                endpoint: self.describe.endpoint.to_string(),
                reason,
                attempts,
            },
            FailKind::NoCredentials => S3Error::CredentialsUnavailable(
                f.msg
                    .strip_prefix("cannot load S3 credentials: ")
                    .unwrap_or(&f.msg)
                    .to_string(),
            ),
            _ => S3Error::Request {
                status: f.status,
                code: f.code,
                message: f.msg,
            },
        };
        Error::Io {
            op,
            path,
            source: e.into_io(),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff_delay(
            self.options.initial_backoff,
            self.options.max_backoff,
            attempt,
        )
    }

    /// Runs `f` until it succeeds or fails other than [`FailKind::Transient`], at most
    /// `max_attempts` times, with backoff between attempts.
    async fn retrying<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let max = self.options.max_attempts;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if matches!(e.kind, FailKind::Transient | FailKind::Damaged) => {
                    if attempt >= max {
                        return Err(Failure {
                            kind: match e.kind {
                                FailKind::Damaged => FailKind::Damaged,
                                _ => FailKind::Permanent,
                            },
                            msg: format!("{} (gave up after {max} attempts)", e.msg),
                            ..e
                        });
                    }
                    tracing::debug!("{what}: attempt {attempt} failed, retrying: {}", e.msg);
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.limiter
            .acquire()
            .await
            .expect("the request limiter is never closed")
    }

    /// The Object Lock mode for a write, if the options ask for retention.
    fn lock_mode(&self) -> Option<aws_sdk_s3::types::ObjectLockMode> {
        self.options.object_lock.map(|l| match l.mode {
            options::LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
            options::LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
        })
    }

    /// The retain-until date for a write made now, if the options ask for retention (the
    /// write carries `Content-MD5`, which S3 requires with it).
    fn lock_until(&self) -> Option<aws_smithy_types::DateTime> {
        self.options.object_lock.map(|l| {
            aws_smithy_types::DateTime::from(
                SystemTime::now() + Duration::from_secs(u64::from(l.days) * 86_400),
            )
        })
    }

    /// Collects a response body, failing (transiently) if it pauses longer than the attempt
    /// timeout or ends before `expected` bytes.
    async fn collect(
        &self,
        mut body: ByteStream,
        expected: Option<u64>,
    ) -> Result<Vec<u8>, Failure> {
        let idle = self.options.attempt_timeout;
        let cap = expected.unwrap_or(0).min(1 << 30) as usize;
        let mut out = Vec::with_capacity(cap);
        loop {
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(Failure::transient(format!(
                        "download stalled for {idle:?} after {} bytes",
                        out.len()
                    )))
                }
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => {
                    return Err(Failure::transient(format!(
                        "download failed after {} bytes: {}",
                        out.len(),
                        connect::chain_text(&e)
                    )))
                }
            }
        }
        if let Some(n) = expected {
            if out.len() as u64 != n {
                return Err(Failure::transient(format!(
                    "download ended after {} of {n} bytes",
                    out.len()
                )));
            }
        }
        Ok(out)
    }

    /// GET, whole or `(offset, len)`, with retries of interrupted bodies.
    async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, Failure> {
        self.retrying(key, || async {
            let _permit = self.permit().await;
            let out = self
                .client
                .get_object()
                .bucket(&self.location.bucket)
                .key(key)
                .set_range(range.map(|(o, l)| format!("bytes={o}-{}", o + l - 1)))
                .send()
                .await
                .map_err(|e| self.describe.failure(e))?;
            let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
            let ranged = out.content_range().is_some();
            let data = self.collect(out.body, expected).await?;
            match range {
                // A server that ignored the Range header sent the whole object.
                Some((o, l)) if !ranged && data.len() as u64 > l => {
                    let start = (o as usize).min(data.len());
                    let end = (o.saturating_add(l) as usize).min(data.len());
                    Ok(data[start..end].to_vec())
                }
                _ => Ok(data),
            }
        })
        .await
    }

    /// One create-only `PutObject` (`If-None-Match: *`) with `Content-MD5`, its ETag
    /// checked; retried. A name that exists already (412) holds our bytes by construction
    /// (names are the hash of the bytes): the write succeeds without writing once a HEAD
    /// agrees (`verify_existing`). If an attempt stored damaged bytes (a server that ignores
    /// `Content-MD5`), the object is deleted before the next attempt, which could not
    /// replace it, and after the last, so that nothing corrupt stays under the final name.
    async fn put(&self, key: &str, body: PutBody) -> Result<(), Failure> {
        let raw_md5 = body.md5();
        let md5 = aws_smithy_types::base64::encode(raw_md5);
        let damaged = AtomicBool::new(false);
        let r = self
            .retrying(key, || async {
                if damaged.swap(false, Ordering::Relaxed) {
                    self.delete_damaged(key).await?;
                }
                let sent = {
                    let _permit = self.permit().await;
                    self.client
                        .put_object()
                        .bucket(&self.location.bucket)
                        .key(key)
                        .set_object_lock_mode(self.lock_mode())
                        .set_object_lock_retain_until_date(self.lock_until())
                        .if_none_match("*")
                        .content_md5(&md5)
                        .content_length(body.len() as i64)
                        .body(body.stream().await?)
                        .send()
                        .await
                };
                let out = match sent {
                    Ok(out) => out,
                    Err(e) => {
                        let f = self.describe.failure(e);
                        if matches!(f.kind, FailKind::Exists) {
                            return self
                                .verify_existing(key, body.len(), Some(raw_md5), None)
                                .await;
                        }
                        return Err(f);
                    }
                };
                let encrypted =
                    etag_not_md5(out.server_side_encryption(), out.sse_customer_algorithm());
                let checked = verify_etag(out.e_tag(), encrypted, &raw_md5, "upload");
                if matches!(&checked, Err(f) if matches!(f.kind, FailKind::Damaged)) {
                    damaged.store(true, Ordering::Relaxed);
                }
                checked
            })
            .await;
        if damaged.load(Ordering::Relaxed) {
            if let Err(e) = self.delete_damaged(key).await {
                tracing::warn!("{}", e.msg);
            }
        }
        r
    }

    /// Deletes an object whose upload stored damaged bytes.
    async fn delete_damaged(&self, key: &str) -> Result<(), Failure> {
        let _permit = self.permit().await;
        match self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = self.describe.failure(e);
                Err(Failure::permanent(format!(
                    "the server stored damaged bytes under {} (it ignores Content-MD5) and they \
                     could not be deleted: {}; delete it with credentials that may, or run \
                     `holdfast check --read-data`",
                    self.shown(key),
                    f.msg
                )))
            }
        }
    }

    /// After a create-only write found `key` taken: succeeds if the stored object is ours
    /// as far as a HEAD can tell (its length, and its ETag where that is the MD5 of the
    /// whole object or the multipart ETag of exactly our parts), fails with
    /// [`FailKind::ExistsDifferent`] if it is not. One request, only on this rare path.
    async fn verify_existing(
        &self,
        key: &str,
        len: u64,
        md5: Option<[u8; 16]>,
        multipart_etag: Option<&str>,
    ) -> Result<(), Failure> {
        let head = {
            let _permit = self.permit().await;
            self.client
                .head_object()
                .bucket(&self.location.bucket)
                .key(key)
                .send()
                .await
        };
        let h = match head {
            Ok(h) => h,
            Err(e) => {
                let f = self.describe.failure(e);
                if matches!(f.kind, FailKind::Missing) {
                    // Deleted between the two requests: writing again is right.
                    return Err(Failure::transient(
                        "the name was taken (412) but the object is gone (deleted meanwhile)",
                    ));
                }
                return Err(f);
            }
        };
        let size = h.content_length().unwrap_or(-1);
        let etag = h.e_tag().map(strip_quotes).unwrap_or("");
        let encrypted = etag_not_md5(h.server_side_encryption(), h.sse_customer_algorithm());
        let differs = if size != len as i64 {
            Some(format!("{size} bytes where its name says {len}"))
        } else if multipart_etag.is_some_and(|m| etag == m) {
            None
        } else {
            match md5.map(hex::encode) {
                Some(want)
                    if !encrypted
                        && etag.len() == 32
                        && etag.bytes().all(|b| b.is_ascii_hexdigit())
                        && !etag.eq_ignore_ascii_case(&want) =>
                {
                    Some(format!("MD5 {etag} where its bytes have {want}"))
                }
                _ => None,
            }
        };
        match differs {
            None => {
                tracing::debug!("{key} exists already with the same length: not written again");
                Ok(())
            }
            Some(d) => Err(Failure::new(
                FailKind::ExistsDifferent,
                format!(
                    "already stored with {d}: the stored object is damaged, and a write never \
                     replaces an object; run `holdfast check --read-data`, then `holdfast repair`"
                ),
            )),
        }
    }

    /// Uploads in parts; on any failure the upload is aborted.
    async fn put_multipart(&self, key: &str, data: &[u8]) -> Result<(), Failure> {
        // CreateMultipartUpload is not idempotent: an attempt whose reply was lost created
        // an upload nobody will complete. So it is retried here, not by the SDK, and after
        // a failed attempt the orphans are looked for.
        let retried = AtomicBool::new(false);
        let created = self
            .retrying(key, || async {
                let _permit = self.permit().await;
                let r = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .set_object_lock_mode(self.lock_mode())
                    .set_object_lock_retain_until_date(self.lock_until())
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::default()
                            .retry_config(RetryConfig::standard().with_max_attempts(1)),
                    )
                    .send()
                    .await;
                match r {
                    Ok(out) => out
                        .upload_id
                        .ok_or_else(|| Failure::permanent("the server returned no upload ID")),
                    Err(e) => {
                        let transient = sdk_retryable(&e);
                        let mut f = self.describe.failure(e);
                        // A server never reached: the quick attempts were made (see
                        // `connect`); nothing can have reached it.
                        let never_reached = matches!(f.kind, FailKind::Unreachable { .. })
                            && !self.describe.reach.answered();
                        if transient && !never_reached {
                            // It may have reached the server.
                            retried.store(true, Ordering::Relaxed);
                            f.kind = FailKind::Transient;
                        }
                        Err(f)
                    }
                }
            })
            .await;
        if retried.load(Ordering::Relaxed) {
            self.abort_orphans(key, created.as_ref().ok().map(String::as_str))
                .await;
        }
        let upload_id = created?;
        if !self.stale_uploads_checked.swap(true, Ordering::Relaxed) {
            self.abort_stale_uploads(&upload_id).await;
        }
        let result = self.upload_parts(key, &upload_id, data).await;
        if let Err(e) = &result {
            tracing::debug!("multipart upload of {key} failed, aborting: {}", e.msg);
            self.abort_upload(key, &upload_id).await;
        }
        result
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, data: &[u8]) -> Result<(), Failure> {
        let len = data.len() as u64;
        // S3 allows 10,000 parts.
        let part_size = self.options.part_size.max(len.div_ceil(10_000)) as usize;
        let all = Bytes::copy_from_slice(data);
        let local = Arc::new(Semaphore::new(PARTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        let mut part_md5s = Vec::new();
        for (i, start) in (0..all.len()).step_by(part_size).enumerate() {
            let part = all.slice(start..(start + part_size).min(all.len()));
            let md5 = md5_of(&part);
            part_md5s.push(md5);
            let (client, limiter, local) =
                (self.client.clone(), self.limiter.clone(), local.clone());
            let (bucket, key, upload_id) = (
                self.location.bucket.clone(),
                key.to_string(),
                upload_id.to_string(),
            );
            let raw_md5 = md5;
            let md5 = aws_smithy_types::base64::encode(md5);
            let max_attempts = self.options.max_attempts;
            let describe = self.describe.clone();
            let (initial, max_backoff) = (self.options.initial_backoff, self.options.max_backoff);
            let number = i as i32 + 1;
            tasks.spawn(async move {
                let _l = local.acquire_owned().await.expect("never closed");
                let mut attempt = 1;
                loop {
                    let r = {
                        let _g = limiter.acquire().await.expect("never closed");
                        client
                            .upload_part()
                            .bucket(&bucket)
                            .key(&key)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .content_md5(&md5)
                            .content_length(part.len() as i64)
                            .body(ByteStream::from(part.clone()))
                            .send()
                            .await
                    };
                    let checked = r.map_err(|e| describe.failure(e)).and_then(|out| {
                        let encrypted = etag_not_md5(
                            out.server_side_encryption(),
                            out.sse_customer_algorithm(),
                        );
                        verify_etag(out.e_tag(), encrypted, &raw_md5, "upload")?;
                        out.e_tag.ok_or_else(|| {
                            Failure::permanent(format!("part {number}: no ETag in the reply"))
                        })
                    });
                    match checked {
                        Ok(etag) => return Ok((number, etag)),
                        Err(f) => {
                            if matches!(f.kind, FailKind::Transient | FailKind::Damaged)
                                && attempt < max_attempts
                            {
                                tokio::time::sleep(backoff_delay(initial, max_backoff, attempt))
                                    .await;
                                attempt += 1;
                                continue;
                            }
                            let kind = match f.kind {
                                kind @ (FailKind::NoBucket
                                | FailKind::CredentialsRefused
                                | FailKind::NoCredentials
                                | FailKind::Unreachable { .. }) => kind,
                                _ => FailKind::Permanent,
                            };
                            return Err(Failure {
                                kind,
                                msg: format!("upload of part {number}: {}", f.msg),
                                ..f
                            });
                        }
                    }
                }
            });
        }
        let mut parts = Vec::with_capacity(part_md5s.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(p)) => parts.push(p),
                // Dropping the set cancels the other parts.
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(Failure::permanent(format!("part upload task: {e}"))),
            }
        }
        parts.sort_by_key(|p| p.0);
        let expected_etag = {
            let mut h = Md5::new();
            for m in &part_md5s {
                h.update(m);
            }
            format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
        };
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
                    .collect(),
            ))
            .build();
        // Create-only like every write; a server that ignores the condition here (Ceph RGW
        // 16 does) replaces identical bytes at worst. A concurrent conditional write of the
        // same name (409 ConditionalRequestConflict) is waited out.
        let mut attempt = 1;
        let f = loop {
            let done = {
                let _permit = self.permit().await;
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .if_none_match("*")
                    .multipart_upload(completed.clone())
                    .send()
                    .await
            };
            let f = match done {
                Ok(_) => return Ok(()),
                Err(e) => self.describe.failure(e),
            };
            match f.kind {
                FailKind::Exists => {
                    self.abort_upload(key, upload_id).await;
                    return self
                        .verify_existing(key, len, Some(md5_of(data)), Some(&expected_etag))
                        .await;
                }
                FailKind::Transient if attempt < self.options.max_attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                _ => break f,
            }
        };
        // The completion may have happened although it reads as failed: its reply was lost
        // (the SDK's retry then finds no upload), or the server answered 200 with a body the
        // SDK cannot parse (moto). The object tells: with the multipart ETag of exactly our
        // parts and our length, it holds our bytes.
        let head = {
            let _permit = self.permit().await;
            self.client
                .head_object()
                .bucket(&self.location.bucket)
                .key(key)
                .send()
                .await
        };
        if let Ok(h) = head {
            let etag = h.e_tag().map(strip_quotes).unwrap_or("");
            if etag == expected_etag && h.content_length() == Some(len as i64) {
                tracing::debug!(
                    "completion of {key} read as failed ({}), but the object is complete",
                    f.msg
                );
                // In case the object is another writer's (same content) and ours is still
                // pending.
                self.abort_upload(key, upload_id).await;
                return Ok(());
            }
        }
        Err(Failure::permanent(format!(
            "completing the multipart upload: {}",
            f.msg
        )))
    }

    /// Aborts a multipart upload, best effort (a failure is logged: the next writer aborts
    /// it once it is a day old). An upload that no longer exists is fine.
    async fn abort_upload(&self, key: &str, upload_id: &str) {
        let abort = {
            let _permit = self.permit().await;
            self.client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
        };
        if let Err(a) = abort {
            let a = self.describe.failure(a);
            if !matches!(a.kind, FailKind::Missing) {
                tracing::warn!(
                    "could not abort the failed multipart upload {upload_id} of {}: {} \
                     (the next upload will abort it once it is a day old)",
                    self.shown(key),
                    a.msg
                );
            }
        }
    }

    /// Aborts the uploads of `key` that failed attempts to create `ours` may have left
    /// (all of them if there is no `ours`): those initiated no later than ours on the
    /// server's clock. Keys name encrypted content with random nonces, so no other writer
    /// uploads the same key. Best effort.
    async fn abort_orphans(&self, key: &str, ours: Option<&str>) {
        let listed = {
            let _permit = self.permit().await;
            self.client
                .list_multipart_uploads()
                .bucket(&self.location.bucket)
                .prefix(key)
                .send()
                .await
        };
        let out = match listed {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(
                    "could not look for multipart uploads of {} left by failed attempts: {}",
                    self.shown(key),
                    self.describe.failure(e).msg
                );
                return;
            }
        };
        let uploads: Vec<(String, Option<i64>)> = out
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(key))
            .filter_map(|u| Some((u.upload_id()?.to_owned(), u.initiated().map(|t| t.secs()))))
            .collect();
        let limit = match ours {
            Some(ours) => match uploads.iter().find(|u| u.0 == ours) {
                Some((_, Some(t))) => Some(*t),
                // Ours is not listed (yet): do not guess.
                _ => return,
            },
            None => None,
        };
        for (id, started) in uploads {
            if Some(id.as_str()) == ours {
                continue;
            }
            if let (Some(limit), Some(started)) = (limit, started) {
                if started > limit {
                    continue;
                }
            }
            tracing::debug!("aborting upload {id} of {key} left by a failed attempt");
            self.abort_upload(key, &id).await;
        }
    }

    /// Aborts multipart uploads under the repository prefix that are over a day old: left
    /// by a writer that was killed. Best effort.
    ///
    /// Ages are measured on the server's clock, against the initiation time of our own
    /// upload `ours` (just created): a client clock that is off, or a server that reports
    /// made-up times (moto says 2010 for every upload), must not make another writer's live
    /// upload look abandoned. Without ours in the listing nothing is aborted.
    async fn abort_stale_uploads(&self, ours: &str) {
        let prefix = self.location.key("");
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        for _page in 0..100 {
            let out = {
                let _permit = self.permit().await;
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.location.bucket)
                    .prefix(&prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send()
                    .await
            };
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(
                        "listing multipart uploads: {}",
                        self.describe.failure(e).msg
                    );
                    return;
                }
            };
            for u in out.uploads() {
                if let (Some(key), Some(id), Some(started)) =
                    (u.key(), u.upload_id(), u.initiated())
                {
                    uploads.push((key.to_owned(), id.to_owned(), started.secs()));
                }
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if out.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        let Some(now) = uploads.iter().find(|u| u.1 == ours).map(|u| u.2) else {
            tracing::debug!("our upload {ours} is not listed: not looking for abandoned ones");
            return;
        };
        let stale_secs = STALE_UPLOAD_AGE.as_secs() as i64;
        for (key, id, started) in uploads {
            if id == ours || now.saturating_sub(started) < stale_secs {
                continue;
            }
            self.abort_upload(&key, &id).await;
            tracing::info!("aborted abandoned multipart upload {id} of {key}");
        }
    }

    async fn list_kind(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>, Failure> {
        let dir_prefix = self.location.key(&format!("{}/", kind.dir()));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = {
                let _permit = self.permit().await;
                self.client
                    .list_objects_v2()
                    .bucket(&self.location.bucket)
                    .prefix(&dir_prefix)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| self.describe.failure(e))?
            };
            for obj in page.contents() {
                let (Some(key), Some(size)) = (obj.key(), obj.size()) else {
                    continue;
                };
                let Some(rel) = key.strip_prefix(&dir_prefix) else {
                    continue;
                };
                let hex = match kind {
                    FileKind::Pack => match rel.split_once('/') {
                        Some((shard, hex)) if hex.len() >= 2 && shard == &hex[..2] => hex,
                        _ => continue,
                    },
                    _ => rel,
                };
                // Only canonical names (64 lowercase hex digits) are repository files.
                let Some(id) = Id::from_hex(hex).ok().filter(|id| id.to_hex() == hex) else {
                    continue;
                };
                out.push((id, size.max(0) as u64, obj.last_modified().map(date_ns)));
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                Some(t) if token.as_deref() != Some(t) => token = Some(t.to_owned()),
                _ => {
                    return Err(Failure::permanent(
                        "the listing is truncated but the server gave no new continuation token",
                    ))
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    async fn create_bucket(&self) -> Result<(), Failure> {
        let head = {
            let _permit = self.permit().await;
            self.client
                .head_bucket()
                .bucket(&self.location.bucket)
                .send()
                .await
        };
        match head {
            Ok(_) => return Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match status {
                    Some(404) => {}
                    // Not allowed to look at the bucket, which exists: the writes will tell
                    // whether we may use it.
                    Some(403) => return Ok(()),
                    _ => return Err(self.describe.failure(e)),
                }
            }
        }
        let mut req = self.client.create_bucket().bucket(&self.location.bucket);
        if self.location.endpoint.is_none() {
            if let Some(r) = self.client.config().region().map(|r| r.as_ref().to_owned()) {
                if r != "us-east-1" {
                    req = req.create_bucket_configuration(
                        CreateBucketConfiguration::builder()
                            .location_constraint(BucketLocationConstraint::from(r.as_str()))
                            .build(),
                    );
                }
            }
        }
        let _permit = self.permit().await;
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => {
                let mut f = self.describe.failure(e);
                f.msg = format!("cannot create the bucket: {}", f.msg);
                Err(f)
            }
        }
    }
}

impl S3Backend {
    /// [`Backend::write`] of a body in memory or in a staged file: one `PutObject`, or
    /// parts (read into memory) above the multipart threshold.
    fn put_body(&self, kind: FileKind, id: &Id, body: PutBody) -> Result<()> {
        let key = self.key(kind, id);
        self.read_ahead.forget(&key);
        let r = if body.len() > self.options.multipart_threshold {
            match body.bytes() {
                Ok(bytes) => self.block_on(self.put_multipart(&key, &bytes)),
                Err(f) => Err(f),
            }
        } else {
            self.block_on(self.put(&key, body))
        };
        r.map_err(|f| {
            // A missing bucket on write is not a missing object.
            let f = match f.kind {
                FailKind::Missing => Failure::permanent(f.msg),
                _ => f,
            };
            self.to_error("write", &key, kind, id, f)
        })
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order (a
/// small `join_all`; each future waits for the request limiter itself).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// A failed deletion: a refusal (403) is [`FailKind::DeleteDenied`].
fn delete_failure(f: Failure) -> Failure {
    if f.status == Some(403) && !matches!(f.kind, FailKind::CredentialsRefused) {
        Failure {
            kind: FailKind::DeleteDenied,
            msg: format!(
                "HTTP 403 {}",
                f.code.clone().unwrap_or_else(|| "AccessDenied".into())
            ),
            ..f
        }
    } else {
        f
    }
}

/// The body of one upload: bytes in memory, or a staged file (its MD5 taken while it was
/// written) read anew for every attempt, so that no upload holds a pack in memory.
enum PutBody {
    Bytes(Bytes),
    File {
        path: std::path::PathBuf,
        len: u64,
        md5: [u8; 16],
    },
}

impl PutBody {
    fn len(&self) -> u64 {
        match self {
            PutBody::Bytes(b) => b.len() as u64,
            PutBody::File { len, .. } => *len,
        }
    }

    fn md5(&self) -> [u8; 16] {
        match self {
            PutBody::Bytes(b) => md5_of(b),
            PutBody::File { md5, .. } => *md5,
        }
    }

    /// The whole body in memory (for multipart uploads).
    fn bytes(self) -> Result<Bytes, Failure> {
        match self {
            PutBody::Bytes(b) => Ok(b),
            PutBody::File { path, .. } => std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| Failure::permanent(format!("reading {STAGING_PLACE}: {e}"))),
        }
    }

    async fn stream(&self) -> Result<ByteStream, Failure> {
        match self {
            PutBody::Bytes(b) => Ok(ByteStream::from(b.clone())),
            PutBody::File { path, len, .. } => ByteStream::read_from()
                .path(path)
                .buffer_size(256 * 1024)
                .length(aws_smithy_types::byte_stream::Length::Exact(*len))
                .build()
                .await
                .map_err(|e| Failure::permanent(format!("reading {STAGING_PLACE}: {e}"))),
        }
    }
}

/// Where staged uploads go, for messages.
const STAGING_PLACE: &str = "a temporary file for an S3 upload (in $TMPDIR, default /tmp)";

fn staging_error(op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: STAGING_PLACE.into(),
        source,
    }
}

/// A file staged in a temporary file `holdfast-upload-*` (removed when dropped, committed
/// or not; only a killed process leaves it), its MD5 taken on the way, uploaded on commit.
struct S3Staged<'a> {
    backend: &'a S3Backend,
    kind: FileKind,
    file: tempfile::NamedTempFile,
    md5: Md5,
    len: u64,
}

impl StagedFile for S3Staged<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| staging_error("write", e))?;
        self.md5.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn commit(self: Box<Self>, id: &Id) -> Result<()> {
        // Written with plain write(2) calls, so reading it by path sees every byte; the
        // file lives (and is removed) with `self`, after the upload.
        let body = PutBody::File {
            path: self.file.path().to_path_buf(),
            len: self.len,
            md5: self.md5.clone().finalize().into(),
        };
        self.backend.put_body(self.kind, id, body)
    }
}

impl S3Backend {
    /// A HEAD of one repository file: its size and time stamp.
    fn head(
        &self,
        kind: FileKind,
        id: &Id,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        let key = self.key(kind, id);
        self.block_on(async {
            let _permit = self.permit().await;
            self.client
                .head_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.describe.failure(e))
        })
        .map_err(|f| self.to_error("stat", &key, kind, id, f))
    }
}

/// An S3 time stamp (`LastModified`: the server's clock, to the second) as ns since the epoch.
fn date_ns(t: &aws_smithy_types::DateTime) -> i64 {
    t.secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.subsec_nanos()))
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn create(&self) -> Result<()> {
        // Object stores have no directories: the bucket is all there is to create.
        self.block_on(self.create_bucket())
            .map_err(|f| self.io_error("create bucket", self.display_base.clone(), f))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list_modified(kind)?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }

    fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
        self.block_on(self.list_kind(kind)).map_err(|mut f| {
            let path = self.shown(&self.location.key(&format!("{}/", kind.dir())));
            // A listing finds no object only when the bucket is missing.
            if matches!(f.kind, FailKind::Missing) {
                f.kind = FailKind::NoBucket;
            }
            self.io_error("list", path, f)
        })
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let key = self.key(kind, id);
        self.block_on(self.get(&key, None))
            .map_err(|f| self.to_error("read", &key, kind, id, f))
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        let key = self.key(kind, id);
        let truncated = |got: u64| {
            Error::corrupt(
                kind.name(),
                id,
                format!(
                    "truncated: wanted {len} bytes at offset {offset}, object ends at {}",
                    offset + got
                ),
            )
        };
        if len == 0 {
            // Nothing to read, but a missing object is still missing.
            self.size(kind, id)?;
            return Ok(Vec::new());
        }
        let plan = match kind {
            FileKind::Pack => self.read_ahead.plan(&key, offset, len),
            _ => readahead::Plan::Exact,
        };
        let blocks = match plan {
            readahead::Plan::Hit(data) => return Ok(data),
            readahead::Plan::Exact => None,
            readahead::Plan::Blocks(b) => Some(b),
        };
        let range = blocks.as_ref().map_or((offset, len), |b| (b.from, b.len));
        match self.block_on(self.get(&key, Some(range))) {
            Ok(data) => match blocks {
                Some(b) => self
                    .read_ahead
                    .complete(&key, offset, len, b, data)
                    .map_err(truncated),
                None if (data.len() as u64) < len => Err(truncated(data.len() as u64)),
                None => {
                    let mut data = data;
                    data.truncate(len as usize);
                    Ok(data)
                }
            },
            // Nothing at `range`: the object ends at its start (or before).
            Err(Failure {
                kind: FailKind::InvalidRange,
                ..
            }) => Err(truncated(range.0.saturating_sub(offset))),
            Err(f) => Err(self.to_error("read", &key, kind, id, f)),
        }
    }

    fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
        self.head(kind, id).map(|h| h.last_modified().map(date_ns))
    }

    fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        let h = self.head(kind, id)?;
        h.content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                let key = self.key(kind, id);
                self.to_error(
                    "stat",
                    &key,
                    kind,
                    id,
                    Failure::permanent("no Content-Length in the reply"),
                )
            })
    }

    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
        self.put_body(kind, id, PutBody::Bytes(Bytes::copy_from_slice(bytes)))
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile + '_>> {
        // Packs are staged on local disk, not in memory: a backup holds no open pack in RAM.
        let file = tempfile::Builder::new()
            .prefix("holdfast-upload-")
            .tempfile()
            .map_err(|e| staging_error("create", e))?;
        Ok(Box::new(S3Staged {
            backend: self,
            kind,
            file,
            md5: Md5::new(),
            len: 0,
        }))
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let key = self.key(kind, id);
        self.read_ahead.forget(&key);
        let r = self.block_on(async {
            let _permit = self.permit().await;
            self.client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.describe.failure(e))
        });
        match r {
            Ok(_) => Ok(()),
            Err(Failure {
                kind: FailKind::Missing | FailKind::NoBucket,
                ..
            }) => Ok(()),
            Err(f) => Err(self.io_error("delete", self.shown(&key), delete_failure(f))),
        }
    }

    /// A `DeleteObject` of a key under the prefix that no repository file has
    /// (`PREFIX/sessions/holdfast-delete-check`): S3 answers 204 whether or not it exists,
    /// and 403 where the credentials may not delete. On a versioned bucket (Object Lock) it
    /// leaves a delete marker on that key, which nothing reads.
    fn check_delete_allowed(&self) -> Result<()> {
        let key = self.location.key("sessions/holdfast-delete-check");
        let r = self.block_on(async {
            let _permit = self.permit().await;
            self.client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.describe.failure(e))
        });
        match r {
            Ok(_)
            | Err(Failure {
                kind: FailKind::Missing,
                ..
            }) => Ok(()),
            Err(f) => Err(self.io_error("delete", self.shown(&key), delete_failure(f))),
        }
    }

    fn is_remote(&self) -> bool {
        true
    }

    /// One `HEAD` per object (it reports the retain-until date), and a
    /// `PutObjectRetention` of the current version for those whose retention ends within
    /// half of [`S3Options::object_lock`]'s period; nothing without Object Lock.
    fn extend_retention(&self, kind: FileKind, ids: &[Id]) -> Result<usize> {
        let (Some(mode), Some(lock)) = (self.lock_mode(), self.options.object_lock) else {
            return Ok(0);
        };
        let period = i64::from(lock.days) * 86_400;
        let extended = std::sync::atomic::AtomicUsize::new(0);
        for chunk in ids.chunks(64) {
            let r: Result<Vec<()>> = self.block_on(async {
                let one = |id: Id| {
                    let (mode, extended) = (mode.clone(), &extended);
                    async move {
                        let key = self.key(kind, &id);
                        let head = {
                            let _permit = self.permit().await;
                            self.client
                                .head_object()
                                .bucket(&self.location.bucket)
                                .key(&key)
                                .send()
                                .await
                        };
                        let h = match head {
                            Ok(h) => h,
                            Err(e) => {
                                let f = self.describe.failure(e);
                                if matches!(f.kind, FailKind::Missing) {
                                    return Ok(()); // deleted meanwhile: nothing to keep
                                }
                                return Err(self.to_error("stat", &key, kind, &id, f));
                            }
                        };
                        let now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        let until = h.object_lock_retain_until_date().map_or(0, |d| d.secs());
                        if until - now >= period / 2 {
                            return Ok(());
                        }
                        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
                            .mode(match mode {
                                aws_sdk_s3::types::ObjectLockMode::Compliance => {
                                    aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
                                }
                                _ => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
                            })
                            .retain_until_date(aws_smithy_types::DateTime::from_secs(now + period))
                            .build();
                        let _permit = self.permit().await;
                        self.client
                            .put_object_retention()
                            .bucket(&self.location.bucket)
                            .key(&key)
                            .set_version_id(h.version_id().map(str::to_owned))
                            .retention(retention)
                            .send()
                            .await
                            .map_err(|e| {
                                let f = self.describe.failure(e);
                                self.to_error("extend the retention of", &key, kind, &id, f)
                            })?;
                        extended.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                };
                let mut out = Vec::with_capacity(chunk.len());
                let futures: Vec<_> = chunk.iter().map(|id| one(*id)).collect();
                // Concurrency is bounded by the request limiter inside.
                for f in join_all(futures).await {
                    out.push(f?);
                }
                Ok(out)
            });
            r?;
        }
        Ok(extended.into_inner())
    }

    /// DeleteObjects, 1000 keys a request (S3's limit). A server that refuses the batch
    /// request as a whole gets the keys one by one; a key it reports as not deleted (other
    /// than already missing) is an error naming it.
    fn remove_many(&self, kind: FileKind, ids: &[Id]) -> Result<()> {
        for chunk in ids.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|id| self.key(kind, id)).collect();
            for k in &keys {
                self.read_ahead.forget(k);
            }
            let objects = keys
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>();
            let delete =
                objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let Ok(delete) = delete else {
                // Cannot happen (every key is set); deleting one by one is always right.
                chunk.iter().try_for_each(|id| self.remove(kind, id))?;
                continue;
            };
            let r = self.block_on(async {
                let _permit = self.permit().await;
                self.client
                    .delete_objects()
                    .bucket(&self.location.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| self.describe.failure(e))
            });
            match r {
                Ok(out) => {
                    if let Some(e) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                        let key = e.key().unwrap_or("?");
                        if e.code() == Some("AccessDenied") {
                            return Err(Error::DeleteDenied {
                                path: self.shown(key),
                                detail: format!("AccessDenied {}", e.message().unwrap_or_default()),
                            });
                        }
                        return Err(Error::Io {
                            op: "delete",
                            path: self.shown(key),
                            source: std::io::Error::other(format!(
                                "delete refused: {} {}",
                                e.code().unwrap_or("?"),
                                e.message().unwrap_or("")
                            )),
                        });
                    }
                }
                Err(Failure {
                    kind: FailKind::NoBucket,
                    ..
                }) => return Ok(()),
                // Refused as a whole: one by one would be refused too.
                Err(f) if f.status == Some(403) => {
                    return Err(self.io_error("delete", self.shown(&keys[0]), delete_failure(f)))
                }
                Err(f) => {
                    tracing::warn!(
                        "batch delete of {} objects failed ({}); deleting them one by one",
                        keys.len(),
                        f.msg
                    );
                    chunk.iter().try_for_each(|id| self.remove(kind, id))?;
                }
            }
        }
        Ok(())
    }
}
