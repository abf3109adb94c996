//! Images: the content of a block device (or a regular file such as a disk image) backed
//! up as one regular file, and written back onto a device in place.
//!
//! A backup reads an image through the same chunking path as any file (holes and all-zero
//! chunks become zero runs). With changed extents ([`ImageBase`]: the byte ranges that may
//! differ from an image an earlier snapshot holds, as `rbd diff --from-snap` or the CSI
//! SnapshotMetadata service report them) it reads only around those ranges and reuses the
//! earlier snapshot's content refs everywhere else (SPEC.md §10.4):
//!
//! * for each changed extent, the chunker restarts at the base's last chunk boundary
//!   strictly before the extent (a content ref boundary, or a point on the zero-chunk grid
//!   inside a zero run), and chunks forward through the extent;
//! * as soon as one of its cuts lies at or past the extent's end *and* on a boundary of the
//!   base, the rest is the base's refs again (resynchronisation).
//!
//! Correctness does not depend on chunking at all: every base ref reused covers bytes no
//! extent touches, and every other byte is read now. Chunking decides only how well the
//! result deduplicates; because a FastCDC cut at position `p` depends only on the bytes
//! from the chunk's start up to `p` (inclusive), restarting at a base boundary strictly
//! before the first changed byte and resynchronising at a boundary at or after the last
//! one gives exactly the refs a full read would (the tests hold the two equal).

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use holdfast_repo::blob::BlobType;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{ContentRef, Node, NodeKind};
use holdfast_repo::Id;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A byte range of an image: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// The range `offset .. offset + len`.
    pub fn new(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// What an incremental image backup builds on: a snapshot holding the previous image at
/// the same recorded path, and every byte range that may differ between the image that
/// snapshot read and the one read now.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageBase {
    /// The holdfast snapshot with the previous image (at the source's recorded path).
    pub snapshot: Id,
    /// The ranges that may have changed since; any order, overlaps allowed. A range that
    /// is missing here is trusted to be unchanged: list too much rather than too little.
    pub extents: Vec<Extent>,
}

/// Sorts `extents`, clips them to `size`, drops empty ones and merges overlapping and
/// touching ones.
pub fn normalize_extents(extents: &[Extent], size: u64) -> Vec<Extent> {
    let mut v: Vec<Extent> = extents
        .iter()
        .filter(|e| e.offset < size && e.len > 0)
        .map(|e| Extent::new(e.offset, e.end().min(size) - e.offset))
        .collect();
    v.sort();
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Changed extents as `rbd diff --format json` prints them
/// (`[{"offset":0,"length":4194304,"exists":"true"},…]`) or as plain
/// `[{"offset":…,"length":…}]` (`len` is accepted for `length`). Entries with
/// `"exists":"false"` (discarded ranges, now zeros) are changes too.
pub fn parse_extents_json(text: &str) -> std::result::Result<Vec<Extent>, String> {
    #[derive(Deserialize)]
    struct Entry {
        offset: u64,
        #[serde(alias = "len")]
        length: u64,
    }
    let entries: Vec<Entry> = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON list of {{\"offset\": …, \"length\": …}} objects: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| Extent::new(e.offset, e.length))
        .collect())
}

/// The base image's content refs with their positions, as the changed-extent read sees
/// them.
#[derive(Debug)]
pub(crate) struct BaseLayout {
    /// Each ref with its first byte and length, in order, covering `0 .. size`.
    refs: Vec<(u64, ContentRef, u64)>,
    size: u64,
    /// Length of an all-zero chunk cut from a chunk boundary (the zero-run grid).
    zero_chunk: u64,
}

impl BaseLayout {
    /// The layout of `content` (a file of `size` bytes); blob lengths come from `len_of`.
    /// `Err` says why it cannot be used (a blob that is not indexed, lengths that do not
    /// add up to `size`).
    pub(crate) fn new(
        content: &[ContentRef],
        size: u64,
        zero_chunk: u64,
        len_of: impl Fn(&Id) -> Option<u64>,
    ) -> std::result::Result<BaseLayout, String> {
        let mut refs = Vec::with_capacity(content.len());
        let mut at = 0u64;
        for c in content {
            let n = match c {
                ContentRef::Zeros(n) => *n,
                ContentRef::Blob(id) => {
                    len_of(id).ok_or_else(|| format!("its data blob {} is gone", id.short()))?
                }
            };
            if n == 0 {
                continue;
            }
            refs.push((at, *c, n));
            at += n;
        }
        if at != size {
            return Err(format!("its content adds up to {at} bytes, not {size}"));
        }
        Ok(BaseLayout {
            refs,
            size,
            zero_chunk: zero_chunk.max(1),
        })
    }

    /// Whether a chunk of the base starts (or the image ends) at `p`.
    pub(crate) fn is_boundary(&self, p: u64) -> bool {
        p == self.size || self.refs.binary_search_by_key(&p, |r| r.0).is_ok()
    }

    /// Where to restart the chunker for a change at `offset`: the last chunk boundary of
    /// the base strictly before it (0 for a change at 0). Inside a zero run the boundaries
    /// are its start plus multiples of the zero-chunk length.
    pub(crate) fn restart_before(&self, offset: u64) -> u64 {
        if offset == 0 {
            return 0;
        }
        // The ref holding byte offset - 1.
        let i = self
            .refs
            .partition_point(|r| r.0 < offset)
            .saturating_sub(1);
        let Some(&(start, c, _)) = self.refs.get(i) else {
            return 0;
        };
        match c {
            ContentRef::Zeros(_) => {
                let k = (offset - 1 - start) / self.zero_chunk;
                start + k * self.zero_chunk
            }
            ContentRef::Blob(_) => start,
        }
    }

    /// Where a read that reached `p` (a chunk boundary of the new image) may skip to when
    /// `p` lies inside a zero run of the base, the bytes from `p` to before `limit` (the
    /// next change) being unchanged: the last point of the zero-chunk grid from `p` whose
    /// deciding byte is still a zero of that run. A full read would cut only zero chunks
    /// up to there. `None` if that is `p` itself or `p` is not in a zero run.
    pub(crate) fn zero_skip(&self, p: u64, limit: u64) -> Option<u64> {
        let i = self.refs.partition_point(|r| r.0 <= p).checked_sub(1)?;
        let &(start, c, n) = self.refs.get(i)?;
        if !matches!(c, ContentRef::Zeros(_)) || p < start || p >= start + n {
            return None;
        }
        let last = (start + n).min(limit).checked_sub(1)?;
        if last <= p {
            return None;
        }
        let q = p + (last - p) / self.zero_chunk * self.zero_chunk;
        (q > p).then_some(q)
    }

    /// Appends the base's refs for `from .. to` to `out` (zero runs merged). `from` and
    /// `to` are boundaries or lie inside zero runs.
    pub(crate) fn copy(&self, from: u64, to: u64, out: &mut Vec<ContentRef>) {
        if from >= to {
            return;
        }
        let first = self.refs.partition_point(|r| r.0 + r.2 <= from);
        for &(start, c, n) in &self.refs[first..] {
            if start >= to {
                break;
            }
            match c {
                ContentRef::Zeros(_) => {
                    let a = start.max(from);
                    let b = (start + n).min(to);
                    push_zeros(out, b - a);
                }
                ContentRef::Blob(_) => {
                    debug_assert!(start >= from && start + n <= to, "blob split");
                    out.push(c);
                }
            }
        }
    }
}

/// Appends `n` zero bytes to a content list, merged into a zero run before them.
pub(crate) fn push_zeros(content: &mut Vec<ContentRef>, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(ContentRef::Zeros(z)) = content.last_mut() {
        *z += n;
    } else {
        content.push(ContentRef::Zeros(n));
    }
}

/// The resynchronisation rule of a changed-extent read: the extents still to come, and the
/// end the current region must reach before the base may be used again.
#[derive(Debug)]
pub(crate) struct Resync<'a> {
    extents: &'a [Extent],
    next: usize,
    must_reach: u64,
}

impl<'a> Resync<'a> {
    /// Over `extents` (normalised).
    pub(crate) fn new(extents: &'a [Extent]) -> Resync<'a> {
        Resync {
            extents,
            next: 0,
            must_reach: 0,
        }
    }

    /// The next changed extent, which starts a region (and is consumed), if any.
    pub(crate) fn start_region(&mut self) -> Option<Extent> {
        let e = *self.extents.get(self.next)?;
        self.next += 1;
        self.must_reach = e.end();
        Some(e)
    }

    /// Whether the read may stop at a chunk cut at `p`: every extent starting at or before
    /// `p` is covered (a cut at `p` was decided by byte `p`, which must be one the base
    /// also had), `p` is at or past the end of them all, and the base has a boundary there
    /// (resynchronised) or a zero run to skip ([`BaseLayout::zero_skip`]).
    pub(crate) fn can_end_at(&mut self, p: u64, base: &BaseLayout) -> bool {
        while let Some(e) = self.extents.get(self.next).filter(|e| e.offset <= p) {
            self.must_reach = self.must_reach.max(e.end());
            self.next += 1;
        }
        p >= self.must_reach
            && p < base.size
            && (base.is_boundary(p) || base.zero_skip(p, self.next_offset(base.size)).is_some())
    }

    /// Where the next extent not yet covered starts (`size` if none).
    pub(crate) fn next_offset(&self, size: u64) -> u64 {
        self.extents.get(self.next).map_or(size, |e| e.offset)
    }
}

/// Size in bytes of an open block device or regular file.
pub fn image_size(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        use std::io::Seek;
        let mut f = file;
        let end = f.seek(std::io::SeekFrom::End(0))?;
        f.seek(std::io::SeekFrom::Start(0))?;
        Ok(end)
    } else {
        Ok(meta.len())
    }
}

/// What [`write_into`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteIntoReport {
    /// Bytes of the file (all of them were written or zeroed).
    pub bytes: u64,
    /// Bytes of data written.
    pub data_bytes: u64,
    /// Bytes zeroed (holes punched, device ranges zeroed) for zero runs.
    pub zeroed_bytes: u64,
    /// Whether the target is a block device.
    pub block_device: bool,
}

/// Writes the content of a file node (a snapshot's image) onto `target`, an existing block
/// device or regular file, in place. Blobs are written at their offsets; zero runs are
/// made zeros (the target is not known to be empty): on a block device with
/// `fallocate(FALLOC_FL_ZERO_RANGE)` (what `BLKZEROOUT` does; plain zero writes where it
/// is not supported), on a regular file by punching holes. A regular file is then cut to
/// the node's size; a device must be at least that large (bytes past it are left alone).
/// The node's metadata is not applied.
pub fn write_into(
    repo: &Repository,
    index: &MasterIndex,
    node: &Node,
    target: &Path,
) -> Result<WriteIntoReport> {
    if node.kind != NodeKind::File {
        return Err(EngineError::Usage(format!(
            "{} is not a regular file in the snapshot; only a file can be written onto a device",
            String::from_utf8_lossy(&node.name)
        )));
    }
    let io = |op: &'static str, e: std::io::Error| {
        EngineError::Fs(crate::fsmeta::FsError::Io {
            op,
            path: target.to_path_buf(),
            source: e,
        })
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(target)
        .map_err(|e| io("open", e))?;
    let meta = file.metadata().map_err(|e| io("stat", e))?;
    let block_device = meta.file_type().is_block_device();
    if !block_device && !meta.is_file() {
        return Err(EngineError::Usage(format!(
            "{} is neither a block device nor a regular file",
            target.display()
        )));
    }
    if block_device {
        let size = image_size(&file).map_err(|e| io("size", e))?;
        if size < node.size {
            return Err(EngineError::Usage(format!(
                "{} holds {size} bytes, less than the image's {}; nothing was written",
                target.display(),
                node.size
            )));
        }
    }
    let mut report = WriteIntoReport {
        bytes: node.size,
        block_device,
        ..Default::default()
    };
    crate::restorer::for_each_piece(repo, index, node, |at, piece| {
        match piece {
            crate::restorer::ContentPiece::Data(b) => {
                file.write_all_at(b, at).map_err(|e| io("write", e))?;
                report.data_bytes += b.len() as u64;
            }
            crate::restorer::ContentPiece::Zeros(n) => {
                zero_range(&file, at, n, block_device).map_err(|e| io("zero", e))?;
                report.zeroed_bytes += n;
            }
        }
        Ok(())
    })?;
    if !block_device {
        file.set_len(node.size).map_err(|e| io("set length", e))?;
    }
    file.sync_all().map_err(|e| io("sync", e))?;
    Ok(report)
}

/// Makes `len` bytes at `at` read as zeros: a zeroed range on a block device, a punched
/// hole in a regular file; zeros written where neither is supported.
fn zero_range(file: &File, at: u64, len: u64, block_device: bool) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let flags = if block_device {
        FallocateFlags::FALLOC_FL_ZERO_RANGE
    } else {
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
    };
    // Devices zero whole logical blocks only: the aligned middle that way, edges written.
    let (mid_from, mid_to) = if block_device {
        (at.next_multiple_of(4096), (at + len) / 4096 * 4096)
    } else {
        (at, at + len)
    };
    if mid_to > mid_from {
        let ok = match (i64::try_from(mid_from), i64::try_from(mid_to - mid_from)) {
            (Ok(o), Ok(l)) => fallocate(file.as_raw_fd(), flags, o, l).is_ok(),
            _ => false,
        };
        if ok {
            write_zeros(file, at, mid_from - at)?;
            return write_zeros(file, mid_to, at + len - mid_to);
        }
    }
    write_zeros(file, at, len)
}

fn write_zeros(file: &File, mut at: u64, len: u64) -> std::io::Result<()> {
    const Z: usize = 1 << 20;
    let zeros = vec![0u8; Z.min(len as usize)];
    let end = at + len;
    while at < end {
        let k = (end - at).min(Z as u64) as usize;
        file.write_all_at(&zeros[..k], at)?;
        at += k as u64;
    }
    Ok(())
}

/// The node of the file at `recorded` (an absolute path) in snapshot `snapshot`, if it is
/// there.
pub(crate) fn base_node(
    repo: &Repository,
    index: &MasterIndex,
    snapshot: &Id,
    recorded: &Path,
) -> std::result::Result<Node, String> {
    use std::os::unix::ffi::OsStrExt;
    let snap = repo
        .load_snapshot(snapshot)
        .map_err(|e| format!("snapshot {}: {e}", snapshot.short()))?;
    let node = crate::restorer::lookup(repo, index, &snap.tree, recorded.as_os_str().as_bytes())
        .map_err(|e| format!("snapshot {}: {e}", snapshot.short()))?
        .ok_or_else(|| format!("snapshot {} has no file there", snapshot.short()))?;
    if node.kind != NodeKind::File {
        return Err(format!(
            "in snapshot {} it is not a regular file",
            snapshot.short()
        ));
    }
    Ok(node)
}

/// Length of a data blob, from the index.
pub(crate) fn blob_len(index: &MasterIndex, id: &Id) -> Option<u64> {
    index
        .get(BlobType::Data, id)
        .map(|l| u64::from(l.entry.raw_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(o: u64, l: u64) -> Extent {
        Extent::new(o, l)
    }

    #[test]
    fn extents_are_sorted_merged_and_clipped() {
        let got = normalize_extents(
            &[
                e(100, 10),
                e(0, 5),
                e(5, 5),
                e(105, 20),
                e(200, 0),
                e(990, 50),
                e(2000, 1),
            ],
            1000,
        );
        assert_eq!(got, vec![e(0, 10), e(100, 25), e(990, 10)]);
        assert_eq!(normalize_extents(&[], 10), vec![]);
        assert_eq!(
            normalize_extents(&[e(u64::MAX - 1, 5)], u64::MAX),
            vec![e(u64::MAX - 1, 1)]
        );
        // Contained ranges vanish into the outer one.
        assert_eq!(
            normalize_extents(&[e(0, 100), e(10, 5)], 1000),
            vec![e(0, 100)]
        );
    }

    #[test]
    fn rbd_diff_json_and_plain_lists_parse() {
        let rbd = r#"[{"offset":0,"length":4194304,"exists":"true"},{"offset":8388608,"length":4096,"exists":"false"}]"#;
        assert_eq!(
            parse_extents_json(rbd).unwrap(),
            vec![e(0, 4194304), e(8388608, 4096)]
        );
        assert_eq!(
            parse_extents_json(r#"[{"offset":1,"len":2}]"#).unwrap(),
            vec![e(1, 2)]
        );
        assert_eq!(parse_extents_json("[]").unwrap(), vec![]);
        assert!(parse_extents_json(r#"{"offset":1}"#).is_err());
        assert!(parse_extents_json(r#"[{"offset":1}]"#).is_err());
    }

    fn id(b: u8) -> Id {
        Id([b; 32])
    }

    fn layout() -> BaseLayout {
        // blob 0..10, zeros 10..50 (grid 8), blob 50..60
        let content = [
            ContentRef::Blob(id(1)),
            ContentRef::Zeros(40),
            ContentRef::Blob(id(2)),
        ];
        BaseLayout::new(&content, 60, 8, |_| Some(10)).unwrap()
    }

    #[test]
    fn restart_points_are_boundaries_strictly_before_the_change() {
        let l = layout();
        assert_eq!(l.restart_before(0), 0);
        assert_eq!(l.restart_before(5), 0);
        assert_eq!(l.restart_before(10), 0, "a cut at 10 depended on byte 10");
        assert_eq!(l.restart_before(11), 10);
        assert_eq!(l.restart_before(18), 10);
        assert_eq!(l.restart_before(19), 18, "on the zero grid");
        assert_eq!(l.restart_before(50), 42);
        assert_eq!(l.restart_before(51), 50);
        assert!(l.is_boundary(50) && l.is_boundary(10) && l.is_boundary(60));
        assert!(!l.is_boundary(18) && !l.is_boundary(55));
    }

    #[test]
    fn copy_splits_only_zero_runs() {
        let l = layout();
        let mut out = vec![ContentRef::Zeros(3)];
        l.copy(0, 26, &mut out);
        assert_eq!(
            out,
            vec![
                ContentRef::Zeros(3),
                ContentRef::Blob(id(1)),
                ContentRef::Zeros(16)
            ]
        );
        let mut out = vec![ContentRef::Zeros(1)];
        l.copy(26, 60, &mut out);
        assert_eq!(out, vec![ContentRef::Zeros(25), ContentRef::Blob(id(2))]);
    }

    #[test]
    fn zero_runs_are_skipped_on_the_grid_up_to_their_last_zero() {
        let l = layout(); // zeros 10..50, grid 8
        assert_eq!(l.zero_skip(13, 60), Some(45), "13 + 4·8, byte 45 < 50");
        assert_eq!(
            l.zero_skip(13, 30),
            Some(29),
            "before the next change at 30"
        );
        assert_eq!(l.zero_skip(13, 20), None, "less than one zero chunk");
        assert_eq!(l.zero_skip(5, 60), None, "in a blob");
        assert_eq!(l.zero_skip(50, 60), None, "a boundary, not inside");
        assert_eq!(l.zero_skip(10, 60), Some(42));
    }

    #[test]
    fn layout_refuses_content_that_does_not_add_up() {
        let content = [ContentRef::Blob(id(1))];
        assert!(BaseLayout::new(&content, 11, 8, |_| Some(10)).is_err());
        assert!(BaseLayout::new(&content, 10, 8, |_| None).is_err());
    }

    #[test]
    fn resync_waits_for_every_overlapping_extent() {
        let l = layout();
        let ex = [e(5, 10), e(30, 25)];
        let mut r = Resync::new(&ex);
        assert_eq!(r.start_region(), Some(e(5, 10)));
        assert!(!r.can_end_at(10, &l), "before the extent's end");
        assert!(!r.can_end_at(50, &l), "the second extent started before 50");
        assert!(!r.can_end_at(55, &l), "not a base boundary");
        assert!(!r.can_end_at(60, &l), "the end is not a resync");
        assert_eq!(r.start_region(), None);
        let mut r = Resync::new(&ex);
        r.start_region();
        assert!(!r.can_end_at(10, &l));
        let one = [e(0, 5)];
        let mut r = Resync::new(&one);
        r.start_region();
        assert!(r.can_end_at(10, &l));
        // A change starting right at a base boundary: the base's cut there looked at the
        // changed byte, so it is no place to resynchronise.
        let two = [e(0, 5), e(10, 1)];
        let mut r = Resync::new(&two);
        r.start_region();
        assert!(!r.can_end_at(10, &l));
        assert!(r.can_end_at(50, &l));
        assert_eq!(r.start_region(), None);
    }
}
