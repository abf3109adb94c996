//! `holdfast check`: verify the repository and name every problem with the object and
//! the snapshots it affects. Exit status 1 on any error; information (unindexed packs
//! left by an interrupted backup, superseded index files) does not fail the check.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use holdfast_engine::checker::{self, CheckOptions, CheckProgress, CheckReport, Problem, ReadData};

use super::{open_uncached, print_json};
use crate::cli::Args;
use crate::{exit, ui};

fn print_problem(label: &str, p: &Problem) {
    let mut details = p.details.iter();
    println!(
        "{label}: {} {}: {}",
        p.kind,
        p.id,
        details.next().map(String::as_str).unwrap_or("")
    );
    for d in details {
        println!("    {d}");
    }
    if !p.snapshots.is_empty() {
        let ids: Vec<String> = p.snapshots.iter().map(|s| s.short()).collect();
        println!(
            "    affects {} snapshot{}: {}",
            p.snapshots.len(),
            if p.snapshots.len() == 1 { "" } else { "s" },
            ids.join(" ")
        );
    }
    if !p.paths.is_empty() {
        let more = if p.more_paths > 0 {
            format!(" (and {} more)", p.more_paths)
        } else {
            String::new()
        };
        println!("    paths: {}{more}", p.paths.join(", "));
    }
}

fn print_report(r: &CheckReport, read: &ReadData) {
    let c = &r.counts;
    println!(
        "checked {} snapshots, {} index files, {} packs ({}), {} trees, {} file data references",
        c.snapshots,
        c.index_files,
        c.packs,
        ui::size(c.pack_bytes),
        c.trees,
        c.data_refs
    );
    match read {
        ReadData::None => {}
        ReadData::All => println!(
            "read all {} packs in full: {}, {} blobs verified",
            c.packs_read,
            ui::size(c.bytes_read),
            c.blobs_verified
        ),
        ReadData::Subset { n, m } => println!(
            "read {} packs in full (part {n}/{m}): {}, {} blobs verified",
            c.packs_read,
            ui::size(c.bytes_read),
            c.blobs_verified
        ),
        ReadData::Percent(p) => println!(
            "read {} packs in full ({p}% of them): {}, {} blobs verified",
            c.packs_read,
            ui::size(c.bytes_read),
            c.blobs_verified
        ),
    }
    for p in &r.errors {
        print_problem("error", p);
    }
    for p in &r.infos {
        print_problem("info", p);
    }
    if r.errors.is_empty() {
        println!(
            "no errors were found{}",
            if r.infos.is_empty() {
                String::new()
            } else {
                format!(" ({} notes above)", r.infos.len())
            }
        );
    } else {
        println!(
            "{} error{} found",
            r.errors.len(),
            if r.errors.len() == 1 {
                " was"
            } else {
                "s were"
            }
        );
    }
}

pub fn run(args: &Args, read_data: bool, subset: Option<ReadData>) -> Result<i32> {
    let read = match subset {
        Some(s) => s,
        None if read_data => ReadData::All,
        None => ReadData::None,
    };
    let repo = open_uncached(args)?;
    let progress = Arc::new(CheckProgress::default());
    let p = progress.clone();
    let bar = ui::Progress::start(
        ui::ProgressMode::for_args(args.quiet, args.json),
        "check",
        Arc::new(move || {
            (
                p.trees.load(Ordering::Relaxed) + p.headers.load(Ordering::Relaxed),
                p.bytes_read.load(Ordering::Relaxed),
                p.bytes_to_read.load(Ordering::Relaxed),
            )
        }),
    );
    let opts = CheckOptions {
        read_data: read,
        read_threads: 0,
    };
    let report = checker::check(&repo, &opts, &progress);
    bar.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else if !args.quiet || !report.is_ok() {
        print_report(&report, &read);
    }
    if report.is_ok() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "holdfast: check found {} error{} in the repository (listed {})",
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" },
            if args.json {
                "in the JSON output"
            } else {
                "above"
            }
        );
        Ok(exit::FAILURE)
    }
}
