//! `holdfast stats`: how big the repository is and what it holds.

use anyhow::Result;
use holdfast_engine::listing;

use super::{open, print_json};
use crate::cli::Args;
use crate::{exit, ui};

pub fn run(args: &Args) -> Result<i32> {
    let repo = open(args)?;
    let st = listing::stats(&repo)?;
    if args.json {
        print_json(&st)?;
    } else {
        println!("snapshots:        {}", st.snapshots);
        println!(
            "packs:            {} ({})",
            st.packs,
            ui::size(st.pack_bytes)
        );
        println!(
            "blobs:            {} data, {} tree",
            st.data_blobs, st.tree_blobs
        );
        println!(
            "unique content:   {} ({} stored)",
            ui::size(st.blob_raw_bytes),
            ui::size(st.blob_stored_bytes)
        );
        println!(
            "files in all snapshots: {}",
            ui::size(st.snapshot_file_bytes)
        );
        if st.blob_raw_bytes > 0 && st.snapshot_file_bytes > 0 {
            println!(
                "deduplication and compression: {:.2}x",
                st.snapshot_file_bytes as f64 / st.pack_bytes.max(1) as f64
            );
        }
    }
    Ok(exit::OK)
}
