//! Keys and authenticated encryption (SPEC.md §4).
//!
//! One random [`MasterKey`] per repository holds three independent 32-byte keys: one for
//! XChaCha20-Poly1305, one for keyed BLAKE3 blob IDs, one that seeds the chunker's gear
//! table. Sealed data is `nonce (24) || ciphertext || tag (16)` with a fresh random nonce;
//! 192-bit nonces make random generation safe for any number of messages.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::Id;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The secret key set of a repository; wrapped by each key file.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    /// XChaCha20-Poly1305 key for every encrypted object and blob.
    pub encryption: [u8; 32],
    /// BLAKE3 key for blob IDs.
    pub blob_id: [u8; 32],
    /// Seed of the chunker's gear table.
    pub chunker: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Serialized length.
    pub const LEN: usize = 96;

    /// A fresh random key set.
    pub fn generate() -> MasterKey {
        MasterKey {
            encryption: random_array(),
            blob_id: random_array(),
            chunker: random_array(),
        }
    }

    /// `encryption || blob_id || chunker`.
    pub fn to_bytes(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        out[..32].copy_from_slice(&self.encryption);
        out[32..64].copy_from_slice(&self.blob_id);
        out[64..].copy_from_slice(&self.chunker);
        out
    }

    /// Inverse of [`MasterKey::to_bytes`].
    pub fn from_bytes(b: &[u8; 96]) -> MasterKey {
        let mut k = MasterKey {
            encryption: [0; 32],
            blob_id: [0; 32],
            chunker: [0; 32],
        };
        k.encryption.copy_from_slice(&b[..32]);
        k.blob_id.copy_from_slice(&b[32..64]);
        k.chunker.copy_from_slice(&b[64..]);
        k
    }

    /// The blob ID of a plaintext: BLAKE3 keyed with the blob-ID key.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// Encrypts with a fresh random nonce; returns `nonce || ciphertext || tag`.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.encryption, ad, plaintext)
    }

    /// Encrypts `buf` in place with a fresh random nonce and returns the nonce and tag:
    /// the sealed message is `nonce || buf || tag`, written out by the caller without
    /// another copy of the data.
    pub fn seal_in_place(&self, ad: &[u8], buf: &mut [u8]) -> ([u8; NONCE_LEN], [u8; TAG_LEN]) {
        let nonce: [u8; NONCE_LEN] = random_array();
        let tag = encrypt_detached(&self.encryption, &nonce, ad, buf);
        (nonce, tag)
    }

    /// Decrypts `nonce || ciphertext || tag` where it lies: on success the ciphertext
    /// part holds the plaintext; `false` (and the buffer unspecified) if it is too short
    /// or not authentic.
    pub fn open_in_place(&self, ad: &[u8], sealed: &mut [u8]) -> bool {
        open_in_place(&self.encryption, ad, sealed)
    }

    /// Decrypts `nonce || ciphertext || tag`; `None` if authentication fails.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.encryption, ad, sealed)
    }
}

/// Encrypts `plaintext` under `key`, binding `ad`; output is `nonce || ciphertext || tag`.
pub fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_array();
    seal_with_nonce(key, &nonce, ad, plaintext)
}

/// [`seal`] with a caller-chosen nonce; only for test vectors, never for real data.
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let tag = encrypt_detached(key, nonce, ad, &mut out[NONCE_LEN..]);
    out.extend_from_slice(&tag);
    out
}

/// The one XChaCha20-Poly1305 encryption: `buf` in place, the tag returned.
fn encrypt_detached(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), ad, buf)
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers")
        .into()
}

/// Decrypts the output of [`seal`]; `None` when too short or not authentic.
pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let mut buf = sealed.to_vec();
    if !open_in_place(key, ad, &mut buf) {
        return None;
    }
    buf.truncate(buf.len() - TAG_LEN);
    buf.drain(..NONCE_LEN);
    Some(buf)
}

/// The one XChaCha20-Poly1305 decryption, in place (see [`MasterKey::open_in_place`]).
fn open_in_place(key: &[u8; 32], ad: &[u8], sealed: &mut [u8]) -> bool {
    if sealed.len() < SEAL_OVERHEAD {
        return false;
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            ad,
            ct,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .is_ok()
}

/// Random bytes from the operating system.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    getrandom::getrandom(&mut a).expect("the operating system's random source failed");
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(msg in proptest::collection::vec(any::<u8>(), 0..2000), ad in proptest::collection::vec(any::<u8>(), 0..40)) {
            let k = MasterKey::generate();
            let s = k.seal(&ad, &msg);
            prop_assert_eq!(s.len(), msg.len() + SEAL_OVERHEAD);
            prop_assert_eq!(k.open(&ad, &s).unwrap(), msg);
        }
    }

    proptest! {
        #[test]
        fn in_place_sealing_opens_like_seal(msg in proptest::collection::vec(any::<u8>(), 0..2000), ad in proptest::collection::vec(any::<u8>(), 0..40)) {
            let k = MasterKey::generate();
            let mut buf = msg.clone();
            let (nonce, tag) = k.seal_in_place(&ad, &mut buf);
            prop_assert!(msg.len() < 16 || buf != msg, "not encrypted");
            let mut sealed = [&nonce[..], &buf, &tag].concat();
            prop_assert_eq!(k.open(&ad, &sealed).unwrap(), msg.clone());
            prop_assert!(k.open_in_place(&ad, &mut sealed));
            prop_assert_eq!(&sealed[NONCE_LEN..sealed.len() - TAG_LEN], &msg[..]);
            sealed[0] ^= 1;
            prop_assert!(!k.open_in_place(&ad, &mut sealed), "a damaged nonce is detected");
        }
    }

    #[test]
    fn tampering_and_wrong_ad_are_detected() {
        let k = MasterKey::generate();
        let s = k.seal(b"ad", b"hello world");
        assert!(k.open(b"other", &s).is_none());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(k.open(b"ad", &t).is_none(), "flip at {i} undetected");
        }
        assert!(k.open(b"ad", &s[..s.len() - 1]).is_none());
        assert!(k.open(b"ad", &[]).is_none());
        let other = MasterKey::generate();
        assert!(other.open(b"ad", &s).is_none());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Id(*blake3::hash(b"x").as_bytes()));
    }
}
