//! Deduplication: data already in the repository is not stored again.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;

/// Re-reading an unchanged tree (`--force`) stores (almost) nothing new; inserting 100
/// bytes into the middle of a 256 MiB random file stores only the few chunks around the
/// insertion (content-defined chunking re-synchronises), not the rest of the file.
#[test]
fn dedup_same_tree_and_shifted_content_add_almost_nothing() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    write_random(&src.join("big.bin"), 256 * MIB, 21);
    for i in 0..20u64 {
        write_file(
            &src.join(format!("small/{i:02}.dat")),
            &random_bytes(10_000 + i as usize * 3_000, 100 + i),
        );
    }
    write_file(&src.join("text.txt"), lorem(2 * MIB as usize).as_bytes());
    let total: u64 = 256 * MIB + (0..20).map(|i| 10_000 + i * 3_000).sum::<u64>() + 2 * MIB;

    let first = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(first.stat("bytes_total"), total, "{}", first.json);
    assert!(
        first.stat("bytes_added_stored") > 200 * MIB,
        "first backup must store the random data: {}",
        first.json
    );

    // Same tree again, every file re-read.
    let second = repo.backup(&[&src], &["--force"]);
    assert_eq!(
        second.stat("bytes_read"),
        total,
        "--force must re-read every file: {}",
        second.json
    );
    assert_eq!(second.stat("data_blobs_added"), 0, "{}", second.json);
    assert!(
        second.stat("bytes_added_stored") < total / 100,
        "second backup of the same tree added {} bytes (>= 1% of {}): {}",
        second.stat("bytes_added_stored"),
        total,
        second.json
    );

    // Insert 100 bytes in the middle of the big file. Content-defined chunking changes
    // only the chunk holding the insertion and, when a cut point moves or a new one
    // appears among the changed bytes, the next one. With a 1 MiB average that is
    // "< 3 MiB" most of the time, but the chunk holding a given offset is sometimes
    // larger (a single 4 MiB chunk in about 1 run of 10: the gear table is random per
    // repository), so the bound is computed from the first snapshot's actual chunks: the
    // chunk holding the insertion point plus the one after it.
    let at = 128 * MIB + 12_345;
    let lens = repo.blob_raw_lengths();
    let node = repo.node(&first.id, &src.join("big.bin"));
    let chunks: Vec<u64> = node["content"]
        .as_array()
        .expect("content refs")
        .iter()
        .map(|c| {
            let id = c["blob"]
                .as_str()
                .unwrap_or_else(|| panic!("random data stored as a non-blob ref: {c}"));
            lens[id]
        })
        .collect();
    assert_eq!(
        chunks.iter().sum::<u64>(),
        256 * MIB,
        "chunks do not add up"
    );
    assert!(
        (128..=1024).contains(&chunks.len()),
        "{} chunks for 256 MiB: the average is not near 1 MiB",
        chunks.len()
    );
    let mut start = 0u64;
    let mut holding = chunks.len();
    for (i, len) in chunks.iter().enumerate() {
        if (start..start + len).contains(&at) {
            holding = i;
        }
        start += len;
    }
    let around: u64 = chunks[holding..].iter().take(2).sum();
    let bound = around + 100 + 256 * 1024; // plus the new tree blobs
    insert_bytes(&src.join("big.bin"), at, &random_bytes(100, 22));
    let third = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(third.stat("files_changed"), 1, "{}", third.json);
    assert!(
        third.stat("data_blobs_added") <= 2,
        "a 100-byte insertion added more than two chunks: {}",
        third.json
    );
    assert!(
        third.stat("bytes_added_raw") < bound,
        "a 100-byte insertion added {} raw bytes; the two chunks from the insertion point \
         hold {around}: {}",
        third.stat("bytes_added_raw"),
        third.json
    );
    assert!(
        third.stat("bytes_added_stored") < bound + 4096,
        "a 100-byte insertion added {} stored bytes; the two chunks from the insertion \
         point hold {around}: {}",
        third.stat("bytes_added_stored"),
        third.json
    );

    // And the shifted file restores exactly.
    let big = src.join("big.bin");
    repo.assert_dump_equals(&third.id, &big, &big);
}

/// Two copies of the same data under different names, and the same small file in two
/// directories, are stored once within a single backup.
#[test]
fn dedup_within_one_backup() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    write_random(&src.join("a/data"), 24 * MIB, 31);
    fs::copy(src.join("a/data"), src.join("b/copy")).unwrap();
    write_file(&src.join("a/small"), &random_bytes(5000, 32));
    write_file(&src.join("b/small"), &random_bytes(5000, 32));
    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("bytes_total"), 48 * MIB + 10_000);
    assert!(
        b.stat("bytes_added_stored") < 26 * MIB,
        "two copies of 24 MiB stored {} bytes: {}",
        b.stat("bytes_added_stored"),
        b.json
    );
}

/// Inserts `data` at `at` in the file at `path`, shifting the rest.
fn insert_bytes(path: &std::path::Path, at: u64, data: &[u8]) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_to_end(&mut tail).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    f.write_all(&tail).unwrap();
}
