//! `GcMarker::decode` on arbitrary bytes (a gc marker's plaintext). It must never panic,
//! and whatever it accepts must round-trip.
#![no_main]

use holdfast_repo::gc::GcMarker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = GcMarker::decode(data) else {
        return;
    };
    let enc = m.encode();
    assert_eq!(enc, data, "accepted marker bytes are not in canonical form");
    assert_eq!(
        GcMarker::decode(&enc).expect("re-encoded marker decodes"),
        m
    );
});
