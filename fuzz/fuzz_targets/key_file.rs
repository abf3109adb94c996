//! `KeyFile::decode` on arbitrary bytes (a stored key file, read before any password is
//! known). It must never panic. `unlock` is deliberately not called: Argon2 is far too
//! slow for fuzzing, and the parameters it would use are what `decode` validates.
#![no_main]

use holdfast_repo::keyfile::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = KeyFile::decode(data) else {
        return;
    };
    assert_eq!(
        kf.encoded(),
        data,
        "a decoded key file must keep its exact bytes"
    );
    let back = KeyFile::decode(kf.encoded()).expect("a key file's own bytes must decode");
    assert_eq!(back, kf);
});
