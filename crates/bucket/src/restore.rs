//! A snapshot's files into a bucket: each file one object, its key from its path (the
//! escaping undone), its headers and metadata from its `user.s3.obj.*` attributes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use holdfast_engine::restorer::{self, ContentPiece};
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::{Node, NodeKind};

use crate::s3::describe;
use crate::{names, Bucket, BucketError, PART_SIZE, XATTR_OBJ};

/// Uploads in flight at once (many small objects are latency-bound).
const UPLOADERS: usize = 8;

/// What a restore into a bucket did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Objects written.
    pub objects: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries that are not files (left out), by path.
    pub skipped: Vec<String>,
    /// Wall time, ns.
    pub duration_ns: u64,
}

/// Counters a progress display reads while a restore runs.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Objects written.
    pub objects: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

/// Restores the snapshot's subtree at `path` (absolute, e.g. `/buckets/b`) into `target`:
/// every file below it becomes the object `TARGET_PREFIX/KEY`, `KEY` being its path below
/// `path` with the escaping undone. Entries that are not files are left out and listed.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    target: &Bucket,
    progress: &RestoreProgress,
) -> Result<RestoreReport, BucketError> {
    let started = Instant::now();
    let index = repo.load_index()?;
    let node = restorer::lookup(repo, &index, &snapshot.tree, path.as_bytes())?;
    let mut report = RestoreReport::default();
    let (tx, rx) = mpsc::sync_channel::<(String, Node)>(64);
    let rx = Mutex::new(rx);
    let failed: Mutex<Option<BucketError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(), BucketError> {
        for _ in 0..UPLOADERS {
            s.spawn(|| loop {
                let job = rx.lock().ok().and_then(|r| r.recv().ok());
                let Some((key, node)) = job else { return };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                match upload(repo, &index, target, &key, &node) {
                    Ok(n) => {
                        progress.objects.fetch_add(1, Ordering::Relaxed);
                        progress.bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            });
        }
        let walked = match &node {
            None => walk(
                repo,
                &index,
                &snapshot.tree,
                &mut Vec::new(),
                path,
                &tx,
                &stop,
                &mut report,
            ),
            Some(n) if n.kind == NodeKind::Dir => match n.subtree {
                Some(t) => walk(
                    repo,
                    &index,
                    &t,
                    &mut Vec::new(),
                    path,
                    &tx,
                    &stop,
                    &mut report,
                ),
                None => Ok(()),
            },
            Some(n) if n.kind == NodeKind::File => {
                let rel = rel_key(std::slice::from_ref(&n.name), path)?;
                tx.send((rel, n.clone())).ok();
                Ok(())
            }
            Some(_) => {
                report.skipped.push(path.to_string());
                Ok(())
            }
        };
        drop(tx);
        walked
    })?;
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    report.objects = progress.objects.load(Ordering::Relaxed);
    report.bytes = progress.bytes.load(Ordering::Relaxed);
    report.duration_ns = started.elapsed().as_nanos() as u64;
    Ok(report)
}

/// The key, relative to the target's prefix, of a recorded path below `base`.
fn rel_key(path: &[Vec<u8>], base: &str) -> Result<String, BucketError> {
    names::path_to_key(path).ok_or_else(|| BucketError::NotAKey {
        path: format!(
            "{}/{}",
            base.trim_end_matches('/'),
            holdfast_engine::feed::display_path(path)
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &MasterIndex,
    tree: &holdfast_repo::Id,
    path: &mut Vec<Vec<u8>>,
    base: &str,
    tx: &mpsc::SyncSender<(String, Node)>,
    stop: &AtomicBool,
    report: &mut RestoreReport,
) -> Result<(), BucketError> {
    let t = repo.load_tree(index, tree)?;
    for n in t.nodes {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        path.push(n.name.clone());
        match n.kind {
            NodeKind::Dir => {
                if let Some(sub) = n.subtree {
                    walk(repo, index, &sub, path, base, tx, stop, report)?;
                }
            }
            NodeKind::File => {
                let rel = rel_key(path, base)?;
                if tx.send((rel, n)).is_err() {
                    return Ok(());
                }
            }
            _ => report.skipped.push(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                holdfast_engine::feed::display_path(path)
            )),
        }
        path.pop();
    }
    Ok(())
}

/// The headers and metadata recorded for a file.
struct Headers {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    metadata: HashMap<String, String>,
}

fn headers(node: &Node) -> Headers {
    let mut h = Headers {
        content_type: None,
        cache_control: None,
        content_encoding: None,
        content_disposition: None,
        content_language: None,
        metadata: HashMap::new(),
    };
    for x in &node.xattrs {
        let Some(name) = x.name.strip_prefix(XATTR_OBJ.as_bytes()) else {
            continue;
        };
        let value = String::from_utf8_lossy(&x.value).into_owned();
        match name {
            b"content-type" => h.content_type = Some(value),
            b"cache-control" => h.cache_control = Some(value),
            b"content-encoding" => h.content_encoding = Some(value),
            b"content-disposition" => h.content_disposition = Some(value),
            b"content-language" => h.content_language = Some(value),
            _ => {
                if let Some(k) = name.strip_prefix(b"meta.") {
                    h.metadata
                        .insert(String::from_utf8_lossy(k).into_owned(), value);
                }
            }
        }
    }
    h
}

/// Uploads one file as the object `rel` below the target's prefix; returns its size.
fn upload(
    repo: &Repository,
    index: &MasterIndex,
    target: &Bucket,
    rel: &str,
    node: &Node,
) -> Result<u64, BucketError> {
    let key = target.location().key(rel);
    let bucket = target.location().bucket.clone();
    let h = headers(node);
    let fail = |why: String| BucketError::Upload {
        key: key.clone(),
        why,
    };
    let meta = (!h.metadata.is_empty()).then(|| h.metadata.clone());
    if node.size <= PART_SIZE {
        let mut data = Vec::with_capacity(node.size as usize);
        restorer::dump(repo, index, node, &mut data)?;
        let n = data.len() as u64;
        let req = target
            .client()
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .content_length(n as i64)
            .set_content_type(h.content_type)
            .set_cache_control(h.cache_control)
            .set_content_encoding(h.content_encoding)
            .set_content_disposition(h.content_disposition)
            .set_content_language(h.content_language)
            .set_metadata(meta)
            .body(ByteStream::from(data));
        target
            .block_on(req.send())
            .map_err(|e| fail(describe(&e)))?;
        target.count_put();
        return Ok(n);
    }
    let create = target
        .client()
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .set_content_type(h.content_type)
        .set_cache_control(h.cache_control)
        .set_content_encoding(h.content_encoding)
        .set_content_disposition(h.content_disposition)
        .set_content_language(h.content_language)
        .set_metadata(meta);
    let upload_id = target
        .block_on(create.send())
        .map_err(|e| fail(describe(&e)))?
        .upload_id()
        .map(str::to_string)
        .ok_or_else(|| fail("the server gave no upload ID".into()))?;
    let mut parts: Vec<CompletedPart> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(PART_SIZE as usize);
    let mut total = 0u64;
    let send_part = |buf: Vec<u8>, parts: &mut Vec<CompletedPart>| -> Result<(), BucketError> {
        let number = parts.len() as i32 + 1;
        let req = target
            .client()
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number)
            .content_length(buf.len() as i64)
            .body(ByteStream::from(buf));
        let out = target
            .block_on(req.send())
            .map_err(|e| fail(describe(&e)))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    };
    let zeros = [0u8; 1 << 16];
    let outcome = (|| -> Result<(), BucketError> {
        let mut pending: Option<BucketError> = None;
        restorer::for_each_piece(repo, index, node, |_, piece| {
            let mut push = |data: &[u8]| {
                let mut data = data;
                while !data.is_empty() && pending.is_none() {
                    let k = data.len().min(PART_SIZE as usize - buf.len());
                    buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    total += k as u64;
                    if buf.len() == PART_SIZE as usize {
                        let full =
                            std::mem::replace(&mut buf, Vec::with_capacity(PART_SIZE as usize));
                        if let Err(e) = send_part(full, &mut parts) {
                            pending = Some(e);
                        }
                    }
                }
            };
            match piece {
                ContentPiece::Data(d) => push(d),
                ContentPiece::Zeros(mut z) => {
                    while z > 0 {
                        let k = z.min(zeros.len() as u64) as usize;
                        push(&zeros[..k]);
                        z -= k as u64;
                    }
                }
            }
            Ok(())
        })?;
        if let Some(e) = pending {
            return Err(e);
        }
        if !buf.is_empty() || parts.is_empty() {
            send_part(std::mem::take(&mut buf), &mut parts)?;
        }
        let done = target
            .client()
            .complete_multipart_upload()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            );
        target
            .block_on(done.send())
            .map_err(|e| fail(describe(&e)))?;
        Ok(())
    })();
    if let Err(e) = outcome {
        let abort = target
            .client()
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id);
        let _ = target.block_on(abort.send());
        return Err(e);
    }
    target.count_put();
    Ok(total)
}
