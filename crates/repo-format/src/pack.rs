//! Packs: many sealed blobs in one stored file, with an encrypted header at the end that
//! lists them, so the index can always be rebuilt from packs alone (SPEC.md §6).
//!
//! ```text
//! blob 0 | blob 1 | ... | blob n-1 | sealed header | header_len: u32 | version: u8 | "hfpk"
//! ```
//! Blob offsets are implicit: blob 0 starts at 0 and each follows the previous one.

use crate::backend::StagedFile;
#[cfg(doc)]
use crate::blob::Sealer;
use crate::blob::{BlobType, Compression, SealedParts};
use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::id::Id;

/// Pack format version.
pub const PACK_VERSION: u8 = 1;
/// Magic at the very end of a pack.
pub const PACK_MAGIC: &[u8; 4] = b"hfpk";
/// Bytes after the sealed header: length, version, magic.
pub const TRAILER_LEN: usize = 9;
/// Bytes one header entry takes in plaintext.
pub const HEADER_ENTRY_LEN: usize = 42;
/// Associated data of the sealed header.
pub const HEADER_AD: &[u8] = b"holdfast pack header v1\0";

/// One blob as listed in a pack header (and, with the pack ID, in the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PackEntry {
    /// Blob ID.
    pub id: Id,
    /// Data or tree.
    pub ty: BlobType,
    /// Compression of the plaintext.
    pub compression: Compression,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// The decoded header of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackHeader {
    /// Type of every blob in the pack.
    pub pack_type: BlobType,
    /// Blobs in file order, with offsets filled in.
    pub entries: Vec<PackEntry>,
}

impl PackHeader {
    /// Plaintext encoding of the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.pack_type as u8);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.u8(e.ty as u8);
            w.u8(e.compression as u8);
            w.id(&e.id);
            w.u32(e.stored_len);
            w.u32(e.raw_len);
        }
        w.finish()
    }

    /// Decodes a header plaintext; offsets are computed and checked against `data_len`,
    /// the number of bytes before the sealed header.
    pub fn decode(buf: &[u8], data_len: u64) -> Result<PackHeader, DecodeError> {
        let mut r = Reader::new(buf);
        let pack_type = BlobType::from_u8(r.u8()?)?;
        let n = r.count("blob count", HEADER_ENTRY_LEN)?;
        let mut entries = Vec::with_capacity(n);
        let mut offset: u64 = 0;
        for _ in 0..n {
            let ty = BlobType::from_u8(r.u8()?)?;
            if ty != pack_type {
                return Err(invalid("blob type", "blob of another type in the pack"));
            }
            let compression = Compression::from_u8(r.u8()?)?;
            let id = r.id()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            if (stored_len as usize) < SEAL_OVERHEAD {
                return Err(invalid(
                    "stored length",
                    format!("{stored_len} is below the encryption overhead"),
                ));
            }
            entries.push(PackEntry {
                id,
                ty,
                compression,
                offset: u32::try_from(offset)
                    .map_err(|_| invalid("offset", "pack larger than 4 GiB"))?,
                stored_len,
                raw_len,
            });
            offset += stored_len as u64;
        }
        r.finish()?;
        if offset != data_len {
            return Err(invalid(
                "header",
                format!(
                    "blobs cover {offset} bytes but the pack holds {data_len} before its header"
                ),
            ));
        }
        Ok(PackHeader { pack_type, entries })
    }
}

/// Where a [`PackWriter`] puts the bytes of a pack as they are produced: a file staged in
/// the repository ([`crate::backend::StagedFile`]) or, for tests and small one-off packs,
/// memory.
pub trait PackSink {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
}

impl PackSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl PackSink for Box<dyn StagedFile + '_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
    }
}

/// Writes a pack of one blob type straight to its sink, blob by blob, hashing it on the
/// way: a pack is never held in memory, whatever its size. Blobs land in the order they
/// are added (SPEC.md §6.2).
#[derive(Debug)]
pub struct PackWriter<W> {
    pack_type: BlobType,
    sink: W,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    size: u64,
}

/// A pack whose last byte is written: its name, where each blob landed, and the sink
/// holding the bytes (a staged file to commit under `id`, or the bytes themselves).
#[derive(Debug)]
pub struct FinishedPack<W> {
    /// Pack ID: BLAKE3 of the pack's bytes.
    pub id: Id,
    /// The header (blob locations).
    pub header: PackHeader,
    /// Length of the pack in bytes.
    pub len: u64,
    /// Where the bytes went.
    pub sink: W,
}

impl<W: PackSink> PackWriter<W> {
    /// An empty pack for blobs of `pack_type`, written to `sink`.
    pub fn new(pack_type: BlobType, sink: W) -> Self {
        PackWriter {
            pack_type,
            sink,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            size: 0,
        }
    }
    /// Blob type of this pack.
    pub fn pack_type(&self) -> BlobType {
        self.pack_type
    }
    /// Stored bytes so far (without header).
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Number of blobs so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.sink.put(bytes)
    }

    /// Appends one stored blob given as consecutive pieces (`nonce || body || tag` from
    /// a [`Sealer`], or a sealed blob copied whole from another pack). A blob of the wrong
    /// type, or one that would take the pack past 4 GiB, is an error, never a panic.
    pub fn add(
        &mut self,
        id: Id,
        ty: BlobType,
        compression: Compression,
        raw_len: u32,
        pieces: &[&[u8]],
    ) -> Result<()> {
        if ty != self.pack_type {
            return Err(Error::Encode {
                what: "pack",
                detail: format!(
                    "{} blob added to a {} pack",
                    ty.name(),
                    self.pack_type.name()
                ),
            });
        }
        let stored: usize = pieces.iter().map(|p| p.len()).sum();
        let header_len = HEADER_ENTRY_LEN * (self.entries.len() + 1) + 5 + SEAL_OVERHEAD;
        let end = self.size + stored as u64;
        if end + (header_len + TRAILER_LEN) as u64 > u32::MAX as u64 {
            return Err(Error::Encode {
                what: "pack",
                detail: "pack larger than 4 GiB".into(),
            });
        }
        for piece in pieces {
            self.put(piece)?;
        }
        self.entries.push(PackEntry {
            id,
            ty,
            compression,
            offset: self.size as u32,
            stored_len: stored as u32,
            raw_len,
        });
        self.size = end;
        Ok(())
    }

    /// Appends a blob sealed by a [`Sealer`].
    pub fn add_sealed(&mut self, id: Id, ty: BlobType, parts: &SealedParts<'_>) -> Result<()> {
        self.add(
            id,
            ty,
            parts.compression,
            parts.raw_len,
            &[&parts.nonce, parts.body, &parts.tag],
        )
    }

    /// Appends the sealed header and trailer; the pack is complete.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack<W>> {
        let header = PackHeader {
            pack_type: self.pack_type,
            entries: std::mem::take(&mut self.entries),
        };
        let sealed = key.seal(HEADER_AD, &header.encode());
        self.put(&sealed)?;
        self.put(&(sealed.len() as u32).to_le_bytes())?;
        self.put(&[PACK_VERSION])?;
        self.put(PACK_MAGIC)?;
        Ok(FinishedPack {
            id: Id(*self.hasher.finalize().as_bytes()),
            header,
            len: self.size + (sealed.len() + TRAILER_LEN) as u64,
            sink: self.sink,
        })
    }
}

/// Parses the trailer (last [`TRAILER_LEN`] bytes) of a pack of `pack_len` bytes; returns
/// the sealed header's length.
pub fn parse_trailer(pack: &Id, trailer: &[u8], pack_len: u64) -> Result<u32> {
    let corrupt = |d: String| Error::corrupt("pack", pack, d);
    if trailer.len() != TRAILER_LEN || pack_len < TRAILER_LEN as u64 {
        return Err(corrupt(format!(
            "{pack_len} bytes is too short to be a pack"
        )));
    }
    if &trailer[5..9] != PACK_MAGIC {
        return Err(corrupt(
            "no pack magic at the end (truncated or not a pack)".into(),
        ));
    }
    if trailer[4] != PACK_VERSION {
        return Err(Error::UnsupportedVersion {
            what: format!("pack {pack}"),
            found: trailer[4],
            supported: PACK_VERSION,
        });
    }
    let hlen = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if (hlen as u64) + TRAILER_LEN as u64 > pack_len || (hlen as usize) < SEAL_OVERHEAD {
        return Err(corrupt(format!(
            "header length {hlen} does not fit a pack of {pack_len} bytes"
        )));
    }
    Ok(hlen)
}

/// Decrypts and decodes the sealed header of a pack of `pack_len` bytes.
pub fn open_header(
    key: &MasterKey,
    pack: &Id,
    sealed_header: &[u8],
    pack_len: u64,
) -> Result<PackHeader> {
    let plain = key
        .open(HEADER_AD, sealed_header)
        .ok_or_else(|| Error::corrupt("pack", pack, "header authentication failed"))?;
    let data_len = pack_len - TRAILER_LEN as u64 - sealed_header.len() as u64;
    PackHeader::decode(&plain, data_len).map_err(|e| Error::decode("pack", pack, e))
}

/// Reads the header of a complete pack held in memory.
pub fn read_header(key: &MasterKey, pack: &Id, bytes: &[u8]) -> Result<PackHeader> {
    let len = bytes.len() as u64;
    if bytes.len() < TRAILER_LEN {
        return Err(Error::corrupt(
            "pack",
            pack,
            format!("{len} bytes is too short to be a pack"),
        ));
    }
    let hlen = parse_trailer(pack, &bytes[bytes.len() - TRAILER_LEN..], len)? as usize;
    let start = bytes.len() - TRAILER_LEN - hlen;
    open_header(key, pack, &bytes[start..bytes.len() - TRAILER_LEN], len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{open_blob, seal_blob, CompressionLevel, Sealer};
    use proptest::prelude::*;

    fn arb_entries() -> impl Strategy<Value = Vec<(u8, [u8; 32], u32, u32)>> {
        proptest::collection::vec(
            (0u8..2, any::<[u8; 32]>(), 40u32..10_000, any::<u32>()),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn header_round_trip(entries in arb_entries(), tree: bool) {
            let ty = if tree { BlobType::Tree } else { BlobType::Data };
            let mut off = 0u32;
            let entries: Vec<PackEntry> = entries.into_iter().map(|(c, id, stored_len, raw_len)| {
                let e = PackEntry { id: Id(id), ty, compression: Compression::from_u8(c).unwrap(), offset: off, stored_len, raw_len };
                off += stored_len;
                e
            }).collect();
            let h = PackHeader { pack_type: ty, entries };
            let enc = h.encode();
            prop_assert_eq!(&PackHeader::decode(&enc, off as u64).unwrap(), &h);
            prop_assert!(PackHeader::decode(&enc, off as u64 + 1).is_err());
            for cut in 0..enc.len() {
                prop_assert!(PackHeader::decode(&enc[..cut], off as u64).is_err());
            }
        }
    }

    #[test]
    fn pack_round_trip_and_damage_detection() {
        let key = MasterKey::generate();
        let mut b = PackWriter::new(BlobType::Data, Vec::new());
        let mut sealer = Sealer::new(CompressionLevel::default()).unwrap();
        let datas: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000 + i as usize * 77]).collect();
        for d in &datas {
            let mut buf = d.clone();
            let id = key.blob_id(d);
            let parts = sealer.seal(&key, BlobType::Data, id, &mut buf).unwrap();
            b.add_sealed(id, BlobType::Data, &parts).unwrap();
        }
        let s = seal_blob(
            &key,
            BlobType::Tree,
            key.blob_id(b"t"),
            b"t",
            CompressionLevel::default(),
        )
        .unwrap();
        assert!(b
            .add(s.id, s.ty, s.compression, s.raw_len, &[&s.bytes])
            .is_err());
        assert_eq!(b.len(), datas.len());
        let p = b.finish(&key).unwrap();
        let bytes = p.sink;
        assert_eq!(p.len, bytes.len() as u64);
        assert_eq!(p.id, Id::of_stored_bytes(&bytes));
        let h = read_header(&key, &p.id, &bytes).unwrap();
        assert_eq!(h, p.header);
        // Blobs are where the header says, in the order they were added.
        for (e, d) in h.entries.iter().zip(&datas) {
            let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            let plain = open_blob(&key, e.ty, e.compression, &e.id, e.raw_len, s).unwrap();
            assert_eq!(&plain, d);
        }
        // Truncation and bit flips in the header region are reported, never panic.
        for cut in [0, 1, 8, 9, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_header(&key, &p.id, &bytes[..cut]).is_err());
        }
        for i in (bytes.len() - 200)..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x10;
            assert!(read_header(&key, &p.id, &d).is_err(), "flip at {i}");
        }
    }
}
