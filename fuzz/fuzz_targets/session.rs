//! `Session::decode` on arbitrary bytes (a session file's plaintext). It must never panic,
//! and whatever it accepts must round-trip.
#![no_main]

use holdfast_repo::gc::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Session::decode(data) else {
        return;
    };
    let enc = s.encode();
    assert_eq!(enc, data, "accepted session bytes are not in canonical form");
    assert_eq!(Session::decode(&enc).expect("re-encoded session decodes"), s);
});
