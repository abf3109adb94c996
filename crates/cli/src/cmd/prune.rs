//! `holdfast prune`.

use anyhow::{bail, Result};
use holdfast_engine::prune::{prune, PruneOptions, PruneReport};

use super::{open, print_json};
use crate::cli::{Args, PruneArgs};
use crate::{exit, ui};

/// A report with whether it was a dry run: `{"dry_run": ..., "report": {...}}`.
#[derive(serde::Serialize)]
pub struct DryRun<'a, T> {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// What was (or would have been) done.
    pub report: &'a T,
}

pub fn run(args: &Args, p: &PruneArgs) -> Result<i32> {
    let repo = open(args)?;
    run_on(args, &repo, p)
}

/// Prunes an open repository (shared with `forget --prune`).
pub fn run_on(
    args: &Args,
    repo: &holdfast_repo::repository::Repository,
    p: &PruneArgs,
) -> Result<i32> {
    // Both options were checked by their value parsers (clap refuses other values).
    let Some(margin_ns) = p.safety_margin.exact_nanos() else {
        bail!("--safety-margin needs an exact span: give it in s, min, h, d or w");
    };
    let opts = PruneOptions {
        dry_run: p.dry_run,
        margin_ns,
        max_unused: p.max_unused / 100.0,
        ..PruneOptions::default()
    };
    let r = prune(repo, &opts)?;
    if args.json {
        print_json(&DryRun {
            dry_run: p.dry_run,
            report: &r,
        })?;
    } else if !args.quiet {
        print_report(&r, p.dry_run);
    }
    Ok(exit::OK)
}

fn print_report(r: &PruneReport, dry: bool) {
    let would = if dry { "would be " } else { "" };
    println!("live blobs: {}", r.live_blobs);
    if r.markers_due > 0 {
        println!(
            "sweep: {} packs {would}deleted ({}), {} rescued because a snapshot needs them now",
            r.packs_deleted,
            ui::size(r.bytes_deleted),
            r.packs_rescued
        );
    }
    for why in &r.sweep_postponed {
        println!("sweep postponed: {why}");
    }
    println!(
        "mark: {} packs {would}marked for deletion ({}; {} not indexed, {} repacked: {} blobs copied)",
        r.packs_marked,
        ui::size(r.bytes_marked),
        r.orphans_marked,
        r.packs_repacked,
        r.blobs_repacked
    );
    if r.index_files_compacted > 0 {
        println!(
            "index: {} small index files {would}merged",
            r.index_files_compacted
        );
    }
    if r.retention_extended > 0 {
        println!(
            "extended the Object Lock retention of {} files still in use",
            r.retention_extended
        );
    }
    if r.temp_files_removed > 0 {
        println!(
            "tmp: {} files left by interrupted backups removed",
            r.temp_files_removed
        );
    }
    if r.packs_marked > 0 && !dry {
        println!("marked packs are deleted by a prune run after the safety margin has passed");
    }
}
