//! `IndexFile::decode` on arbitrary bytes (an index envelope's plaintext). It must never
//! panic, whatever it accepts must round-trip, and building the in-memory index from it
//! must not panic either.
#![no_main]

use holdfast_repo::index::{IndexFile, MasterIndex};
use holdfast_repo::Id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = IndexFile::decode(data) else {
        return;
    };
    let enc = file.encode();
    let back = IndexFile::decode(&enc).expect("a re-encoded index file must decode");
    assert_eq!(back, file, "index file changed across encode/decode");
    assert_eq!(enc, data, "accepted index bytes are not in canonical form");

    // Named as stored files are named. (A file whose `supersedes` lists its own name is
    // ignored entirely; with content-hash names that cannot happen, so skip the check.)
    let name = Id::of_stored_bytes(data);
    let master = MasterIndex::from_files([(name, &file)]);
    if file.supersedes.contains(&name) {
        return;
    }
    for p in &file.packs {
        for b in &p.blobs {
            let loc = master
                .get(b.ty, &b.id)
                .expect("indexed blob missing from the master index");
            assert_eq!((loc.entry.ty, loc.entry.id), (b.ty, b.id));
        }
    }
});
