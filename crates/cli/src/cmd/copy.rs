//! `holdfast copy`: snapshots from --from-repo into -r (the engine's [`holdfast_engine::copy`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use holdfast_engine::copy::{self, CopyProgress, CopyRequest};

use super::{filter, host_name, open, open_source, print_json};
use crate::cli::{Args, Filter, FromRepo};
use crate::{exit, ui};

pub fn run(
    args: &Args,
    from: &FromRepo,
    f: &Filter,
    dry_run: bool,
    snapshots: &[String],
) -> Result<i32> {
    let filter = filter(f)?;
    // The target first: a wrong -r fails before the source's password is asked for.
    let dst = open(args)?;
    let src = open_source(args, from)?;
    let map_dir = if args.no_cache {
        None
    } else {
        match &args.cache_dir {
            Some(d) if !d.as_os_str().is_empty() => Some(d.clone()),
            _ => holdfast_repo::cache::default_dir(),
        }
    };
    let req = CopyRequest {
        filter,
        ids: snapshots.to_vec(),
        dry_run,
        host: host_name(),
        map_dir,
        ..CopyRequest::new()
    };
    let progress = Arc::new(CopyProgress::default());
    let mode = if dry_run {
        ui::ProgressMode::Off
    } else {
        ui::ProgressMode::for_args(args.quiet, args.json)
    };
    let p = progress.clone();
    let bar = ui::Progress::start(
        mode,
        "copy",
        Arc::new(move || {
            (
                p.snapshots.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
            )
        }),
    );
    let report = copy::copy(&src, &dst, &req, &progress);
    bar.finish();
    let report = report?;
    for e in &report.errors {
        eprintln!("holdfast: error: {e}");
    }
    if args.json {
        print_json(&report)?;
    } else if !args.quiet {
        for c in &report.copied {
            let what = match c.target {
                Some(t) => format!("copied {} as {}", c.source.short(), t.short()),
                None => format!("would copy {}", c.source.short()),
            };
            println!("{what}  {}  {}  {}", c.time, c.host, c.paths.join(" "));
        }
        if dry_run {
            println!(
                "{} snapshots to copy, {} already in the target",
                report.copied.len(),
                report.snapshots_skipped
            );
        } else {
            println!(
                "{} snapshots copied, {} already in the target; {} blobs sent ({} stored), \
                 {} already there; read {} from the source{}",
                report.snapshots_copied,
                report.snapshots_skipped,
                report.blobs_copied,
                ui::size(report.bytes_written),
                report.blobs_skipped,
                ui::size(report.bytes_read),
                if report.shared_keys {
                    " (shared keys: no ID translation)"
                } else {
                    ""
                }
            );
        }
    }
    if report.snapshots_failed > 0 {
        eprintln!(
            "holdfast: {} snapshots could not be copied; the others were",
            report.snapshots_failed
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}
