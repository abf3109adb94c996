//! Block images (issue 11): `backup --device` of a sparse ext4 image file and of a loop
//! device, restore (sparse, byte-identical), changed-extent incrementals and
//! `dump --onto` a device.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const RECORDED: &str = "/volumes/ext4.img";

/// A 2 GiB ext4 image (a sparse file) holding `random_mib` MiB of incompressible files
/// and `text_mib` MiB of text, made with `mke2fs -d` (no mount needed). Returns its path.
fn ext4_image(dir: &Path, random_mib: u64, text_mib: u64) -> PathBuf {
    let src = dir.join("fs-content");
    for i in 0..random_mib.div_ceil(50) {
        let len = (random_mib - i * 50).min(50) * MIB;
        write_random(&src.join(format!("random/{i}.bin")), len, 100 + i);
    }
    let text = lorem(100 * 1024);
    for i in 0..text_mib * 10 {
        write_file(
            &src.join(format!("text/{}/{i}.txt", i % 17)),
            format!("{i} {text}").as_bytes(),
        );
    }
    let img = dir.join("ext4.img");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("2G")
        .output()
        .expect("run mke2fs");
    assert!(out.status.success(), "mke2fs: {out:?}");
    std::fs::remove_dir_all(&src).expect("remove the image's source files");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 * GIB);
    img
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(
        out.status.success(),
        "sha256sum {}: {out:?}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// SHA-256 of the first `len` bytes of a file or device.
fn sha256_prefix(path: &Path, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {len} \"$1\" | sha256sum",))
        .arg("sh")
        .arg(path)
        .output()
        .expect("sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// Bytes of every file below `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// Rewrites `len` bytes at each offset with random data; returns the rbd-diff JSON.
fn rewrite(img: &Path, offsets: &[u64], len: u64) -> String {
    let f = OpenOptions::new().write(true).open(img).unwrap();
    let mut entries = Vec::new();
    for (i, &o) in offsets.iter().enumerate() {
        f.write_all_at(&random_bytes(len as usize, 900 + i as u64), o)
            .unwrap();
        entries.push(format!(
            r#"{{"offset":{o},"length":{len},"exists":"true"}}"#
        ));
    }
    f.sync_all().unwrap();
    format!("[{}]", entries.join(","))
}

/// An image file: the full backup stores about the data (not 2 GiB), restores sparse and
/// byte-identical; a changed-extent incremental reads about the changes and restores the
/// new image.
#[test]
fn block_image_file_full_and_changed_extents() {
    require(
        Command::new("mke2fs").arg("-V").output().is_ok(),
        "mke2fs (e2fsprogs)",
    );
    let repo = Repo::new();
    let work = tempdir();
    let (random_mib, text_mib) = (500, 100);
    let img = ext4_image(work.path(), random_mib, text_mib);
    let before = du(&repo.path);
    let b = repo.backup(
        &[] as &[&str],
        &[
            "--device".as_ref(),
            img.as_os_str(),
            "--device-name".as_ref(),
            RECORDED.as_ref(),
        ],
    );
    let stored = du(&repo.path) - before;
    let data = (random_mib + text_mib) * MIB;
    assert!(
        stored <= data * 115 / 100 && stored >= random_mib * MIB * 85 / 100,
        "stored {stored} bytes for {data} bytes of data ({random_mib} MiB incompressible) in a 2 GiB image: {}",
        b.json
    );
    assert_eq!(b.stat("bytes_total"), 2 * GIB, "{}", b.json);
    // The image file's holes are not read.
    assert!(b.stat("bytes_read") < GIB, "{}", b.json);
    let node = repo.node(&b.id, Path::new(RECORDED));
    assert_eq!(node["size"].as_u64(), Some(2 * GIB), "{node}");

    let target = tempdir();
    repo.restore(&b.id, target.path(), &[] as &[&str]);
    let restored_img = restored(target.path(), Path::new(RECORDED));
    assert_eq!(sha256(&restored_img), sha256(&img), "restore differs");
    assert_sparse(&restored_img, 2 * GIB, data * 115 / 100 + 64 * MIB);
    std::fs::remove_file(&restored_img).unwrap();

    // Rewrite 3 MiB in three places (inside the data, in never-written space, at the end).
    let extents = work.path().join("extents.json");
    write_file(
        &extents,
        rewrite(&img, &[200 * MIB, 1500 * MIB, 2 * GIB - MIB], MIB).as_bytes(),
    );
    let before = du(&repo.path);
    let inc = repo.backup(
        &[] as &[&str],
        &[
            "--device".as_ref(),
            img.as_os_str(),
            "--device-name".as_ref(),
            RECORDED.as_ref(),
            "--changed-extents".as_ref(),
            extents.as_os_str(),
            "--parent".as_ref(),
            b.id.as_ref(),
        ],
    );
    assert_eq!(inc.json["notices"], Value::Array(vec![]), "{}", inc.json);
    let read = inc.stat("bytes_read");
    assert!(
        (3 * MIB..48 * MIB).contains(&read),
        "read {read} bytes for 3 MiB of changes: {}",
        inc.json
    );
    let grown = du(&repo.path) - before;
    assert!(
        grown < 40 * MIB,
        "stored {grown} bytes for 3 MiB of changes"
    );
    repo.assert_dump_equals(&inc.id, Path::new(RECORDED), &img);
}

/// A loop device (root): read whole, recorded with fixed metadata, deduplicated against
/// the same image read as a file, changed extents on the device, and `dump --onto`
/// another device zeroes what the image has as zeros.
#[test]
fn block_loop_device_backup_and_dump_onto_device() {
    require(is_root(), "root (losetup)");
    require(
        Command::new("mke2fs").arg("-V").output().is_ok(),
        "mke2fs (e2fsprogs)",
    );
    let repo = Repo::new();
    let work = tempdir();
    let img = ext4_image(work.path(), 150, 20);
    let file_backup = repo.backup(
        &[] as &[&str],
        &[
            "--device".as_ref(),
            img.as_os_str(),
            "--device-name".as_ref(),
            RECORDED.as_ref(),
        ],
    );
    let dev = Loop::attach(&img);
    let before = du(&repo.path);
    let b = repo.backup(&[] as &[&str], &["--device".as_ref(), dev.path.as_os_str()]);
    let grown = du(&repo.path) - before;
    // The same bytes as the file, but a device has no holes: the chunks next to each of
    // the file's holes (where a file read restarts the chunker) are new, the rest is
    // deduplicated (without it: 170 MiB).
    assert!(
        grown < 170 * MIB * 15 / 100,
        "the device's content is the file's: stored {grown} bytes"
    );
    assert_eq!(
        b.stat("bytes_read"),
        2 * GIB,
        "a device has no holes: {}",
        b.json
    );
    let node = repo.node(&b.id, &dev.path);
    assert_eq!(node["size"].as_u64(), Some(2 * GIB), "{node}");
    assert_eq!(node["mode"].as_u64(), Some(0o600), "{node}");
    assert_eq!(
        (node["uid"].as_u64(), node["gid"].as_u64()),
        (Some(0), Some(0)),
        "{node}"
    );
    let snap = repo.json(&["cat", "snapshot", &b.id]);
    assert_eq!(node["mtime_ns"], snap["time_ns"], "{node} {snap}");
    // (Not the same refs as the file: a file's holes restart the chunker, a device has
    // none; the data between them is shared, as `grown` shows.)
    drop(file_backup);

    // Changed extents on the device.
    let extents = work.path().join("extents.json");
    write_file(
        &extents,
        rewrite(&dev.path, &[64 * MIB, 1900 * MIB], 4 * MIB).as_bytes(),
    );
    let inc = repo.backup(
        &[] as &[&str],
        &[
            "--device".as_ref(),
            dev.path.as_os_str(),
            "--changed-extents".as_ref(),
            extents.as_os_str(),
            "--parent".as_ref(),
            b.id.as_ref(),
        ],
    );
    assert_eq!(inc.json["notices"], Value::Array(vec![]), "{}", inc.json);
    assert!(inc.stat("bytes_read") < 48 * MIB, "{}", inc.json);
    let image_hash = sha256(&dev.path);

    // Onto a device that holds other bytes where the image has zeros.
    let other = work.path().join("other.img");
    let f = File::create(&other).unwrap();
    f.set_len(2 * GIB + MIB).unwrap();
    for at in [0, 1000 * MIB, 2 * GIB - 8 * MIB] {
        f.write_all_at(&vec![0xffu8; 8 << 20], at).unwrap();
    }
    drop(f);
    let target = Loop::attach(&other);
    repo.cmd(&[
        "dump".as_ref(),
        inc.id.as_ref(),
        dev.path.as_os_str(),
        "--onto".as_ref(),
        target.path.as_os_str(),
    ])
    .assert_ok();
    assert_eq!(
        sha256_prefix(&target.path, 2 * GIB),
        image_hash,
        "the device written onto differs from the image"
    );
    assert_eq!(sha256(&dev.path), image_hash);
    // A device too small is refused before anything is written.
    let small = work.path().join("small.img");
    File::create(&small).unwrap().set_len(GIB).unwrap();
    let small_dev = Loop::attach(&small);
    repo.cmd(&[
        "dump".as_ref(),
        inc.id.as_ref(),
        dev.path.as_os_str(),
        "--onto".as_ref(),
        small_dev.path.as_os_str(),
    ])
    .assert_failed()
    .assert_stderr_contains("less than the image");
}

/// Bad combinations are usage errors, refused before the repository is opened.
#[test]
fn block_device_option_combinations_are_checked() {
    let repo = Repo::new();
    let work = tempdir();
    let ext = work.path().join("e.json");
    write_file(&ext, b"[]");
    for args in [
        vec!["backup", "--changed-extents", ext.to_str().unwrap()],
        vec![
            "backup",
            "--device",
            "/dev/null",
            "--changed-extents",
            ext.to_str().unwrap(),
        ],
        vec!["backup", "--device-name", "/x", "/etc/hostname"],
        vec![
            "backup",
            "--device",
            "/dev/null",
            "--device-name",
            "relative",
        ],
        vec![
            "backup",
            "--device",
            "/dev/null",
            "--parent",
            "latest",
            "--changed-extents",
            "/nonexistent.json",
        ],
    ] {
        repo.cmd(&args).assert_code(exit::USAGE);
    }
    let bad = work.path().join("bad.json");
    write_file(&bad, br#"{"offset": 1}"#);
    repo.cmd(&[
        "backup",
        "--device",
        "/dev/null",
        "--parent",
        "latest",
        "--changed-extents",
        bad.to_str().unwrap(),
    ])
    .assert_code(exit::USAGE)
    .assert_stderr_contains("offset");
}

/// A loop device attached to a file, detached on drop.
struct Loop {
    path: PathBuf,
}

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        Loop {
            path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
