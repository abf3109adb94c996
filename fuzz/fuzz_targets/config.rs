//! `Config::decode` on arbitrary bytes (the config envelope's plaintext). It must never
//! panic, and whatever it accepts must round-trip.
#![no_main]

use holdfast_repo::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = Config::decode(data) else {
        return;
    };
    let enc = cfg.encode();
    assert_eq!(enc, data, "accepted config bytes are not in canonical form");
    assert_eq!(
        Config::decode(&enc).expect("a re-encoded config must decode"),
        cfg
    );
});
