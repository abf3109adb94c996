//! `holdfast snapshots`.

use anyhow::Result;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;

use super::{filter, open, print_json};
use crate::cli::{Args, Filter};
use crate::{exit, ui};

/// JSON form of a snapshot.
pub fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "short_id": id.short(),
        "time": ui::time(s.time_ns, s.utc_offset_s),
        "time_ns": s.time_ns,
        "host": s.host,
        "user": s.user,
        "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "tags": s.tags,
        "tree": s.tree,
        "parent": s.parent,
        "program_version": s.program_version,
        "summary": s.summary,
    })
}

pub fn run(args: &Args, f: &Filter) -> Result<i32> {
    let repo = open(args)?;
    let f = filter(f)?;
    let (all, bad) = repo.snapshots()?;
    for e in &bad {
        eprintln!("holdfast: warning: {e}");
    }
    let list: Vec<_> = all.iter().filter(|(_, s)| f.matches(s)).collect();
    if args.json {
        print_json(&serde_json::Value::Array(
            list.iter().map(|(id, s)| snapshot_json(id, s)).collect(),
        ));
    } else {
        println!(
            "{:<10} {:<26} {:<16} {:<20} {:>10}  paths",
            "ID", "time", "host", "tags", "size"
        );
        for (id, s) in &list {
            let paths: Vec<String> = s
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            println!(
                "{:<10} {:<26} {:<16} {:<20} {:>10}  {}",
                id.short(),
                ui::time(s.time_ns, s.utc_offset_s),
                s.host,
                s.tags.join(","),
                ui::size(s.summary.bytes_total),
                paths.join(" ")
            );
        }
        println!("{} snapshots", list.len());
    }
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
