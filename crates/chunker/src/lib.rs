//! Content-defined chunking for holdfast.
//!
//! A file (or any byte stream) is split into variable-sized chunks whose
//! boundaries depend only on the content, the [`ChunkerParams`] and the
//! repository's secret chunker key. Identical runs of data therefore produce
//! identical chunks wherever they appear, which is what makes deduplication
//! work across files, snapshots and shifted data.
//!
//! # Algorithm
//!
//! We use FastCDC 2020 (Xia et al., "The Design of Fast Content-Defined
//! Chunking for Data Deduplication Based Storage Systems", IEEE TPDS 2020) as
//! implemented by the `fastcdc` crate's [`fastcdc::v2020::cut_gear`]: gear
//! rolling hash, sub-minimum cut-point skipping, "rolling two bytes each time",
//! and normalized chunking at **level 1** (a stricter mask below the average
//! size and a looser one above it, which narrows the size distribution without
//! hurting dedup much). We do not re-implement the hot loop; this crate only
//! supplies the gear tables, validates parameters and handles streaming.
//!
//! # Keyed gear table
//!
//! With a public gear table, the sequence of chunk sizes is a fingerprint of
//! the plaintext: an attacker who sees only encrypted chunk sizes (or pack
//! sizes) can test whether a repository contains a known file ("Chunking
//! Attacks on File Backup Services using Content-Defined Chunking", IACR
//! ePrint 2025/532). We derive all 256 gear values from a 32-byte
//! per-repository secret key with BLAKE3 in `derive_key` mode followed by XOF
//! output (see [`GearTable::from_key`]), so boundaries are unpredictable
//! without the key. This does not make chunk sizes leak-free, it raises the
//! cost of the attack from "look up a table" to "recover a secret table".
//!
//! # Why 512 KiB / 1 MiB / 8 MiB
//!
//! These are restic's proven bounds: a 1 MiB average keeps the index at about
//! one entry per MiB of unique data (small enough to hold in memory for
//! multi-TiB repositories) while still deduplicating well on real data, and
//! with a 512 KiB minimum most small files become a single chunk. The 8 MiB
//! maximum bounds memory per in-flight chunk on pathological (e.g. all-zero)
//! input.
//!
//! # Format stability
//!
//! Chunk boundaries are part of the repository format: changing the key
//! derivation, the normalization level, the masks or the parameters changes
//! every boundary and defeats deduplication against existing data. The
//! `pinned_vector_*` tests pin the current behaviour.

#![deny(missing_docs)]

use std::fmt;
use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};

/// BLAKE3 `derive_key` context string for the gear table; part of the format.
const GEAR_CONTEXT: &str = "holdfast 2026-11 chunker gear table v1";

/// Normalization level used for all chunking; part of the format.
const NORMALIZATION: Normalization = Normalization::Level1;

/// Upper bound on `max` imposed by holdfast itself (fastcdc's own limit is
/// lower still, see [`v2020::MAXIMUM_MAX`]).
const HOLDFAST_MAX_MAX: u32 = 64 * 1024 * 1024;

/// Errors from constructing a chunker.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    /// The min/avg/max chunk sizes violate a bound; the message says which.
    #[error("invalid chunker parameters: {0}")]
    InvalidParams(String),
}

/// Chunk size bounds in bytes.
///
/// All three values are part of the repository format: chunking the same data
/// with different parameters produces different chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Minimum chunk size; only the last chunk of a stream may be smaller.
    pub min: u32,
    /// Target average chunk size; must be a power of two.
    pub avg: u32,
    /// Maximum chunk size; no chunk is ever larger.
    pub max: u32,
}

impl ChunkerParams {
    /// min 512 KiB, avg 1 MiB, max 8 MiB (restic's bounds; see the crate docs).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };

    /// Checks `64 <= min <= avg <= max <= 64 MiB`, `avg` a power of two, all
    /// sizes even and within fastcdc's own limits.
    pub fn validate(&self) -> Result<(), ChunkerError> {
        let ChunkerParams { min, avg, max } = *self;
        let bad = |msg: String| Err(ChunkerError::InvalidParams(msg));
        if !(min <= avg && avg <= max) {
            return bad(format!(
                "need min <= avg <= max, got min={min} avg={avg} max={max}"
            ));
        }
        if !avg.is_power_of_two() {
            return bad(format!("avg={avg} is not a power of two"));
        }
        if max > HOLDFAST_MAX_MAX {
            return bad(format!("max={max} exceeds {HOLDFAST_MAX_MAX}"));
        }
        // fastcdc's documented ranges; its scan loop also needs even sizes
        // (it steps two bytes at a time, see fastcdc issue #52).
        let (min_u, avg_u, max_u) = (min as usize, avg as usize, max as usize);
        let ranges = [
            ("min", min_u, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
            ("avg", avg_u, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
            ("max", max_u, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX),
        ];
        for (name, value, lo, hi) in ranges {
            if value < lo || value > hi {
                return bad(format!("{name}={value} outside fastcdc range {lo}..={hi}"));
            }
            if value % 2 != 0 {
                return bad(format!("{name}={value} must be even"));
            }
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    /// Same as [`ChunkerParams::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A per-repository gear table: 256 `u64` derived from a 32-byte secret key via
/// BLAKE3 `derive_key`/XOF, plus the left-shifted twin FastCDC 2020 needs.
///
/// `Debug` is redacted: the values are key material for boundary prediction.
#[derive(Clone)]
pub struct GearTable {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl GearTable {
    /// Derives the table: BLAKE3 `derive_key` with context
    /// `"holdfast 2026-11 chunker gear table v1"` over `key`, the first 2048
    /// XOF bytes read as 256 little-endian `u64`; `gear_ls[i] = gear[i] << 1`.
    pub fn from_key(key: &[u8; 32]) -> GearTable {
        let mut hasher = blake3::Hasher::new_derive_key(GEAR_CONTEXT);
        hasher.update(key);
        let mut bytes = [0u8; 256 * 8];
        hasher.finalize_xof().fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            gear[i] = u64::from_le_bytes(le);
            gear_ls[i] = gear[i] << 1;
        }
        GearTable { gear, gear_ls }
    }

    /// The 256 gear values (for test vectors and SPEC.md).
    pub fn values(&self) -> &[u64; 256] {
        &self.gear
    }
}

impl fmt::Debug for GearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GearTable { .. }")
    }
}

/// A content-defined chunker: validated parameters, masks and a keyed gear
/// table. Cheap to share between threads (`Send + Sync`); clone is ~4 KiB.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: GearTable,
}

impl fmt::Debug for Chunker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Builds a chunker after validating `params`; uses FastCDC normalization
    /// level 1 (fixed: it is part of the format).
    pub fn new(params: ChunkerParams, gear: GearTable) -> Result<Chunker, ChunkerError> {
        params.validate()?;
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, NORMALIZATION);
        Ok(Chunker {
            params,
            mask_s,
            mask_l,
            gear,
        })
    }

    /// The chunk size bounds this chunker was built with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`, which must start at a chunk boundary.
    ///
    /// When `eof` is false and no cut point lies within `data` (and
    /// `data.len() < max`), returns `None`: the caller must supply more bytes.
    /// When `eof` is true returns `Some(len)` with `len <= data.len()` (the
    /// whole remainder if shorter than a cut allows); `Some(0)` only for empty
    /// data at eof. Bytes beyond `max` never influence the result.
    pub fn find_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() {
            return eof.then_some(0);
        }
        let max = self.params.max as usize;
        let (_hash, cut) = v2020::cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear.gear[..],
            &self.gear.gear_ls[..],
        );
        // cut_gear returns either a hash-selected cut strictly inside the
        // window (always < data.len()), or the window end (min(len, max)) when
        // nothing matched. The scan over a prefix tests exactly the same
        // candidates, in the same order, as a scan over longer data (its
        // normalization centre only drops below `avg` when the window itself
        // is shorter than `avg`, and then every tested position is below
        // `avg` anyway), so an interior cut is final. A window-end result is
        // final only if the window is the full `max` or the input has ended.
        if cut < data.len() || data.len() >= max || eof {
            Some(cut)
        } else {
            None
        }
    }

    /// Streams `reader` into chunks. Each chunk is read straight into a `Vec` of its
    /// own (no window buffer, no copy but the few bytes read past a cut), so memory is
    /// the chunk being assembled: about `avg`, at most `max`.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            new_buf: Vec::new,
            cur: Vec::new(),
            filled: 0,
            scan: Scan::start(self.params.min as usize),
            remaining_hint: None,
            eof: false,
            bytes_read: 0,
        }
    }

    /// Continues the FastCDC 2020 scan of `data` (a prefix of the chunk being cut) where
    /// `scan` stopped; same result as [`Chunker::find_cut`] on `data`, but every byte
    /// is examined once however the data arrives (`scan` is meaningless after a cut). Mirrors `fastcdc::v2020::cut_gear`,
    /// which stays the reference (`find_cut`); the stream tests hold the two equal.
    fn resume_cut(&self, scan: &mut Scan, data: &[u8], eof: bool) -> Option<usize> {
        let (min, avg, max) = (
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
        );
        let n = data.len();
        if n <= min {
            return (eof || n >= max).then_some(n);
        }
        let window = n.min(max);
        let src = &data[..window];
        // Below `avg` (or below the end of a window shorter than `avg`) the stricter mask.
        let limit1 = avg.min(window) / 2;
        let limit2 = window / 2;
        let (gear, gear_ls) = (&*self.gear.gear, &*self.gear.gear_ls);
        scan_pairs(src, scan, limit1, self.mask_s, gear, gear_ls)
            .or_else(|| scan_pairs(src, scan, limit2, self.mask_l, gear, gear_ls))
            .or_else(|| (n >= max || eof).then_some(window))
    }
}

/// One of FastCDC 2020's two scan loops: byte pairs from `scan.pair` up to `limit` tested
/// against `mask` (and its left shift for the first byte of a pair). Returns the cut, or
/// `None` with `scan` where the loop stopped.
#[inline(always)]
fn scan_pairs(
    src: &[u8],
    scan: &mut Scan,
    limit: usize,
    mask: u64,
    gear: &[u64; 256],
    gear_ls: &[u64; 256],
) -> Option<usize> {
    let mask_ls = mask << 1;
    let (mut i, mut h) = (scan.pair, scan.hash);
    let cut = loop {
        if i >= limit {
            break None;
        }
        let a = i * 2;
        h = (h << 2).wrapping_add(gear_ls[src[a] as usize]);
        if h & mask_ls == 0 {
            break Some(a);
        }
        h = h.wrapping_add(gear[src[a + 1] as usize]);
        if h & mask == 0 {
            break Some(a + 1);
        }
        i += 1;
    };
    (scan.pair, scan.hash) = (i, h);
    cut
}

/// Where the scan for the next cut stopped: FastCDC's position (in byte pairs from the
/// chunk start) and its rolling hash there.
#[derive(Debug, Clone, Copy)]
struct Scan {
    pair: usize,
    hash: u64,
}

impl Scan {
    /// FastCDC skips the first `min` bytes of a chunk and starts hashing from zero there.
    fn start(min: usize) -> Scan {
        Scan {
            pair: min / 2,
            hash: 0,
        }
    }
}

/// Bytes asked of the reader at a time beyond the minimum chunk size: small enough that
/// what is read past a cut (moved into the next chunk's buffer) is a few percent of the
/// data, large enough that system calls cost nothing.
const STREAM_READ: usize = 128 * 1024;

/// Iterates over the chunks of a [`Read`], produced by [`Chunker::stream`].
///
/// Boundaries are identical to running [`Chunker::find_cut`] over the whole
/// input at once, however the reader splits its reads.
pub struct ChunkStream<'a, R, F = fn() -> Vec<u8>> {
    chunker: &'a Chunker,
    reader: R,
    /// Supplies the buffer of the next chunk (a pool's recycled `Vec`, any contents).
    new_buf: F,
    /// The chunk being assembled: `cur[..filled]` is data from a chunk boundary on;
    /// `cur[filled..]` is initialized scratch, reused without zeroing it again.
    cur: Vec<u8>,
    filled: usize,
    scan: Scan,
    /// Bytes the reader is expected to hold still, to size reads of small inputs.
    remaining_hint: Option<u64>,
    eof: bool,
    bytes_read: u64,
}

impl<R, F> fmt::Debug for ChunkStream<'_, R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkStream")
            .field("chunker", self.chunker)
            .field("buffered", &self.filled)
            .field("eof", &self.eof)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

impl<'a, R: Read, F: FnMut() -> Vec<u8>> ChunkStream<'a, R, F> {
    /// Takes each chunk's buffer from `new_buf` (e.g. a pool of recycled buffers; their
    /// contents do not matter) instead of allocating a fresh one.
    pub fn with_buffers<G: FnMut() -> Vec<u8>>(self, new_buf: G) -> ChunkStream<'a, R, G> {
        ChunkStream {
            chunker: self.chunker,
            reader: self.reader,
            new_buf,
            cur: self.cur,
            filled: self.filled,
            scan: self.scan,
            remaining_hint: self.remaining_hint,
            eof: self.eof,
            bytes_read: self.bytes_read,
        }
    }

    /// Tells the stream how many bytes the reader holds (a file's size), so a small
    /// input is read with one right-sized read. Only a hint: more or fewer bytes are
    /// still chunked correctly.
    pub fn with_size_hint(mut self, len: u64) -> Self {
        self.remaining_hint = Some(len);
        self
    }

    /// The next chunk as an owned `Vec` (it goes to other threads for
    /// hashing/compression), or `None` at end of input.
    ///
    /// Retries on `io::ErrorKind::Interrupted`; other read errors are
    /// returned, and buffered data is kept so a later call may continue.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let data = &self.cur[..self.filled];
            if let Some(cut) = self.chunker.resume_cut(&mut self.scan, data, self.eof) {
                if cut == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.split_at(cut)));
            }
            self.fill()?;
        }
    }

    /// Hands out `cur[..cut]` and starts the next chunk with the bytes after it.
    fn split_at(&mut self, cut: usize) -> Vec<u8> {
        let tail = self.filled - cut;
        let mut next = (self.new_buf)();
        if next.len() < tail {
            next.resize(tail, 0);
        }
        next[..tail].copy_from_slice(&self.cur[cut..self.filled]);
        let mut chunk = std::mem::replace(&mut self.cur, next);
        chunk.truncate(cut);
        self.filled = tail;
        self.scan = Scan::start(self.chunker.params.min as usize);
        chunk
    }

    /// One read into the chunk buffer: up to the minimum chunk size plus a little
    /// first, then small steps, never past `max` (so a cut never leaves more than one
    /// step's bytes to move), and no more than the size hint promises (plus one byte to
    /// see the end).
    fn fill(&mut self) -> io::Result<()> {
        let (min, max) = (
            self.chunker.params.min as usize,
            self.chunker.params.max as usize,
        );
        let have = self.filled;
        let mut want = if have < min {
            min - have + STREAM_READ
        } else {
            STREAM_READ
        };
        want = want.min(max - have);
        if let Some(left) = self.remaining_hint {
            want = want.min(
                usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            );
        }
        let end = have + want;
        if self.cur.len() < end {
            if self.cur.capacity() < end {
                // Double as a Vec would, but never beyond `max`.
                let target = (2 * self.cur.capacity()).clamp(end, max.max(end));
                self.cur.reserve_exact(target - self.cur.len());
            }
            self.cur.resize(end, 0);
        }
        loop {
            match self.reader.read(&mut self.cur[have..end]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    // A misbehaving reader claiming more than the slice is a bug in that
                    // reader; clamp instead of reading garbage.
                    let n = n.min(want);
                    self.filled += n;
                    self.bytes_read += n as u64;
                    if let Some(left) = &mut self.remaining_hint {
                        *left = left.saturating_sub(n as u64);
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Total bytes read from the reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

#[cfg(test)]
mod tests;
