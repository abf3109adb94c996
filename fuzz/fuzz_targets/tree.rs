//! `Tree::decode` on arbitrary bytes (a tree blob's plaintext). It must never panic, and
//! whatever it accepts must re-encode to the same bytes and decode to an equal tree.
#![no_main]

use holdfast_repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::decode(data) else { return };
    let enc = tree.encode().expect("a tree that decodes must re-encode");
    let back = Tree::decode(&enc).expect("a re-encoded tree must decode");
    assert_eq!(back, tree, "tree changed across encode/decode");
    // The encoding is canonical: blob IDs are hashes of it, so one tree must have one form.
    assert_eq!(enc, data, "accepted tree bytes are not in canonical form");
});
