//! Pack headers.
//!
//! * `PackHeader::decode` on arbitrary plaintext, with `data_len` taken from the first
//!   8 input bytes (little-endian); accepted headers must round-trip.
//! * `pack::read_header` over the rest of the input as a whole pack, with a fixed key;
//!   it must never panic (authentication essentially always fails here, so this covers
//!   the trailer and length checks).
//! * The same plaintext sealed with the fixed key into a well-formed pack of `data_len`
//!   (when small) zero bytes, so the path after authentication is reached as well.
#![no_main]

use holdfast_repo::crypto::{seal_with_nonce, MasterKey};
use holdfast_repo::pack::{self, PackHeader, HEADER_AD, PACK_MAGIC, PACK_VERSION};
use holdfast_repo::Id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, rest) = data.split_at(8);
    let data_len = u64::from_le_bytes(len.try_into().unwrap());

    let decoded = PackHeader::decode(rest, data_len);
    if let Ok(h) = &decoded {
        let enc = h.encode();
        assert_eq!(
            enc, rest,
            "accepted pack header bytes are not in canonical form"
        );
        let back = PackHeader::decode(&enc, data_len).expect("a re-encoded header must decode");
        assert_eq!(&back, h, "pack header changed across encode/decode");
        let mut expect = 0u64;
        for e in &h.entries {
            assert_eq!(
                e.offset as u64, expect,
                "entries are not laid out back to back"
            );
            expect += e.stored_len as u64;
        }
        assert_eq!(expect, data_len);
    }

    let key = MasterKey::from_bytes(&[7u8; 96]);
    let _ = pack::read_header(&key, &Id::default(), rest);
    let _ = pack::read_header(&key, &Id::default(), data);

    // A well-formed pack around the same header plaintext.
    if data_len <= 1 << 20 {
        let sealed = seal_with_nonce(&key.encryption, &[9u8; 24], HEADER_AD, rest);
        let mut p = vec![0u8; data_len as usize];
        p.extend_from_slice(&sealed);
        p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        p.push(PACK_VERSION);
        p.extend_from_slice(PACK_MAGIC);
        let r = pack::read_header(&key, &Id::default(), &p);
        assert_eq!(
            r.is_ok(),
            decoded.is_ok(),
            "read_header disagrees with PackHeader::decode"
        );
        if let (Ok(a), Ok(b)) = (r, decoded) {
            assert_eq!(a, b);
        }
    }
});
