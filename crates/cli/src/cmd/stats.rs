//! `holdfast stats`: how big the repository is and what it holds.

use anyhow::Result;
use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;

use super::{open, print_json};
use crate::cli::Args;
use crate::{exit, ui};

pub fn run(args: &Args) -> Result<i32> {
    let repo = open(args)?;
    let index = repo.load_index()?;
    let (snaps, bad) = repo.snapshots()?;
    let packs = repo.backend().list(FileKind::Pack)?;
    let pack_bytes: u64 = packs.iter().map(|(_, s)| s).sum();
    let (mut data, mut trees, mut raw, mut stored) = (0u64, 0u64, 0u64, 0u64);
    for b in index.blobs() {
        match b.ty {
            BlobType::Data => data += 1,
            BlobType::Tree => trees += 1,
        }
        raw += b.raw_len as u64;
        stored += b.stored_len as u64;
    }
    let total_files: u64 = snaps.iter().map(|(_, s)| s.summary.bytes_total).sum();
    if args.json {
        print_json(&serde_json::json!({
            "snapshots": snaps.len(),
            "damaged_snapshots": bad.len(),
            "packs": packs.len(),
            "pack_bytes": pack_bytes,
            "data_blobs": data,
            "tree_blobs": trees,
            "blob_raw_bytes": raw,
            "blob_stored_bytes": stored,
            "snapshot_file_bytes": total_files,
        }));
    } else {
        println!("snapshots:        {}", snaps.len());
        println!(
            "packs:            {} ({})",
            packs.len(),
            ui::size(pack_bytes)
        );
        println!("blobs:            {data} data, {trees} tree");
        println!(
            "unique content:   {} ({} stored)",
            ui::size(raw),
            ui::size(stored)
        );
        println!("files in all snapshots: {}", ui::size(total_files));
        if raw > 0 && total_files > 0 {
            println!(
                "deduplication and compression: {:.2}x",
                total_files as f64 / pack_bytes.max(1) as f64
            );
        }
    }
    Ok(exit::OK)
}
