//! `holdfast repair index|snapshots`.

use anyhow::Result;
use holdfast_engine::repair::{repair_index, repair_snapshots};

use super::prune::DryRun;
use super::{host_name, open_uncached, print_json};
use crate::cli::{Args, RepairWhat};
use crate::exit;

pub fn run(args: &Args, what: &RepairWhat) -> Result<i32> {
    let repo = open_uncached(args)?;
    match what {
        RepairWhat::Index { dry_run } => {
            let r = repair_index(&repo, &host_name(), *dry_run)?;
            if args.json {
                print_json(&DryRun {
                    dry_run: *dry_run,
                    report: &r,
                })?;
            } else if !args.quiet {
                let would = if *dry_run { "would " } else { "" };
                println!(
                    "read the headers of {} packs ({} blobs)",
                    r.packs_read, r.blobs
                );
                for d in &r.damaged_packs {
                    println!("damaged pack (left in place, its blobs are not indexed): {d}");
                }
                println!(
                    "{} packs were missing from the index, {} index entries pointed at missing or damaged packs; {would}replace {} index files",
                    r.packs_added, r.packs_dropped, r.index_files_replaced
                );
                if !r.damaged_packs.is_empty() || r.packs_dropped > 0 {
                    println!("next: `holdfast repair snapshots` to rewrite snapshots that reference lost data");
                }
            }
            Ok(if r.damaged_packs.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        RepairWhat::Snapshots { dry_run } => {
            let index = repo.load_index()?;
            let writer = repo.begin_write(&host_name())?;
            let reps = repair_snapshots(&writer, &index, *dry_run)?;
            if args.json {
                print_json(&serde_json::json!({"dry_run": dry_run, "snapshots": reps}))?;
            } else if !args.quiet {
                if reps.is_empty() {
                    println!("no snapshot references missing data");
                }
                for r in &reps {
                    match r.replaced_by {
                        Some(new) => println!(
                            "snapshot {} replaced by {} (tagged repaired); removed:",
                            r.snapshot.short(),
                            new.short()
                        ),
                        None => println!(
                            "snapshot {} would be rewritten; it would lose:",
                            r.snapshot.short()
                        ),
                    }
                    for p in &r.removed {
                        println!("  {p}");
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}
