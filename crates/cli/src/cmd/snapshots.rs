//! `holdfast snapshots`.

use anyhow::Result;
use holdfast_engine::listing;

use super::{filter, open, print_json};
use crate::cli::{Args, Filter};
use crate::{exit, ui};

pub fn run(args: &Args, f: &Filter) -> Result<i32> {
    let repo = open(args)?;
    let list = listing::snapshots(&repo, &filter(f)?)?;
    super::print_rollbacks(&list.rollbacks);
    for e in &list.unreadable {
        eprintln!("holdfast: warning: {e}");
    }
    if args.json {
        print_json(&list.snapshots)?;
    } else {
        println!(
            "{:<10} {:<26} {:<16} {:<20} {:>10}  paths",
            "ID", "time", "host", "tags", "size"
        );
        for s in &list.snapshots {
            println!(
                "{:<10} {:<26} {:<16} {:<20} {:>10}  {}",
                s.short_id,
                s.time,
                s.host,
                s.tags.join(","),
                ui::size(s.summary.bytes_total),
                s.paths.join(" ")
            );
        }
        println!("{} snapshots", list.snapshots.len());
    }
    Ok(if list.unreadable.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
