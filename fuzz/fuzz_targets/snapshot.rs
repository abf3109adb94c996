//! `Snapshot::decode` on arbitrary bytes (a snapshot envelope's plaintext). It must never
//! panic, and whatever it accepts must re-encode to the same bytes and decode to an equal
//! snapshot.
#![no_main]

use holdfast_repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = Snapshot::decode(data) else {
        return;
    };
    let enc = snap.encode();
    let back = Snapshot::decode(&enc).expect("a re-encoded snapshot must decode");
    assert_eq!(back, snap, "snapshot changed across encode/decode");
    assert_eq!(
        enc, data,
        "accepted snapshot bytes are not in canonical form"
    );
});
