//! Blobs: the unit of deduplication. A chunk of file data or an encoded tree, compressed
//! when that helps and then sealed, bound to its ID and type (SPEC.md §5).

use crate::codec::{invalid, DecodeError};
use crate::crypto::{MasterKey, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::Id;

/// What a blob holds; data and tree blobs live in separate packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data = 0,
    /// An encoded [`crate::tree::Tree`].
    Tree = 1,
}

impl BlobType {
    /// Decodes the type byte.
    pub fn from_u8(v: u8) -> Result<BlobType, DecodeError> {
        match v {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            _ => Err(invalid("blob type", format!("unknown type {v}"))),
        }
    }
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// How a blob's plaintext was transformed before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Decodes the compression byte.
    pub fn from_u8(v: u8) -> Result<Compression, DecodeError> {
        match v {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(invalid("compression", format!("unknown method {v}"))),
        }
    }
}

/// Compression settings for writing blobs.
#[derive(Debug, Clone, Copy)]
pub struct CompressionLevel(pub i32);

impl Default for CompressionLevel {
    fn default() -> Self {
        CompressionLevel(3)
    }
}

/// The associated data that binds a sealed blob to its identity.
pub fn blob_ad(ty: BlobType, compression: Compression, id: &Id) -> [u8; 51] {
    let mut ad = [0u8; 51];
    ad[..17].copy_from_slice(b"holdfast blob v1\0");
    ad[17] = ty as u8;
    ad[18] = compression as u8;
    ad[19..].copy_from_slice(&id.0);
    ad
}

/// A blob ready to be appended to a pack.
#[derive(Debug, Clone)]
pub struct SealedBlob {
    /// Blob ID (keyed hash of the plaintext).
    pub id: Id,
    /// Data or tree.
    pub ty: BlobType,
    /// How the plaintext was compressed.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

/// Compressed output kept only if it saves at least 1/32 of the input.
fn worth_keeping(raw: usize, compressed: usize) -> bool {
    compressed + raw / 32 < raw
}

/// Sample size of the incompressibility probe.
const PROBE_SAMPLE: usize = 16 * 1024;

/// Compresses and encrypts blobs one after another, reusing its zstd contexts and
/// output buffer: one per sealing thread, so sealing allocates nothing per blob.
pub struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    probe_out: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

/// A sealed blob as three pieces, `nonce || body || tag`, borrowed from the buffers the
/// [`Sealer`] encrypted in place; written out as they are.
#[derive(Debug)]
pub struct SealedParts<'b> {
    /// How the plaintext was compressed.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// The random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext.
    pub body: &'b [u8],
    /// The authentication tag.
    pub tag: [u8; TAG_LEN],
}

impl SealedParts<'_> {
    /// Bytes the blob takes in a pack.
    pub fn stored_len(&self) -> usize {
        self.body.len() + SEAL_OVERHEAD
    }
}

impl Sealer {
    /// A sealer compressing at `level`.
    pub fn new(level: CompressionLevel) -> Result<Sealer> {
        let zstd_err = |e: std::io::Error| Error::Encode {
            what: "zstd context",
            detail: e.to_string(),
        };
        Ok(Sealer {
            compressor: zstd::bulk::Compressor::new(level.0).map_err(zstd_err)?,
            probe: zstd::bulk::Compressor::new(1).map_err(zstd_err)?,
            compressed: Vec::new(),
            probe_out: Vec::new(),
        })
    }

    /// Cheap incompressibility probe: compress a 16 KiB sample at the fastest level.
    fn looks_incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < 2 * PROBE_SAMPLE {
            return false;
        }
        let mid = data.len() / 2;
        let sample = &data[mid..mid + PROBE_SAMPLE];
        self.probe_out.clear();
        self.probe_out
            .reserve(zstd::zstd_safe::compress_bound(PROBE_SAMPLE));
        match self.probe.compress_to_buffer(sample, &mut self.probe_out) {
            Ok(n) => !worth_keeping(sample.len(), n),
            Err(_) => false,
        }
    }

    /// Compresses `plaintext` when that is worth it, then encrypts in place: the
    /// compressed copy, or else `plaintext` itself (which is overwritten).
    pub fn seal<'b>(
        &'b mut self,
        key: &MasterKey,
        ty: BlobType,
        id: Id,
        plaintext: &'b mut [u8],
    ) -> Result<SealedParts<'b>> {
        let raw_len = u32::try_from(plaintext.len()).map_err(|_| Error::Encode {
            what: "blob",
            detail: format!("{} bytes exceeds the 4 GiB blob limit", plaintext.len()),
        })?;
        let compressed = plaintext.len() >= 64 && !self.looks_incompressible(plaintext) && {
            self.compressed.clear();
            self.compressed
                .reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
            self.compressor
                .compress_to_buffer(&*plaintext, &mut self.compressed)
                .is_ok_and(|n| worth_keeping(plaintext.len(), n))
        };
        let (compression, body) = if compressed {
            (Compression::Zstd, self.compressed.as_mut_slice())
        } else {
            (Compression::None, plaintext)
        };
        let (nonce, tag) = key.seal_in_place(&blob_ad(ty, compression, &id), body);
        Ok(SealedParts {
            compression,
            raw_len,
            nonce,
            body,
            tag,
        })
    }
}

/// Compresses (when useful) and seals a plaintext whose ID is already known. For one-off
/// blobs; the backup pipeline keeps a [`Sealer`] per thread.
pub fn seal_blob(
    key: &MasterKey,
    ty: BlobType,
    id: Id,
    plaintext: &[u8],
    level: CompressionLevel,
) -> Result<SealedBlob> {
    let mut sealer = Sealer::new(level)?;
    let mut buf = plaintext.to_vec();
    let parts = sealer.seal(key, ty, id, &mut buf)?;
    Ok(SealedBlob {
        id,
        ty,
        compression: parts.compression,
        raw_len: parts.raw_len,
        bytes: [&parts.nonce[..], parts.body, &parts.tag].concat(),
    })
}

/// Largest indexed length decompressed into a buffer allocated up front; larger blobs
/// (only huge trees can be) grow their buffer as the data actually decompresses.
const WHOLE_DECOMPRESS_MAX: usize = 64 << 20;

thread_local! {
    /// One zstd decompression context per thread: creating one per blob cost a restore
    /// about a fifth of its CPU time.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Opens a stored blob and verifies its plaintext hashes to `id`.
pub fn open_blob(
    key: &MasterKey,
    ty: BlobType,
    compression: Compression,
    id: &Id,
    raw_len: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    open_blob_owned(key, ty, compression, id, raw_len, stored.to_vec())
}

/// [`open_blob`] of sealed bytes the caller owns: decrypted where they lie, so an
/// uncompressed blob's plaintext is returned in the same buffer.
pub fn open_blob_owned(
    key: &MasterKey,
    ty: BlobType,
    compression: Compression,
    id: &Id,
    raw_len: u32,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut scratch = Vec::new();
    match open_in_place(key, ty, compression, id, raw_len, &mut buf, &mut scratch)? {
        Plain::Scratch => Ok(scratch),
        Plain::Within(range) => {
            buf.truncate(range.end);
            buf.drain(..range.start);
            Ok(buf)
        }
    }
}

/// [`open_blob`] without allocating: `stored` is decrypted where it lies (and so
/// overwritten), a compressed blob is decompressed into `scratch` (reused from call to
/// call). Returns the verified plaintext, borrowed from one of the two.
pub fn open_blob_in_place<'b>(
    key: &MasterKey,
    ty: BlobType,
    compression: Compression,
    id: &Id,
    raw_len: u32,
    stored: &'b mut [u8],
    scratch: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    Ok(
        match open_in_place(key, ty, compression, id, raw_len, stored, scratch)? {
            Plain::Scratch => scratch.as_slice(),
            Plain::Within(range) => &stored[range],
        },
    )
}

/// Where [`open_in_place`] left the plaintext.
enum Plain {
    Within(std::ops::Range<usize>),
    Scratch,
}

fn open_in_place(
    key: &MasterKey,
    ty: BlobType,
    compression: Compression,
    id: &Id,
    raw_len: u32,
    stored: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<Plain> {
    let corrupt = |d: &str| Error::corrupt("blob", id, d);
    if stored.len() < SEAL_OVERHEAD {
        return Err(corrupt("shorter than the encryption overhead"));
    }
    let body_end = stored.len() - TAG_LEN;
    if !key.open_in_place(&blob_ad(ty, compression, id), stored) {
        return Err(corrupt(
            "authentication failed (damaged, or not the blob the index names)",
        ));
    }
    let body = &stored[NONCE_LEN..body_end];
    let (plain, place) = match compression {
        Compression::None => (body, Plain::Within(NONCE_LEN..body_end)),
        Compression::Zstd => {
            scratch.clear();
            if raw_len as usize <= WHOLE_DECOMPRESS_MAX {
                // Decompressed straight into a buffer of the indexed length: a frame that
                // would write past it fails, one that writes less fails the length check.
                scratch.reserve(raw_len as usize);
                DECOMPRESSOR
                    .with(|d| {
                        let mut d = d.borrow_mut();
                        let d = match &mut *d {
                            Some(d) => d,
                            None => d.insert(zstd::bulk::Decompressor::new()?),
                        };
                        d.decompress_to_buffer(body, scratch)
                    })
                    .map_err(|e| corrupt(&format!("zstd: {e}")))?;
            } else {
                // Never trust a length enough to allocate it blindly, nor decompress past it.
                scratch.reserve(WHOLE_DECOMPRESS_MAX);
                let dec = zstd::stream::read::Decoder::new(body)
                    .map_err(|e| corrupt(&format!("zstd: {e}")))?;
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(dec, raw_len as u64 + 1),
                    scratch,
                )
                .map_err(|e| corrupt(&format!("zstd: {e}")))?;
            }
            (scratch.as_slice(), Plain::Scratch)
        }
    };
    if plain.len() != raw_len as usize {
        return Err(corrupt(&format!(
            "length {} differs from the indexed {}",
            plain.len(),
            raw_len
        )));
    }
    if key.blob_id(plain) != *id {
        return Err(corrupt("content does not hash to its ID"));
    }
    Ok(place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn blob_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..20, tree: bool) {
            let key = MasterKey::generate();
            let data: Vec<u8> = data.iter().cycle().take(data.len() * rep).copied().collect();
            let ty = if tree { BlobType::Tree } else { BlobType::Data };
            let id = key.blob_id(&data);
            let s = seal_blob(&key, ty, id, &data, CompressionLevel::default()).unwrap();
            prop_assert_eq!(open_blob(&key, ty, s.compression, &id, s.raw_len, &s.bytes).unwrap(), data.clone());
            // In place, with a scratch buffer left over from another blob.
            let mut stored = s.bytes.clone();
            let mut scratch = vec![7u8; 100];
            let plain = open_blob_in_place(&key, ty, s.compression, &id, s.raw_len, &mut stored, &mut scratch).unwrap();
            prop_assert_eq!(plain, &data[..]);
            let mut damaged = s.bytes.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            prop_assert!(open_blob_in_place(&key, ty, s.compression, &id, s.raw_len, &mut damaged, &mut scratch).is_err());
        }
    }

    #[test]
    fn compressible_data_shrinks_random_data_stays_raw() {
        use rand::{RngCore, SeedableRng};
        let key = MasterKey::generate();
        let text = b"holdfast ".repeat(10_000);
        let s = seal_blob(
            &key,
            BlobType::Data,
            key.blob_id(&text),
            &text,
            CompressionLevel::default(),
        )
        .unwrap();
        assert_eq!(s.compression, Compression::Zstd);
        assert!(s.bytes.len() < text.len() / 10);
        let mut rnd = vec![0u8; 100_000];
        rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut rnd);
        let s = seal_blob(
            &key,
            BlobType::Data,
            key.blob_id(&rnd),
            &rnd,
            CompressionLevel::default(),
        )
        .unwrap();
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.bytes.len(), rnd.len() + SEAL_OVERHEAD);
    }

    #[test]
    fn swapped_type_or_id_is_detected() {
        let key = MasterKey::generate();
        let a = b"aaaa".repeat(100);
        let id = key.blob_id(&a);
        let s = seal_blob(&key, BlobType::Data, id, &a, CompressionLevel::default()).unwrap();
        assert!(open_blob(
            &key,
            BlobType::Tree,
            s.compression,
            &id,
            s.raw_len,
            &s.bytes
        )
        .is_err());
        let other = key.blob_id(b"b");
        assert!(open_blob(
            &key,
            BlobType::Data,
            s.compression,
            &other,
            s.raw_len,
            &s.bytes
        )
        .is_err());
        assert!(open_blob(
            &key,
            BlobType::Data,
            s.compression,
            &id,
            s.raw_len + 1,
            &s.bytes
        )
        .is_err());
    }
}
