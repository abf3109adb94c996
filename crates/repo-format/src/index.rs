//! Index files (which pack holds which blob) and the in-memory index built from them
//! (SPEC.md §7).
//!
//! Index files are immutable. A writer adds a new one for the packs it wrote; compaction
//! writes a merged one that names the files it supersedes. Two index files may both claim
//! a blob (the same blob in two packs after a race or a repack): either location is valid.
//! Blobs are identified by (type, ID): a data chunk whose bytes happen to equal an encoded
//! tree has the same ID as that tree but is a different blob.
//!
//! # The compact in-memory index
//!
//! [`MasterIndex`] keeps one sorted array of fixed 32-byte records per blob type, with no
//! allocation per entry:
//!
//! ```text
//! offset  size  field
//! 0       16    the first 16 bytes of the blob ID (as a big-endian u128: integer order
//!               is byte order)
//! 16      4     pack slot (index into the table of pack IDs) in bits 0..31, and the
//!               compression in bit 31 (1 = zstd)
//! 20      4     offset of the sealed blob in the pack
//! 24      4     stored (sealed) length
//! 28      4     plaintext length
//! ```
//!
//! Beside each array, a directory of where each value of the key's top 16 bits starts
//! (at most 2¹⁶ `u32`s, 256 KiB: 0.03 bytes per blob at 10⁷ blobs) takes a lookup to a
//! range of about 150 records at 10⁷ blobs, where interpolation lands within a few
//! records of the key: two or three cache misses per lookup.
//!
//! Every field of an index entry is kept exactly except the last 16 bytes of the ID. The
//! compression flag borrows the top bit of the pack slot rather than of the stored length
//! because a stored length may legally use all 32 bits (SPEC.md §7.1), while 2³¹ packs
//! would need a 64 GiB pack table long before the slot overflowed.
//!
//! ## Why a 16-byte prefix is safe
//!
//! * **Reads are always verified against the full ID.** [`MasterIndex::get`] returns the
//!   caller's full ID in its [`PackEntry`], and opening a blob authenticates the sealed
//!   bytes with associated data that contains the full ID, then checks the keyed hash of
//!   the plaintext (SPEC.md §5.3). A location found through a prefix shared with another
//!   blob therefore fails loudly as corruption on restore and `check`; it can never
//!   return another blob's data silently.
//! * **Prefix collisions among indexed blobs are resolved exactly.** When the index is
//!   built from index files, every (type, prefix) that occurs more than once (a blob
//!   claimed twice, or two blobs sharing a prefix) is resolved by re-reading the few index
//!   files involved with full IDs: a duplicate keeps its first claim in the 32-byte array,
//!   and blobs whose IDs differ but share a prefix move to a small side table keyed by the
//!   full ID (and leave the array, so a lookup of any other ID with that prefix finds
//!   nothing). The same holds for entries added with [`MasterIndex::add_pack`] while they
//!   are in the overlay, and when the overlay is merged.
//! * **What remains is a false positive for an ID that is not indexed** and shares its
//!   prefix with exactly one indexed blob of its type. Blob IDs are keyed BLAKE3 outputs,
//!   uniformly distributed and not computable without the repository key, so for a lookup
//!   against `n` indexed blobs the probability is `n / 2^128`: about 2.9 × 10⁻³² per
//!   lookup at n = 10⁷, or 3 × 10⁻²⁰ over 10¹² lookups (a lifetime of daily backups of
//!   a large repository), far below the rate of undetected hardware errors. A false
//!   positive would make a writer skip storing that blob (the later read fails as
//!   corruption of that blob; `check --read-data` finds it). [`MasterIndex::add_pack`]
//!   uses the same lookup to decide whether a new entry is a duplicate, so an added entry
//!   whose prefix equals that of a blob held in the array counts as already present; a
//!   writer never gets there (it asked [`MasterIndex::contains`] before storing the
//!   blob), and the index file it writes is exact either way.
//!
//! ## Loading and adding
//!
//! [`IndexBuilder`] takes index files in any order (decoded in parallel, converted to
//! compact records as soon as each is decoded, the decoded file dropped), drops the
//! records of superseded files at the end, sorts in place and resolves repeated prefixes
//! as above: memory peaks at little more than the final arrays. Entries added after
//! loading go to an overlay hash map keyed by the full ID, merged into the sorted arrays
//! (one linear merge) once it holds more than 1/32 of the entries, so adds cost amortised
//! O(1) moves and the overlay stays a small fraction of the index.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;

use rayon::iter::{IntoParallelIterator, ParallelIterator};

use crate::blob::{BlobType, Compression};
use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;
use crate::pack::PackEntry;

/// Index encoding version.
pub const INDEX_VERSION: u8 = 1;

/// Most blob entries holdfast puts in one index file (plus one pack's): about 9 MiB
/// encoded, so writing or reading one takes little memory whatever the repository size.
/// Not a format limit: readers accept any size.
pub const INDEX_FILE_ENTRIES: usize = 200_000;
const ENTRY_LEN: usize = 46;

/// The blobs of one pack, as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// Pack ID (its file name).
    pub id: Id,
    /// Blobs with their locations.
    pub blobs: Vec<PackEntry>,
}

/// One index file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files whose content this one includes; readers ignore them.
    pub supersedes: Vec<Id>,
    /// Packs described.
    pub packs: Vec<IndexPack>,
}

/// Receives the content of an index file in file order, from [`decode_with`] or from a
/// decoded [`IndexFile`].
trait IndexVisitor {
    fn superseded(&mut self, id: Id);
    fn pack(&mut self, id: Id, blobs: usize);
    fn blob(&mut self, entry: PackEntry);
}

impl IndexVisitor for IndexFile {
    fn superseded(&mut self, id: Id) {
        self.supersedes.push(id);
    }
    fn pack(&mut self, id: Id, blobs: usize) {
        self.packs.push(IndexPack {
            id,
            blobs: Vec::with_capacity(blobs),
        });
    }
    fn blob(&mut self, entry: PackEntry) {
        if let Some(p) = self.packs.last_mut() {
            p.blobs.push(entry);
        }
    }
}

/// Decodes an index plaintext into a visitor: the only decoder, so a streamed file is
/// checked exactly as a materialised one.
fn decode_with(buf: &[u8], v: &mut impl IndexVisitor) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    r.version("index", INDEX_VERSION)?;
    let ns = r.count("supersedes count", 32)?;
    for _ in 0..ns {
        v.superseded(r.id()?);
    }
    let np = r.count("pack count", 36)?;
    for _ in 0..np {
        let id = r.id()?;
        let nb = r.count("blob count", ENTRY_LEN)?;
        v.pack(id, nb);
        for _ in 0..nb {
            // `count` checked that all `nb` entries are there.
            let mut e = Reader::new(r.take(ENTRY_LEN)?);
            let ty = BlobType::from_u8(e.u8()?)?;
            let compression = Compression::from_u8(e.u8()?)?;
            let bid = e.id()?;
            let offset = e.u32()?;
            let stored_len = e.u32()?;
            let raw_len = e.u32()?;
            if offset.checked_add(stored_len).is_none() {
                return Err(invalid("blob location", "offset + length overflows"));
            }
            v.blob(PackEntry {
                id: bid,
                ty,
                compression,
                offset,
                stored_len,
                raw_len,
            });
        }
    }
    r.finish()
}

impl IndexFile {
    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(INDEX_VERSION);
        w.u32(self.supersedes.len() as u32);
        for s in &self.supersedes {
            w.id(s);
        }
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.id(&p.id);
            w.u32(p.blobs.len() as u32);
            for b in &p.blobs {
                w.u8(b.ty as u8);
                w.u8(b.compression as u8);
                w.id(&b.id);
                w.u32(b.offset);
                w.u32(b.stored_len);
                w.u32(b.raw_len);
            }
        }
        w.finish()
    }

    /// Decodes an index plaintext.
    pub fn decode(buf: &[u8]) -> Result<IndexFile, DecodeError> {
        let mut f = IndexFile::default();
        decode_with(buf, &mut f)?;
        Ok(f)
    }

    /// Replays the file into a visitor, as [`decode_with`] would from its encoding.
    fn visit(&self, v: &mut impl IndexVisitor) {
        for s in &self.supersedes {
            v.superseded(*s);
        }
        for p in &self.packs {
            v.pack(p.id, p.blobs.len());
            for b in &p.blobs {
                v.blob(*b);
            }
        }
    }
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack ID.
    pub pack: Id,
    /// The blob's entry.
    pub entry: PackEntry,
}

/// An indexed blob with everything the index keeps of it: all but the full ID (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedBlob {
    /// Data or tree.
    pub ty: BlobType,
    /// Pack ID.
    pub pack: Id,
    /// Compression of the plaintext.
    pub compression: Compression,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Bit 31 of [`Loc::pack`]: the blob is zstd-compressed.
const ZSTD_FLAG: u32 = 1 << 31;

/// A blob's location: 16 bytes, every field of an index entry but the type and the ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    /// Pack slot in bits 0..31, [`ZSTD_FLAG`] in bit 31.
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
}

impl Loc {
    fn new(slot: usize, e: &PackEntry) -> Loc {
        assert!(
            slot < ZSTD_FLAG as usize,
            "more than 2^31 packs in one index"
        );
        let flag = match e.compression {
            Compression::None => 0,
            Compression::Zstd => ZSTD_FLAG,
        };
        Loc {
            pack: slot as u32 | flag,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
        }
    }

    fn slot(&self) -> usize {
        (self.pack & !ZSTD_FLAG) as usize
    }

    fn with_slot(self, slot: usize) -> Loc {
        debug_assert!(slot < ZSTD_FLAG as usize);
        Loc {
            pack: slot as u32 | (self.pack & ZSTD_FLAG),
            ..self
        }
    }

    fn compression(&self) -> Compression {
        if self.pack & ZSTD_FLAG == 0 {
            Compression::None
        } else {
            Compression::Zstd
        }
    }

    fn entry(&self, ty: BlobType, id: Id) -> PackEntry {
        PackEntry {
            id,
            ty,
            compression: self.compression(),
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        }
    }
}

/// One entry of a sorted array: the ID prefix and the location, 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    key: u128,
    loc: Loc,
}

const _: () = assert!(std::mem::size_of::<Record>() == 32);

impl Record {
    const ZERO: Record = Record {
        key: 0,
        loc: Loc {
            pack: 0,
            offset: 0,
            stored_len: 0,
            raw_len: 0,
        },
    };
}

/// The sort key of an ID: its first 16 bytes, big-endian.
fn prefix(id: &Id) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id.0[..16]);
    u128::from_be_bytes(b)
}

/// Position of `key` in `records` (sorted, unique keys), all of whose keys lie in
/// `low..=high`.
///
/// Blob IDs are uniformly distributed, so interpolating between `low` and `high` lands a
/// few records from the key; a gallop from there brackets it and a binary search inside
/// the bracket finishes. Any distribution of keys gives the right answer, in O(log n)
/// probes at worst.
fn search(records: &[Record], key: u128, low: u128, high: u128) -> Option<usize> {
    let n = records.len();
    if n == 0 || key < low || key > high {
        return None;
    }
    // (key - low) / (high - low) on the top 64 significant bits of the width.
    let width = high - low;
    let z = width.leading_zeros();
    let w = ((width << z) >> 64) as u64;
    let d = (((key - low) << z) >> 64) as u64;
    let g = (u128::from(d) * (n - 1) as u128 / u128::from(w.max(1))) as usize;
    let g = g.min(n - 1);
    let (lo, hi) = match records[g].key.cmp(&key) {
        Ordering::Equal => return Some(g),
        Ordering::Less => {
            // records[g + bound / 2] < key throughout.
            let mut bound = 1;
            while g + bound < n && records[g + bound].key < key {
                bound *= 2;
            }
            (g + bound / 2 + 1, (g + bound + 1).min(n))
        }
        Ordering::Greater => {
            // records[g - bound / 2] > key throughout.
            let mut bound = 1;
            while bound <= g && records[g - bound].key > key {
                bound *= 2;
            }
            (g.saturating_sub(bound), g - bound / 2)
        }
    };
    records[lo..hi]
        .binary_search_by(|r| r.key.cmp(&key))
        .ok()
        .map(|i| lo + i)
}

/// The records of one blob type, sorted by key, with a directory of where each value of
/// the key's top bits starts: a lookup goes straight to a range of a few hundred records
/// at most (at 10⁷ records, 152 on average), found with a directory of 256 KiB.
#[derive(Debug, Default)]
struct Sorted {
    records: Vec<Record>,
    /// `dir[b]`: index of the first record whose key's top `bits` bits are `>= b`;
    /// `2^bits + 1` entries, or none when `bits` is 0.
    dir: Vec<u32>,
    bits: u32,
}

/// At most this many directory bits (2¹⁶ entries, 256 KiB).
const DIR_MAX_BITS: u32 = 16;
/// Aim for at least this many records per directory entry.
const DIR_RECORDS_PER_ENTRY: usize = 8;

impl Sorted {
    fn new(records: Vec<Record>) -> Sorted {
        let mut s = Sorted {
            records,
            dir: Vec::new(),
            bits: 0,
        };
        s.reindex();
        s
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    /// Rebuilds the directory after the records changed.
    fn reindex(&mut self) {
        let n = self.records.len();
        let per = n / DIR_RECORDS_PER_ENTRY;
        self.bits = if per < 2 || u32::try_from(n).is_err() {
            0
        } else {
            per.ilog2().min(DIR_MAX_BITS)
        };
        self.dir = Vec::new();
        if self.bits == 0 {
            return;
        }
        let entries = 1usize << self.bits;
        let mut dir = Vec::with_capacity(entries + 1);
        for (i, r) in self.records.iter().enumerate() {
            let b = (r.key >> (128 - self.bits)) as usize;
            while dir.len() <= b {
                dir.push(i as u32);
            }
        }
        dir.resize(entries + 1, n as u32);
        self.dir = dir;
    }

    /// The record with this key.
    fn find(&self, key: u128) -> Option<&Record> {
        self.position(key).map(|i| &self.records[i])
    }

    /// Where the record with this key is in `records`.
    fn position(&self, key: u128) -> Option<usize> {
        if self.bits == 0 {
            return search(&self.records, key, 0, u128::MAX);
        }
        let shift = 128 - self.bits;
        let b = (key >> shift) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        let low = (b as u128) << shift;
        let high = low | (u128::MAX >> self.bits);
        search(&self.records[lo..hi], key, low, high).map(|i| lo + i)
    }
}

/// Merges sorted `add` into sorted `base` in place (from the back), in O(|base| + |add|)
/// moves and no memory beyond `base`'s growth.
fn merge_sorted(base: &mut Vec<Record>, add: &[Record]) {
    if add.is_empty() {
        return;
    }
    let (mut i, mut j) = (base.len(), add.len());
    base.resize(i + j, Record::ZERO);
    let mut k = base.len();
    while j > 0 {
        k -= 1;
        if i > 0 && base[i - 1].key > add[j - 1].key {
            base[k] = base[i - 1];
            i -= 1;
        } else {
            base[k] = add[j - 1];
            j -= 1;
        }
    }
}

/// Entries the overlay holds before [`MasterIndex::add_pack`] merges it into the sorted
/// arrays, at least; above that, 1/[`MERGE_FRACTION`] of the indexed entries.
const MERGE_MIN: usize = 4096;
const MERGE_FRACTION: usize = 32;

/// All index files merged: (type, blob ID) to location, in compact sorted arrays of
/// 32 bytes per blob (see the module documentation for the layout and why a 16-byte ID
/// prefix is safe).
///
/// Invariants: within a type, the keys of `sorted` are unique; no (type, prefix) of
/// `collided` or `overlay` is in `sorted`; a (type, ID) is in at most one of the three.
pub struct MasterIndex {
    /// Pack IDs by slot (a pack that two index files list may have two slots).
    packs: Vec<Id>,
    /// Per [`BlobType`], records sorted by key.
    sorted: [Sorted; 2],
    /// Blobs whose (type, prefix) is shared by another indexed blob, by full ID.
    collided: HashMap<(BlobType, Id), Loc>,
    /// Entries added since the last merge, by full ID.
    overlay: HashMap<(BlobType, Id), Loc>,
    /// Minimum overlay size before a merge.
    merge_min: usize,
}

impl Default for MasterIndex {
    fn default() -> Self {
        MasterIndex {
            packs: Vec::new(),
            sorted: [Sorted::default(), Sorted::default()],
            collided: HashMap::new(),
            overlay: HashMap::new(),
            merge_min: MERGE_MIN,
        }
    }
}

impl std::fmt::Debug for MasterIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterIndex")
            .field("data", &self.sorted[0].len())
            .field("tree", &self.sorted[1].len())
            .field("collided", &self.collided.len())
            .field("overlay", &self.overlay.len())
            .field("pack_slots", &self.packs.len())
            .finish()
    }
}

impl MasterIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the entries of one pack (from an index file or a freshly written pack). An
    /// entry already indexed keeps its first location; a later duplicate is an equally
    /// valid copy. "Already indexed" is [`MasterIndex::contains`]: see the module
    /// documentation for the one case where a prefix decides.
    pub fn add_pack(&mut self, pack: &Id, blobs: &[PackEntry]) {
        let mut slot = None;
        for b in blobs {
            if self.contains(b.ty, &b.id) {
                continue;
            }
            let s = *slot.get_or_insert_with(|| {
                if self.packs.last() != Some(pack) {
                    self.packs.push(*pack);
                }
                self.packs.len() - 1
            });
            self.overlay.insert((b.ty, b.id), Loc::new(s, b));
        }
        let base = self.sorted[0].len() + self.sorted[1].len();
        if self.overlay.len() >= self.merge_min.max(base / MERGE_FRACTION) {
            self.merge_overlay();
        }
    }

    /// Moves the overlay into the sorted arrays: entries alone on their (type, prefix)
    /// become records, the others join `collided` with their full IDs.
    fn merge_overlay(&mut self) {
        let collided_keys: HashSet<(BlobType, u128)> = self
            .collided
            .keys()
            .map(|(ty, id)| (*ty, prefix(id)))
            .collect();
        let mut added: [Vec<(u128, Id, Loc)>; 2] = [Vec::new(), Vec::new()];
        for ((ty, id), loc) in std::mem::take(&mut self.overlay) {
            added[ty as usize].push((prefix(&id), id, loc));
        }
        for ty in [BlobType::Data, BlobType::Tree] {
            let added = &mut added[ty as usize];
            added.sort_unstable_by_key(|a| a.0);
            let mut records = Vec::with_capacity(added.len());
            for run in added.chunk_by(|a, b| a.0 == b.0) {
                let key = run[0].0;
                if run.len() == 1 && !collided_keys.contains(&(ty, key)) {
                    debug_assert!(self.sorted[ty as usize].find(key).is_none());
                    records.push(Record { key, loc: run[0].2 });
                } else {
                    for (_, id, loc) in run {
                        self.collided.insert((ty, *id), *loc);
                    }
                }
            }
            let sorted = &mut self.sorted[ty as usize];
            merge_sorted(&mut sorted.records, &records);
            sorted.reindex();
        }
    }

    /// Merges a set of index files, honouring `supersedes`.
    pub fn from_files<'a>(files: impl IntoIterator<Item = (Id, &'a IndexFile)>) -> MasterIndex {
        Self::from_files_excluding(files, &HashSet::new())
    }

    /// [`MasterIndex::from_files`] without the entries of `excluded` packs: the view a
    /// writer deduplicates against, where packs marked for deletion do not count (SPEC.md §12.3).
    ///
    /// Index files named in any file's `supersedes` are ignored; among the others, the
    /// first claim of a (type, ID) wins, in the order of `files`, then of packs and blobs
    /// within a file.
    pub fn from_files_excluding<'a>(
        files: impl IntoIterator<Item = (Id, &'a IndexFile)>,
        excluded: &HashSet<Id>,
    ) -> MasterIndex {
        let files: Vec<(Id, &IndexFile)> = files.into_iter().collect();
        let mut builder = IndexBuilder::new(excluded);
        let conv = builder.converter();
        for (n, (id, f)) in files.iter().enumerate() {
            builder.add(n, *id, conv.convert(f));
        }
        let Ok(index) = builder.finish(|n| Ok::<_, Infallible>(Cow::Borrowed(files[n].1)));
        index
    }

    /// Where a (type, ID) is, if indexed.
    fn find(&self, ty: BlobType, id: &Id) -> Option<Loc> {
        if let Some(r) = self.sorted[ty as usize].find(prefix(id)) {
            return Some(r.loc);
        }
        if !self.collided.is_empty() {
            if let Some(loc) = self.collided.get(&(ty, *id)) {
                return Some(*loc);
            }
        }
        if !self.overlay.is_empty() {
            return self.overlay.get(&(ty, *id)).copied();
        }
        None
    }

    /// Location of a blob; the entry carries the `id` asked for.
    pub fn get(&self, ty: BlobType, id: &Id) -> Option<BlobLocation> {
        self.find(ty, id).map(|loc| BlobLocation {
            pack: self.packs[loc.slot()],
            entry: loc.entry(ty, *id),
        })
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, ty: BlobType, id: &Id) -> bool {
        self.find(ty, id).is_some()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.sorted[0].len() + self.sorted[1].len() + self.collided.len() + self.overlay.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pack the index references, each once.
    pub fn packs(&self) -> Vec<Id> {
        let mut seen = HashSet::new();
        self.packs
            .iter()
            .filter(|p| seen.insert(**p))
            .copied()
            .collect()
    }

    /// A dense number below [`MasterIndex::position_count`] for a blob held in the sorted
    /// arrays, for sets of blobs kept as bitmaps (prune's live set: one bit per blob).
    /// `None` for a blob not indexed and for the rare ones held by full ID (sharing their
    /// prefix with another blob, or added since the last merge): callers keep those apart.
    /// Positions stay valid until the index is next changed.
    pub fn position(&self, ty: BlobType, id: &Id) -> Option<usize> {
        // Blobs held by full ID have no record in the arrays (see the invariants).
        let pos = self.sorted[ty as usize].position(prefix(id))?;
        Some(match ty {
            BlobType::Data => pos,
            BlobType::Tree => self.sorted[0].len() + pos,
        })
    }

    /// One more than the largest [`MasterIndex::position`].
    pub fn position_count(&self) -> usize {
        self.sorted[0].len() + self.sorted[1].len()
    }

    /// The blob at a [`MasterIndex::position`]: its type and location.
    ///
    /// # Panics
    /// If `pos` is not below [`MasterIndex::position_count`].
    pub fn at_position(&self, pos: usize) -> IndexedBlob {
        let data = self.sorted[0].len();
        let (ty, r) = if pos < data {
            (BlobType::Data, &self.sorted[0].records[pos])
        } else {
            (BlobType::Tree, &self.sorted[1].records[pos - data])
        };
        IndexedBlob {
            ty,
            pack: self.packs[r.loc.slot()],
            compression: r.loc.compression(),
            offset: r.loc.offset,
            stored_len: r.loc.stored_len,
            raw_len: r.loc.raw_len,
        }
    }

    /// Every blob with its location (without its full ID, which the index does not keep),
    /// in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = IndexedBlob> + '_ {
        let sorted = [BlobType::Data, BlobType::Tree]
            .into_iter()
            .flat_map(move |ty| {
                self.sorted[ty as usize]
                    .records
                    .iter()
                    .map(move |r| (ty, r.loc))
            });
        let by_id = self
            .collided
            .iter()
            .chain(self.overlay.iter())
            .map(|((ty, _), loc)| (*ty, *loc));
        sorted.chain(by_id).map(|(ty, loc)| IndexedBlob {
            ty,
            pack: self.packs[loc.slot()],
            compression: loc.compression(),
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
        })
    }
}

/// One index file converted to compact records, ready for [`IndexBuilder::add`]. Made by
/// an [`IndexConverter`]; converting is the costly part of loading and runs on any thread.
#[derive(Default)]
pub struct CompactIndexFile {
    supersedes: Vec<Id>,
    /// Every pack the file lists, excluded ones included (positions matter).
    packs: Vec<Id>,
    /// Per type; `loc` slots are positions in `packs`.
    records: [Vec<Record>; 2],
}

impl CompactIndexFile {
    /// The file in brief: what it supersedes and, per pack, the blobs it lists (those of
    /// excluded packs not counted).
    pub fn summary(&self, name: Id) -> IndexFileSummary {
        let mut packs: Vec<PackSummary> = self
            .packs
            .iter()
            .map(|id| PackSummary {
                id: *id,
                blobs: 0,
                stored_bytes: 0,
            })
            .collect();
        for r in self.records.iter().flatten() {
            let p = &mut packs[r.loc.slot()];
            p.blobs += 1;
            p.stored_bytes += u64::from(r.loc.stored_len);
        }
        IndexFileSummary {
            name,
            supersedes: self.supersedes.clone(),
            packs,
        }
    }
}

/// Every index file as prune needs it (see `Repository::survey_index`): the compact index
/// with marked packs as last resort, every file in brief, and the full entries of the
/// marked packs only. Memory: the compact index plus O(packs).
#[derive(Debug)]
pub struct IndexSurvey {
    /// All index files merged, a blob located outside the marked packs whenever it can be.
    pub index: MasterIndex,
    /// Every index file, superseded ones included.
    pub files: Vec<IndexFileSummary>,
    /// The entries of the marked packs, with the file that lists them (superseded files
    /// included).
    pub marked: Vec<(Id, IndexPack)>,
}

/// One index file in brief, without its entries: what prune needs to know of every file
/// (which packs it lists, how full they are, what it supersedes) in O(packs) memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFileSummary {
    /// The file's name.
    pub name: Id,
    /// Index files it supersedes.
    pub supersedes: Vec<Id>,
    /// The packs it lists, in file order.
    pub packs: Vec<PackSummary>,
}

/// One pack as an index file lists it, in brief.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSummary {
    /// Pack ID.
    pub id: Id,
    /// Blobs listed.
    pub blobs: u32,
    /// Sum of their stored lengths.
    pub stored_bytes: u64,
}

/// Forwards to `inner` and keeps the full entries of the packs in `keep`.
struct Keeping<'k, V> {
    inner: V,
    keep: &'k HashSet<Id>,
    kept: Vec<IndexPack>,
    on: bool,
}

impl<V: IndexVisitor> IndexVisitor for Keeping<'_, V> {
    fn superseded(&mut self, id: Id) {
        self.inner.superseded(id);
    }
    fn pack(&mut self, id: Id, blobs: usize) {
        self.inner.pack(id, blobs);
        self.on = self.keep.contains(&id);
        if self.on {
            self.kept.push(IndexPack {
                id,
                blobs: Vec::with_capacity(blobs),
            });
        }
    }
    fn blob(&mut self, entry: PackEntry) {
        self.inner.blob(entry);
        if self.on {
            if let Some(p) = self.kept.last_mut() {
                p.blobs.push(entry);
            }
        }
    }
}

/// Turns index files into [`CompactIndexFile`]s for one [`IndexBuilder`], leaving out the
/// entries of its excluded packs. Cheap to copy and usable from many threads.
#[derive(Debug, Clone, Copy)]
pub struct IndexConverter<'a> {
    excluded: &'a HashSet<Id>,
}

struct Converting<'a> {
    out: CompactIndexFile,
    excluded: &'a HashSet<Id>,
    skip: bool,
}

impl IndexVisitor for Converting<'_> {
    fn superseded(&mut self, id: Id) {
        self.out.supersedes.push(id);
    }
    fn pack(&mut self, id: Id, _blobs: usize) {
        self.out.packs.push(id);
        self.skip = !self.excluded.is_empty() && self.excluded.contains(&id);
    }
    fn blob(&mut self, e: PackEntry) {
        if !self.skip {
            let loc = Loc::new(self.out.packs.len() - 1, &e);
            self.out.records[e.ty as usize].push(Record {
                key: prefix(&e.id),
                loc,
            });
        }
    }
}

impl<'a> IndexConverter<'a> {
    fn start(&self) -> Converting<'a> {
        Converting {
            out: CompactIndexFile::default(),
            excluded: self.excluded,
            skip: false,
        }
    }

    /// Decodes an index plaintext straight into compact records, with exactly the checks
    /// of [`IndexFile::decode`], without materialising the file.
    pub fn decode(&self, plaintext: &[u8]) -> Result<CompactIndexFile, DecodeError> {
        let mut c = self.start();
        decode_with(plaintext, &mut c)?;
        Ok(c.out)
    }

    /// [`IndexConverter::decode`], also returning the full entries of the packs in
    /// `keep` (prune keeps those of the packs marked for deletion).
    pub fn decode_keeping(
        &self,
        plaintext: &[u8],
        keep: &HashSet<Id>,
    ) -> Result<(CompactIndexFile, Vec<IndexPack>), DecodeError> {
        let mut k = Keeping {
            inner: self.start(),
            keep,
            kept: Vec::new(),
            on: false,
        };
        decode_with(plaintext, &mut k)?;
        Ok((k.inner.out, k.kept))
    }

    /// Converts a decoded index file.
    pub fn convert(&self, file: &IndexFile) -> CompactIndexFile {
        let mut c = self.start();
        file.visit(&mut c);
        c.out
    }
}

/// Builds a [`MasterIndex`] from index files added in any order, each numbered by its
/// position in the listing (which decides the first claim of a duplicate).
///
/// Memory: the records of every added file plus a pack table; [`IndexBuilder::finish`]
/// drops superseded files' records, sorts in place and resolves repeated prefixes by
/// re-reading only the files involved (normally none).
pub struct IndexBuilder<'a> {
    excluded: &'a HashSet<Id>,
    /// Packs whose copy of a blob is taken only when no other pack has one.
    last_resort: Option<&'a HashSet<Id>>,
    /// Per file number: its name and first pack slot, once added.
    files: Vec<Option<(Id, usize)>>,
    superseded: HashSet<Id>,
    /// Pack IDs by slot: one slot per pack listed by an added file.
    packs: Vec<Id>,
    /// File number of each slot.
    slot_file: Vec<u32>,
    /// Per type, unsorted until `finish`.
    records: [Vec<Record>; 2],
}

impl std::fmt::Debug for IndexBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder")
            .field("files", &self.files.iter().flatten().count())
            .field("pack_slots", &self.packs.len())
            .field("data", &self.records[0].len())
            .field("tree", &self.records[1].len())
            .finish()
    }
}

impl std::fmt::Debug for CompactIndexFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactIndexFile")
            .field("supersedes", &self.supersedes.len())
            .field("packs", &self.packs.len())
            .field("data", &self.records[0].len())
            .field("tree", &self.records[1].len())
            .finish()
    }
}

impl<'a> IndexBuilder<'a> {
    /// A builder whose index leaves out the entries of `excluded` packs.
    pub fn new(excluded: &'a HashSet<Id>) -> Self {
        IndexBuilder {
            excluded,
            last_resort: None,
            files: Vec::new(),
            superseded: HashSet::new(),
            packs: Vec::new(),
            slot_file: Vec::new(),
            records: [Vec::new(), Vec::new()],
        }
    }

    /// Makes the index locate a blob in one of `packs` only when no other pack holds it:
    /// prune's view, where a blob's copy outside the packs marked for deletion is the one
    /// that counts (SPEC.md §12.3), and the marked copies still resolve.
    pub fn last_resort(&mut self, packs: &'a HashSet<Id>) {
        self.last_resort = Some(packs);
    }

    /// The converter for files added to this builder.
    pub fn converter(&self) -> IndexConverter<'a> {
        IndexConverter {
            excluded: self.excluded,
        }
    }

    /// Adds file number `file_no` (its position in the listing), named `name`, converted
    /// by this builder's [`IndexBuilder::converter`]. Each number is added at most once.
    pub fn add(&mut self, file_no: usize, name: Id, file: CompactIndexFile) {
        if self.files.len() <= file_no {
            self.files.resize(file_no + 1, None);
        }
        debug_assert!(self.files[file_no].is_none(), "file {file_no} added twice");
        let first = self.packs.len();
        self.files[file_no] = Some((name, first));
        self.superseded.extend(file.supersedes);
        let file_tag = u32::try_from(file_no).expect("fewer than 2^32 index files");
        self.slot_file
            .extend(std::iter::repeat_n(file_tag, file.packs.len()));
        self.packs.extend(file.packs);
        for (all, recs) in self.records.iter_mut().zip(file.records) {
            all.extend(recs.into_iter().map(|r| Record {
                key: r.key,
                loc: r.loc.with_slot(first + r.loc.slot()),
            }));
        }
    }

    /// The index: superseded files dropped, records sorted, repeated (type, prefix) pairs
    /// resolved with full IDs from `reread(file_no)`, which must return the same file that
    /// was added under that number (index files are immutable and named by content).
    pub fn finish<'f, E>(
        mut self,
        mut reread: impl FnMut(usize) -> Result<Cow<'f, IndexFile>, E>,
    ) -> Result<MasterIndex, E> {
        // 1. Superseded files are ignored, whoever names them (SPEC.md §7.2).
        let dead_file: Vec<bool> = self
            .files
            .iter()
            .map(|f| f.is_some_and(|(name, _)| self.superseded.contains(&name)))
            .collect();
        if dead_file.iter().any(|d| *d) {
            let slot_file = &self.slot_file;
            for recs in &mut self.records {
                recs.retain(|r| !dead_file[slot_file[r.loc.slot()] as usize]);
            }
        }
        // 2. Sort; set aside every record whose (type, prefix) is not alone.
        let mut repeated: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
        for (recs, rep) in self.records.iter_mut().zip(&mut repeated) {
            sort_records(recs);
            take_repeated(recs, rep);
        }
        // 3. Resolve them with full IDs: first claim per ID (outside last-resort packs if
        //    any), shared prefixes by full ID. Sorted vectors rather than maps: after a
        //    repack, every repacked blob is here twice, so this must stay lean.
        let mut collided = HashMap::new();
        if repeated.iter().any(|r| !r.is_empty()) {
            let files: BTreeSet<usize> = repeated
                .iter()
                .flatten()
                .map(|r| self.slot_file[r.loc.slot()] as usize)
                .collect();
            // Every claim of a repeated (type, prefix), in claim order (file, pack, blob).
            let mut claims: Vec<Claim> = Vec::new();
            for file_no in files {
                let (_, first) = self.files[file_no].expect("slots belong to added files");
                let f = reread(file_no)?;
                for (i, p) in f.packs.iter().enumerate() {
                    if self.excluded.contains(&p.id) {
                        continue;
                    }
                    debug_assert_eq!(self.packs[first + i], p.id, "file {file_no} changed");
                    let fallback = self.last_resort.is_some_and(|l| l.contains(&p.id));
                    for b in &p.blobs {
                        let key = prefix(&b.id);
                        if repeated[b.ty as usize]
                            .binary_search_by_key(&key, |r| r.key)
                            .is_ok()
                        {
                            claims.push(Claim {
                                ty: b.ty,
                                fallback,
                                id: b.id,
                                loc: Loc::new(first + i, b),
                            });
                        }
                    }
                }
            }
            // By (type, ID), claims outside last-resort packs first; the sort is stable, so
            // claim order holds within each. The first of each ID is the one kept.
            claims.sort_by(|x, y| {
                (x.ty as u8, &x.id.0, x.fallback).cmp(&(y.ty as u8, &y.id.0, y.fallback))
            });
            claims.dedup_by(|later, kept| later.ty == kept.ty && later.id == kept.id);
            for ty in [BlobType::Data, BlobType::Tree] {
                // This type's claims: contiguous, and in prefix order (IDs sort bytewise).
                let lo = claims.partition_point(|c| (c.ty as u8) < ty as u8);
                let hi = claims.partition_point(|c| c.ty as u8 <= ty as u8);
                let mine = &claims[lo..hi];
                let mut resolved = Vec::new();
                for run in repeated[ty as usize].chunk_by(|a, b| a.key == b.key) {
                    let key = run[0].key;
                    let from = mine.partition_point(|c| prefix(&c.id) < key);
                    let to = mine.partition_point(|c| prefix(&c.id) <= key);
                    match &mine[from..to] {
                        [one] => resolved.push(Record { key, loc: one.loc }),
                        // Only if `reread` broke its contract: keep one of the claims
                        // rather than lose the blob.
                        [] => resolved.push(run[0]),
                        members => {
                            for c in members {
                                collided.insert((ty, c.id), c.loc);
                            }
                        }
                    }
                }
                merge_sorted(&mut self.records[ty as usize], &resolved);
            }
        }
        // 4. The pack table without the slots nothing refers to any more (packs of
        //    superseded files, excluded packs), compacted in place.
        self.slot_file = Vec::new();
        let mut used = vec![false; self.packs.len()];
        for r in self.records.iter().flatten() {
            used[r.loc.slot()] = true;
        }
        for loc in collided.values() {
            used[loc.slot()] = true;
        }
        let mut new_slot = Vec::with_capacity(used.len());
        let mut kept = 0usize;
        for u in &used {
            new_slot.push(kept as u32);
            kept += usize::from(*u);
        }
        if kept < used.len() {
            let mut slots = used.iter();
            self.packs.retain(|_| *slots.next().unwrap_or(&false));
            for r in self.records.iter_mut().flatten() {
                r.loc = r.loc.with_slot(new_slot[r.loc.slot()] as usize);
            }
            for loc in collided.values_mut() {
                *loc = loc.with_slot(new_slot[loc.slot()] as usize);
            }
        }
        drop((used, new_slot));
        self.packs.shrink_to_fit();
        for recs in &mut self.records {
            recs.shrink_to_fit();
        }
        Ok(MasterIndex {
            packs: self.packs,
            sorted: self.records.map(Sorted::new),
            collided,
            overlay: HashMap::new(),
            merge_min: MERGE_MIN,
        })
    }
}

/// One claim of a blob whose (type, prefix) is repeated, with its full ID, while
/// [`IndexBuilder::finish`] resolves them.
struct Claim {
    ty: BlobType,
    /// In a last-resort pack.
    fallback: bool,
    id: Id,
    loc: Loc,
}

/// Below this many records, a comparison sort beats another radix pass.
const RADIX_MIN: usize = 1024;

/// Sorts records by key, in place, without extra memory: a radix pass distributes them
/// into 256 buckets by the top byte of the key, the buckets are sorted in parallel, each
/// by another pass on the next byte and then comparison sorts of the (by then tiny, for
/// uniform blob IDs) sub-buckets. Any distribution of keys still sorts correctly.
fn sort_records(recs: &mut [Record]) {
    if recs.len() < RADIX_MIN {
        recs.sort_unstable_by_key(|r| r.key);
        return;
    }
    radix_pass(recs, 120)
        .into_par_iter()
        .for_each(|bucket| match bucket.len() {
            n if n < RADIX_MIN => bucket.sort_unstable_by_key(|r| r.key),
            _ => {
                for sub in radix_pass(bucket, 112) {
                    sub.sort_unstable_by_key(|r| r.key);
                }
            }
        });
}

/// Permutes `recs` in place into 256 buckets by the key byte at bit `shift` (an
/// "American flag" pass) and returns the buckets.
fn radix_pass(recs: &mut [Record], shift: u32) -> Vec<&mut [Record]> {
    let bucket = |r: &Record| ((r.key >> shift) & 0xff) as usize;
    let mut counts = [0usize; 256];
    for r in recs.iter() {
        counts[bucket(r)] += 1;
    }
    let mut next = [0usize; 256];
    let mut end = [0usize; 256];
    let mut at = 0;
    for b in 0..256 {
        next[b] = at;
        at += counts[b];
        end[b] = at;
    }
    for b in 0..256 {
        while next[b] < end[b] {
            // Carry the record at the head of bucket `b` to where it belongs, and the one
            // found there onwards, until one belonging to `b` comes back.
            let mut r = recs[next[b]];
            loop {
                let d = bucket(&r);
                if d == b {
                    break;
                }
                std::mem::swap(&mut r, &mut recs[next[d]]);
                next[d] += 1;
            }
            recs[next[b]] = r;
            next[b] += 1;
        }
    }
    let mut parts = Vec::with_capacity(256);
    let mut rest = recs;
    for n in counts {
        let (part, tail) = rest.split_at_mut(n);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Moves every record whose key is not unique in sorted `recs` to `repeated` (in order).
fn take_repeated(recs: &mut Vec<Record>, repeated: &mut Vec<Record>) {
    let n = recs.len();
    let (mut i, mut w) = (0, 0);
    while i < n {
        let mut j = i + 1;
        while j < n && recs[j].key == recs[i].key {
            j += 1;
        }
        if j - i == 1 {
            if w != i {
                recs[w] = recs[i];
            }
            w += 1;
        } else {
            repeated.extend_from_slice(&recs[i..j]);
        }
        i = j;
    }
    recs.truncate(w);
}

#[cfg(test)]
mod tests;
