//! Downloads: a file as it is stored, and a folder (or a whole snapshot) as a tar archive.
//!
//! Both are produced on a blocking thread and handed to the response body through a small
//! bounded channel ([`ChannelWriter`]): the server holds a few chunks and the blobs being
//! read, never the whole file or archive, and a client that goes away stops the producer
//! (its next send fails). If reading fails half-way the body ends with an error, so the
//! client sees a broken download rather than a short one that looks complete.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use holdfast_engine::restorer::{read_window, ReadPiece};
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{ContentRef, Node, NodeKind};
use holdfast_repo::Id;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::catalog::Catalog;
use crate::pages::error_page;
use crate::paths::{show, Params};
use crate::App;

/// Bytes gathered before a chunk is handed to the response body.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the producer and the body.
const CHANNEL_CHUNKS: usize = 8;
/// Plaintext a tar entry reads ahead, in parallel (bounds memory per download).
const TAR_WINDOW: u64 = 8 * 1024 * 1024;

type Chunk = Result<Bytes, io::Error>;

/// A `Write` that sends what is written, in [`CHUNK`]s, to a response body.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// A response body fed by `produce`, run on a blocking thread with a [`ChannelWriter`].
fn streamed<F>(produce: F) -> Body
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = produce(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::warn!("web UI download stopped: {e}");
            let _ = tx.blocking_send(Err(io::Error::other(e)));
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

/// `Content-Disposition: attachment` naming `name` (an ASCII fallback, and the name
/// itself percent-encoded as RFC 6266 allows).
fn disposition(name: &[u8]) -> String {
    let ascii: String = show(name)
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::percent_encode(show(name).as_bytes(), percent_encoding::NON_ALPHANUMERIC)
    )
}

/// Finds snapshot `hex` and the entry at the query's `p`; an error page if either is
/// missing.
async fn resolve(
    app: &Arc<App>,
    caller: &Caller,
    hex: &str,
    q: Option<String>,
) -> Result<(Arc<MasterIndex>, Id, Id, Vec<u8>, Option<Node>), Response> {
    let q = Params::parse(q.as_deref().unwrap_or(""));
    let path = q.snapshot_path();
    let (loaded, id, snap) = app
        .catalog
        .snapshot(hex)
        .await
        .map_err(|e| error_page(app, caller, StatusCode::NOT_FOUND, &e))?;
    let app2 = app.clone();
    let (index, root, p2) = (loaded.index.clone(), snap.tree, path.clone());
    let node = tokio::task::spawn_blocking(move || app2.catalog.lookup(&index, &root, &p2))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| error_page(app, caller, StatusCode::NOT_FOUND, &e))?;
    Ok((loaded.index.clone(), id, snap.tree, path, node))
}

/// `GET /s/ID/file?p=PATH`: the file's content, streamed, with its length.
pub(crate) async fn file(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(hex): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (index, _, _, _, node) = match resolve(&app, &caller, &hex, q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(node) = node.filter(|n| n.kind == NodeKind::File) else {
        return error_page(
            &app,
            &caller,
            StatusCode::BAD_REQUEST,
            "that is not a regular file: download folders as tar",
        );
    };
    let repo = app.catalog.repo().clone();
    let (len, name) = (node.size, node.name.clone());
    let body = streamed(move |w| {
        let n =
            holdfast_engine::restorer::dump(&repo, &index, &node, w).map_err(|e| e.to_string())?;
        if n != node.size {
            return Err(format!(
                "{} holds {n} bytes, but its entry says {}",
                show(&node.name),
                node.size
            ));
        }
        Ok(())
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, disposition(&name)),
        ],
        body,
    )
        .into_response()
}

/// `GET /s/ID/tar?p=PATH`: the folder (or the whole snapshot) as a tar archive, streamed.
pub(crate) async fn tar(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(hex): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (index, id, root, _, node) = match resolve(&app, &caller, &hex, q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name: Vec<u8> = match &node {
        Some(n) => n.name.clone(),
        None => format!("snapshot-{}", id.short()).into_bytes(),
    };
    let mut file_name = name.clone();
    file_name.extend_from_slice(b".tar");
    let app2 = app.clone();
    let body = streamed(move |w| {
        let mut b = tar::Builder::new(w);
        let repo = app2.catalog.repo().clone();
        let t = Tar {
            repo: &repo,
            index: &index,
            catalog: &app2.catalog,
        };
        match &node {
            Some(n) => t.entry(&mut b, PathBuf::from(OsStr::from_bytes(&name)), n)?,
            None => {
                let prefix = PathBuf::from(OsStr::from_bytes(&name));
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &prefix, io::empty())
                    .map_err(|e| e.to_string())?;
                t.children(&mut b, &prefix, &root)?
            }
        }
        b.finish().map_err(|e| e.to_string())
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, disposition(&file_name)),
        ],
        body,
    )
        .into_response()
}

/// Writes tar entries for snapshot nodes.
struct Tar<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    catalog: &'a Catalog,
}

impl Tar<'_> {
    fn children<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        dir: &FsPath,
        tree: &Id,
    ) -> Result<(), String> {
        let tree = self.catalog.tree(self.index, tree)?;
        for n in &tree.nodes {
            self.entry(b, dir.join(OsStr::from_bytes(&n.name)), n)?;
        }
        Ok(())
    }

    fn entry<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        path: PathBuf,
        n: &Node,
    ) -> Result<(), String> {
        let io = |e: io::Error| format!("{}: {e}", path.display());
        let mut h = tar::Header::new_gnu();
        h.set_mode(n.mode & 0o7777);
        h.set_mtime(u64::try_from(n.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
        h.set_uid(u64::from(n.uid));
        h.set_gid(u64::from(n.gid));
        // Names that do not fit the header are left out (the IDs stay).
        let _ = h.set_username(&n.user);
        let _ = h.set_groupname(&n.group);
        h.set_size(0);
        if n.kind != NodeKind::Socket {
            pax_mtime(b, n.mtime_ns).map_err(io)?;
        }
        match n.kind {
            NodeKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, &path, io::empty()).map_err(io)?;
                if let Some(sub) = &n.subtree {
                    self.children(b, &path, sub)?;
                }
            }
            NodeKind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(n.size);
                let mut r = ContentReader::new(self.repo, self.index, &n.content);
                b.append_data(&mut h, &path, (&mut r).take(n.size))
                    .map_err(io)?;
                if r.produced != n.size {
                    return Err(format!(
                        "{}: the content holds {} bytes, its entry says {}",
                        path.display(),
                        r.produced,
                        n.size
                    ));
                }
            }
            NodeKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &path, OsStr::from_bytes(&n.link_target))
                    .map_err(io)?;
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                h.set_entry_type(match n.kind {
                    NodeKind::Fifo => tar::EntryType::Fifo,
                    NodeKind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                let (major, minor) = dev_split(n.rdev);
                let _ = h.set_device_major(major);
                let _ = h.set_device_minor(minor);
                b.append_data(&mut h, &path, io::empty()).map_err(io)?;
            }
            // Sockets cannot be recreated from an archive.
            NodeKind::Socket => {}
        }
        Ok(())
    }
}

/// A PAX extended header giving the next entry's mtime to the nanosecond, when it is not
/// a whole second (a tar header holds whole seconds; GNU tar and bsdtar read PAX headers).
fn pax_mtime<W: Write>(b: &mut tar::Builder<W>, mtime_ns: i64) -> io::Result<()> {
    let nsec = mtime_ns.rem_euclid(1_000_000_000);
    if nsec == 0 {
        return Ok(());
    }
    let rec = pax_record(
        "mtime",
        &format!("{}.{nsec:09}", mtime_ns.div_euclid(1_000_000_000)),
    );
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(rec.len() as u64);
    b.append_data(&mut h, "PaxHeader", rec.as_bytes())
}

/// One PAX record, `LEN KEY=VALUE\n`, where LEN counts the whole record with itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len != body.len() + len.to_string().len() {
        len = body.len() + len.to_string().len();
    }
    format!("{len}{body}")
}

/// Linux's `major()` and `minor()` of a device number.
fn dev_split(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// One piece of content read ahead.
enum Piece {
    Data(Vec<u8>, usize),
    Zeros(u64),
}

/// A file's content as a `Read`: blobs fetched window by window ([`TAR_WINDOW`]), each
/// window's blobs in parallel; zero runs as zeros.
struct ContentReader<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    rest: &'a [ContentRef],
    ready: VecDeque<Piece>,
    produced: u64,
}

impl<'a> ContentReader<'a> {
    fn new(repo: &'a Repository, index: &'a MasterIndex, content: &'a [ContentRef]) -> Self {
        ContentReader {
            repo,
            index,
            rest: content,
            ready: VecDeque::new(),
            produced: 0,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let (pieces, tail) = read_window(self.repo, self.index, self.rest, TAR_WINDOW)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.ready.extend(pieces.into_iter().map(|p| match p {
            ReadPiece::Data(b) => Piece::Data(b, 0),
            ReadPiece::Zeros(z) => Piece::Zeros(z),
        }));
        self.rest = tail;
        Ok(())
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ready.is_empty() {
                if self.rest.is_empty() {
                    return Ok(0);
                }
                self.refill()?;
            }
            let k = match self.ready.front_mut() {
                Some(Piece::Data(d, at)) => {
                    let k = (d.len() - *at).min(buf.len());
                    buf[..k].copy_from_slice(&d[*at..*at + k]);
                    *at += k;
                    k
                }
                Some(Piece::Zeros(z)) => {
                    let k = (*z).min(buf.len() as u64) as usize;
                    buf[..k].fill(0);
                    *z -= k as u64;
                    k
                }
                None => 0,
            };
            if k == 0 && !buf.is_empty() {
                self.ready.pop_front();
                continue;
            }
            self.produced += k as u64;
            return Ok(k);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_records_count_their_own_length() {
        let r = super::pax_record("mtime", "1234567890.000000001");
        assert_eq!(r, "30 mtime=1234567890.000000001\n");
        assert_eq!(r.len(), 30);
        let r = super::pax_record("k", "v");
        assert_eq!(r, "6 k=v\n");
    }
}
