//! The bucket's client: listing, downloads (streamed, resumed), and the feed.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use holdfast_backend_s3::{S3Backend, S3Location, S3Options};
use holdfast_engine::feed::{Entry, Feed};
use holdfast_repo::tree::Xattr;

use crate::listing::{Item, Level, Listed, Lister, Page};
use crate::{BucketError, XATTR_ETAG, XATTR_KEY, XATTR_OBJ};

/// Times a download cut off is resumed before it fails.
const RESUMES: u32 = 4;

/// A bucket (and a key prefix in it) on an S3 server, with counters of the requests that
/// move object data.
pub struct Bucket {
    backend: S3Backend,
    location: S3Location,
    gets: AtomicU64,
    puts: AtomicU64,
    downloads: AtomicU64,
}

/// A request's failure in one line: the server's code and message, or the cause.
pub(crate) fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(s) = e.as_service_error() {
        let code = s.code().unwrap_or("no error code");
        let hint = match code {
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" => {
                ": check the bucket's credentials (HOLDFAST_BUCKET_ACCESS_KEY_ID and \
                 HOLDFAST_BUCKET_SECRET_ACCESS_KEY, else the standard AWS chain)"
            }
            "NoSuchBucket" => ": there is no such bucket",
            _ => "",
        };
        return match s.message().filter(|m| !m.trim().is_empty()) {
            Some(m) => format!("{m} ({code}){hint}"),
            None => format!("{code}{hint}"),
        };
    }
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

impl Bucket {
    /// The bucket at an `s3:` location (`s3:http://HOST:PORT/BUCKET[/PREFIX]`, see
    /// [`S3Location`]), with the S3 backend's client settings and credentials handling.
    pub fn open(location: &str, options: S3Options) -> Result<Bucket, BucketError> {
        let location = S3Location::parse(location)?;
        let backend = S3Backend::with_location(location.clone(), options)?;
        Ok(Bucket {
            backend,
            location,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
        })
    }

    /// [`Bucket::open`] with the `HOLDFAST_S3_*` settings and the bucket's own credentials:
    /// `HOLDFAST_BUCKET_ACCESS_KEY_ID` and `HOLDFAST_BUCKET_SECRET_ACCESS_KEY` when set (so
    /// that a repository on S3 can keep the standard AWS variables), else the standard AWS
    /// chain.
    pub fn from_env(location: &str, region: Option<String>) -> Result<Bucket, BucketError> {
        let mut options = S3Options::from_env()?;
        options.region = region;
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        if let (Some(ak), Some(sk)) = (
            var("HOLDFAST_BUCKET_ACCESS_KEY_ID"),
            var("HOLDFAST_BUCKET_SECRET_ACCESS_KEY"),
        ) {
            options.credentials = Some((ak, sk));
        }
        Bucket::open(location, options)
    }

    /// The parsed location.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// GetObject requests sent so far (resumptions included).
    pub fn get_requests(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// Objects whose download started so far (each object once: resumptions and objects
    /// gone before their download are not counted). A backup downloads the objects that
    /// are new or changed since its parent; the others are not read.
    pub fn objects_downloaded(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// Objects uploaded so far.
    pub fn put_requests(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// The SDK client (for tests and tools).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        self.backend.client()
    }

    /// Runs a future on the client's runtime and waits for it.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.backend.block_on(f)
    }

    /// The level prefix of the backed-up keys ("" or ending in `/`).
    pub(crate) fn root_prefix(&self) -> String {
        if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        }
    }

    pub(crate) fn count_put(&self) {
        self.puts.fetch_add(1, Ordering::Relaxed);
    }

    fn listed(&self, o: &aws_sdk_s3::types::Object) -> Option<Listed> {
        let mtime_ns = o.last_modified().map_or(0, |t| {
            t.secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.subsec_nanos()))
        });
        Some(Listed {
            key: o.key()?.to_string(),
            size: o.size().map_or(0, |s| s.max(0) as u64),
            mtime_ns,
            etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
        })
    }

    /// A feed of the bucket's objects below its prefix, in tree order.
    pub fn feed(self: &Arc<Self>) -> BucketFeed {
        BucketFeed {
            stack: vec![(Level::new(self.root_prefix()), Vec::new())],
            bucket: self.clone(),
            lookups: 0,
        }
    }

    /// Starts a download at `offset`, of the version with `etag` if given. `Ok(None)`: the
    /// object is gone.
    fn get(
        &self,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, String> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let req = self
            .client()
            .get_object()
            .bucket(&self.location.bucket)
            .key(key)
            .set_range((offset > 0).then(|| format!("bytes={offset}-")))
            .set_if_match(etag.map(|e| format!("\"{e}\"")));
        match self.block_on(req.send()) {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(describe(&e)),
        }
    }
}

impl Lister for Bucket {
    fn page(&self, prefix: &str, token: Option<&str>) -> Result<Page, BucketError> {
        let req = self
            .client()
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token.map(str::to_string));
        let out = self
            .block_on(req.send())
            .map_err(|e| BucketError::Listing {
                prefix: prefix.to_string(),
                why: describe(&e),
            })?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| self.listed(o))
            .collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .collect();
        let next = if out.is_truncated() == Some(true) {
            match out.next_continuation_token() {
                Some(t) => Some(t.to_string()),
                None => {
                    return Err(BucketError::Listing {
                        prefix: prefix.to_string(),
                        why: "the server said the listing goes on but gave no token".into(),
                    })
                }
            }
        } else {
            None
        };
        Ok(Page {
            objects,
            prefixes,
            next,
        })
    }

    fn first(&self, prefix: &str) -> Result<Option<Listed>, BucketError> {
        let req = self
            .client()
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(prefix)
            .max_keys(1);
        let out = self
            .block_on(req.send())
            .map_err(|e| BucketError::Listing {
                prefix: prefix.to_string(),
                why: describe(&e),
            })?;
        Ok(out.contents().first().and_then(|o| self.listed(o)))
    }
}

/// The bucket's objects as a [`Feed`]: one reusable file per object (see the crate
/// documentation).
pub struct BucketFeed {
    bucket: Arc<Bucket>,
    stack: Vec<(Level, Vec<Vec<u8>>)>,
    lookups: u64,
}

impl BucketFeed {
    /// Keys looked up to settle the order of a large level so far (see [`crate::listing`]).
    pub fn lookups(&self) -> u64 {
        self.lookups + self.stack.iter().map(|(l, _)| l.lookups).sum::<u64>()
    }

    fn entry(&self, path: Vec<Vec<u8>>, obj: Listed) -> Entry {
        let rel = obj.key[self.bucket.root_prefix().len()..].to_string();
        let escaped = path
            .iter()
            .zip(rel.split('/'))
            .any(|(n, p)| n.as_slice() != p.as_bytes());
        let slot = Arc::new(Mutex::new(Vec::new()));
        let (bucket, key, etag, told) = (
            self.bucket.clone(),
            obj.key.clone(),
            obj.etag.clone(),
            slot.clone(),
        );
        let open = Box::new(move || -> std::io::Result<Option<Box<dyn Read + Send>>> {
            let why = |offset, why| BucketError::Download {
                key: key.clone(),
                offset,
                why,
            };
            let Some(out) = bucket.get(&key, 0, None).map_err(|w| why(0, w).into_io())? else {
                return Ok(None);
            };
            bucket.downloads.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut s) = told.lock() {
                *s = object_xattrs(&out);
            }
            let etag = out
                .e_tag()
                .map(|e| e.trim_matches('"').to_string())
                .or((!etag.is_empty()).then_some(etag));
            let len = out.content_length().map(|l| l.max(0) as u64);
            Ok(Some(Box::new(ObjectReader {
                bucket,
                key,
                etag,
                body: Some(out.body),
                chunk: Bytes::new(),
                offset: 0,
                len,
                resumes: 0,
            })))
        });
        let mut e = Entry::file(path, obj.mtime_ns, open)
            .with_size(obj.size)
            .with_xattr(XATTR_ETAG, obj.etag.clone())
            .with_opened_xattrs(XATTR_OBJ, slot)
            .reusable();
        if escaped {
            e = e.with_xattr(XATTR_KEY, rel);
        }
        e
    }
}

impl Feed for BucketFeed {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        loop {
            let Some((level, path)) = self.stack.last_mut() else {
                return Ok(None);
            };
            match level.next(&*self.bucket).map_err(BucketError::into_io)? {
                None => {
                    self.lookups += level.lookups;
                    self.stack.pop();
                }
                Some(Item::Object { name, obj }) => {
                    let mut p = path.clone();
                    p.push(name);
                    return Ok(Some(self.entry(p, obj)));
                }
                Some(Item::Dir { name, prefix }) => {
                    let mut p = path.clone();
                    p.push(name);
                    self.stack.push((Level::new(prefix), p));
                }
            }
        }
    }
}

/// The attributes a GET response tells about its object.
fn object_xattrs(out: &aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<Xattr> {
    let x = |name: &str, value: &str| Xattr {
        name: format!("{XATTR_OBJ}{name}").into_bytes(),
        value: value.as_bytes().to_vec(),
    };
    let mut v = Vec::new();
    for (name, value) in [
        ("content-type", out.content_type()),
        ("cache-control", out.cache_control()),
        ("content-encoding", out.content_encoding()),
        ("content-disposition", out.content_disposition()),
        ("content-language", out.content_language()),
    ] {
        if let Some(value) = value {
            v.push(x(name, value));
        }
    }
    let empty = HashMap::new();
    for (k, value) in out.metadata().unwrap_or(&empty) {
        v.push(x(&format!("meta.{k}"), value));
    }
    v
}

/// An object's content as it streams in; a body cut off is resumed from where it stopped.
struct ObjectReader {
    bucket: Arc<Bucket>,
    key: String,
    /// The version being read: a resumption must read the same one.
    etag: Option<String>,
    body: Option<ByteStream>,
    chunk: Bytes,
    offset: u64,
    /// The object's length, when the server said.
    len: Option<u64>,
    resumes: u32,
}

impl ObjectReader {
    fn resume(&mut self, why: String) -> std::io::Result<()> {
        self.body = None;
        if self.resumes >= RESUMES {
            return Err(self.failed(format!("{why} (resumed {RESUMES} times)")));
        }
        self.resumes += 1;
        tracing::debug!(key = %self.key, offset = self.offset, "resuming a download: {why}");
        std::thread::sleep(Duration::from_millis(100 << self.resumes));
        match self
            .bucket
            .get(&self.key, self.offset, self.etag.as_deref())
        {
            Ok(Some(out)) => {
                self.body = Some(out.body);
                Ok(())
            }
            Ok(None) => Err(self.failed("the object was deleted while being read".into())),
            Err(e) => Err(self.failed(format!("{why}; resuming failed: {e}"))),
        }
    }

    fn failed(&self, why: String) -> std::io::Error {
        BucketError::Download {
            key: self.key.clone(),
            offset: self.offset,
            why,
        }
        .into_io()
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk.split_to(n));
                self.offset += n as u64;
                return Ok(n);
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match self.bucket.block_on(body.next()) {
                Some(Ok(b)) => self.chunk = b,
                None => match self.len {
                    Some(len) if self.offset < len => {
                        self.resume(format!("the body ended at {} of {len} bytes", self.offset))?
                    }
                    _ => {
                        self.body = None;
                        return Ok(0);
                    }
                },
                Some(Err(e)) => self.resume(format!("the connection broke: {e}"))?,
            }
        }
    }
}
