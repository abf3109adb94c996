//! Index files (which pack holds which blob) and the in-memory index built from them
//! (SPEC.md §7).
//!
//! Index files are immutable. A writer adds a new one for the packs it wrote; compaction
//! writes a merged one that names the files it supersedes. Two index files may both claim
//! a blob (the same blob in two packs after a race or a repack): either location is valid.
//! Blobs are identified by (type, ID): a data chunk whose bytes happen to equal an encoded
//! tree has the same ID as that tree but is a different blob.

use std::collections::{HashMap, HashSet};

use crate::blob::{BlobType, Compression};
use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;
use crate::pack::PackEntry;

/// Index encoding version.
pub const INDEX_VERSION: u8 = 1;
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
        let mut r = Reader::new(buf);
        r.version("index", INDEX_VERSION)?;
        let ns = r.count("supersedes count", 32)?;
        let mut supersedes = Vec::with_capacity(ns);
        for _ in 0..ns {
            supersedes.push(r.id()?);
        }
        let np = r.count("pack count", 36)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = r.id()?;
            let nb = r.count("blob count", ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(nb);
            for _ in 0..nb {
                let ty = BlobType::from_u8(r.u8()?)?;
                let compression = Compression::from_u8(r.u8()?)?;
                let bid = r.id()?;
                let offset = r.u32()?;
                let stored_len = r.u32()?;
                let raw_len = r.u32()?;
                if offset.checked_add(stored_len).is_none() {
                    return Err(invalid("blob location", "offset + length overflows"));
                }
                blobs.push(PackEntry {
                    id: bid,
                    ty,
                    compression,
                    offset,
                    stored_len,
                    raw_len,
                });
            }
            packs.push(IndexPack { id, blobs });
        }
        r.finish()?;
        Ok(IndexFile { supersedes, packs })
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

#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    ty: BlobType,
    compression: Compression,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
}

/// All index files merged: blob ID to location. Packs are interned, so each entry costs
/// a fixed, small amount of memory.
#[derive(Debug, Default)]
pub struct MasterIndex {
    packs: Vec<Id>,
    pack_slots: HashMap<Id, u32>,
    blobs: HashMap<(BlobType, Id), Slot>,
}

impl MasterIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every entry of an index file (or a freshly written pack).
    pub fn add_pack(&mut self, pack: &Id, blobs: &[PackEntry]) {
        let p = match self.pack_slots.get(pack) {
            Some(p) => *p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(*pack);
                self.pack_slots.insert(*pack, p);
                p
            }
        };
        for b in blobs {
            // First claim wins; a later duplicate is an equally valid copy.
            self.blobs.entry((b.ty, b.id)).or_insert(Slot {
                pack: p,
                ty: b.ty,
                compression: b.compression,
                offset: b.offset,
                stored_len: b.stored_len,
                raw_len: b.raw_len,
            });
        }
    }

    /// Merges a set of index files, honouring `supersedes`.
    pub fn from_files<'a>(files: impl IntoIterator<Item = (Id, &'a IndexFile)>) -> MasterIndex {
        Self::from_files_excluding(files, &HashSet::new())
    }

    /// [`MasterIndex::from_files`] without the entries of `excluded` packs: the view a
    /// writer deduplicates against, where packs marked for deletion do not count (SPEC.md §12.3).
    pub fn from_files_excluding<'a>(
        files: impl IntoIterator<Item = (Id, &'a IndexFile)>,
        excluded: &HashSet<Id>,
    ) -> MasterIndex {
        let files: Vec<(Id, &IndexFile)> = files.into_iter().collect();
        let superseded: HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut idx = MasterIndex::new();
        for (id, f) in files {
            if superseded.contains(&id) {
                continue;
            }
            for p in f.packs.iter().filter(|p| !excluded.contains(&p.id)) {
                idx.add_pack(&p.id, &p.blobs);
            }
        }
        idx
    }

    /// Location of a blob.
    pub fn get(&self, ty: BlobType, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(&(ty, *id)).map(|s| BlobLocation {
            pack: self.packs[s.pack as usize],
            entry: PackEntry {
                id: *id,
                ty: s.ty,
                compression: s.compression,
                offset: s.offset,
                stored_len: s.stored_len,
                raw_len: s.raw_len,
            },
        })
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, ty: BlobType, id: &Id) -> bool {
        self.blobs.contains_key(&(ty, *id))
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every pack the index references.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Every blob with its location.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.blobs.keys().filter_map(|(ty, id)| self.get(*ty, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_index() -> impl Strategy<Value = IndexFile> {
        let entry = (
            any::<[u8; 32]>(),
            0u8..2,
            0u8..2,
            0u32..1 << 30,
            40u32..1 << 20,
            any::<u32>(),
        )
            .prop_map(|(id, t, c, o, s, r)| PackEntry {
                id: Id(id),
                ty: BlobType::from_u8(t).unwrap(),
                compression: Compression::from_u8(c).unwrap(),
                offset: o,
                stored_len: s,
                raw_len: r,
            });
        let pack = (any::<[u8; 32]>(), proptest::collection::vec(entry, 0..6))
            .prop_map(|(id, blobs)| IndexPack { id: Id(id), blobs });
        (
            proptest::collection::vec(any::<[u8; 32]>().prop_map(Id), 0..3),
            proptest::collection::vec(pack, 0..5),
        )
            .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
    }

    proptest! {
        #[test]
        fn index_round_trip(f in arb_index()) {
            let enc = f.encode();
            prop_assert_eq!(&IndexFile::decode(&enc).unwrap(), &f);
            for cut in 0..enc.len() {
                prop_assert!(IndexFile::decode(&enc[..cut]).is_err());
            }
            let m = MasterIndex::from_files([(Id::default(), &f)]);
            for p in &f.packs {
                for b in &p.blobs {
                    prop_assert!(m.get(b.ty, &b.id).is_some());
                }
            }
        }
    }

    #[test]
    fn superseded_files_are_ignored() {
        let e = PackEntry {
            id: Id([1; 32]),
            ty: BlobType::Data,
            compression: Compression::None,
            offset: 0,
            stored_len: 50,
            raw_len: 10,
        };
        let old = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                id: Id([9; 32]),
                blobs: vec![e],
            }],
        };
        let new = IndexFile {
            supersedes: vec![Id([2; 32])],
            packs: vec![],
        };
        let m = MasterIndex::from_files([(Id([2; 32]), &old), (Id([3; 32]), &new)]);
        assert!(m.get(BlobType::Data, &e.id).is_none());
        let m = MasterIndex::from_files([(Id([4; 32]), &old), (Id([3; 32]), &new)]);
        assert_eq!(m.get(BlobType::Data, &e.id).unwrap().pack, Id([9; 32]));
        assert!(
            m.get(BlobType::Tree, &e.id).is_none(),
            "a data blob is not a tree blob with the same ID"
        );
    }
}
