//! `Session::decode` on arbitrary bytes (a session file's plaintext). It must never panic,
//! and whatever it accepts must round-trip: bytes in the current version are canonical;
//! older versions (still read) are upgraded on re-encoding, so only the value must survive.
#![no_main]

use holdfast_repo::gc::{Session, SESSION_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Session::decode(data) else {
        return;
    };
    let enc = s
        .encode()
        .expect("a decoded session fits its fields, so it re-encodes");
    if data.first() == Some(&SESSION_VERSION) {
        assert_eq!(
            enc, data,
            "accepted session bytes are not in canonical form"
        );
    }
    assert_eq!(
        Session::decode(&enc).expect("re-encoded session decodes"),
        s
    );
});
