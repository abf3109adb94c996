//! Shared inputs for the benchmarks: deterministic data of a chosen compressibility.

use rand::{RngCore, SeedableRng};

/// `len` bytes of fixed-seed random (incompressible) data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// `len` bytes of text-like data that zstd compresses about 3:1.
pub fn texty_bytes(len: usize, seed: u64) -> Vec<u8> {
    let words: Vec<&[u8]> = [
        &b"holdfast "[..],
        b"backup ",
        b"chunk ",
        b"pack ",
        b"index ",
        b"snapshot ",
        b"tree\n",
        b"blob ",
        b"zstd ",
    ]
    .to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(words[(rng.next_u32() as usize) % words.len()]);
        if rng.next_u32() % 7 == 0 {
            v.extend_from_slice(format!("{} ", rng.next_u32()).as_bytes());
        }
    }
    v.truncate(len);
    v
}
