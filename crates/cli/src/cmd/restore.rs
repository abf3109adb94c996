//! `holdfast restore` and `holdfast dump`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::{self, lookup, RestoreOptions, RestoreProgress};
use holdfast_repo::tree::NodeKind;

use super::{filter, open, print_json};
use crate::cli::{Args, Command, Filter};
use crate::{exit, ui};

pub fn run(args: &Args) -> Result<i32> {
    let Command::Restore {
        snapshot,
        target,
        includes,
        excludes,
        filter: f,
    } = &args.command
    else {
        unreachable!("dispatched on Restore")
    };
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: snapshot.path.clone(),
        includes: PathFilter::new(includes)?,
        excludes: PathFilter::new(excludes)?,
        owners: holdfast_engine::fsmeta::is_root(),
    };
    let repo = open(args)?;
    let (id, snap) = repo.find_snapshot(&snapshot.snapshot, &filter(f)?)?;
    let progress = Arc::new(RestoreProgress::default());
    let p2 = progress.clone();
    let bar = ui::Progress::start(
        ui::ProgressMode::for_args(args.quiet, args.json),
        "restore",
        Arc::new(move || {
            (
                p2.entries.load(Ordering::Relaxed),
                p2.bytes.load(Ordering::Relaxed),
                p2.bytes_total.load(Ordering::Relaxed),
            )
        }),
    );
    let report = restorer::restore_snapshot(&repo, id, &snap, &opts, &progress);
    bar.finish();
    let report = report?;
    let summary = &report.summary;
    for w in &summary.warnings {
        eprintln!("holdfast: warning: {w}");
    }
    if args.json {
        print_json(&report)?;
    } else if !args.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} directories, {} other entries, {} in {:.1}s",
            report.snapshot_id.short(),
            target.display(),
            summary.files,
            summary.dirs,
            summary.others,
            ui::size(summary.bytes),
            report.duration_ns as f64 / 1e9
        );
    }
    if report.is_complete() {
        Ok(exit::OK)
    } else {
        // Each was named above (and in the JSON); the exit code tells scripts that the
        // restore is not complete.
        if !args.json {
            eprintln!(
                "holdfast: the restore is incomplete: {} warning{} above name what could not \
                 be restored",
                summary.warnings.len(),
                if summary.warnings.len() == 1 { "" } else { "s" }
            );
        }
        Ok(exit::PARTIAL)
    }
}

pub fn dump(args: &Args, spec: &str, path: &Path, onto: Option<&Path>, f: &Filter) -> Result<i32> {
    let repo = open(args)?;
    let (_, snap) = repo.find_snapshot(spec, &filter(f)?)?;
    let index = repo.load_index()?;
    let p = path.as_os_str().as_bytes();
    let Some(node) = lookup(&repo, &index, &snap.tree, p)? else {
        bail!("give the path of a file inside the snapshot (see `holdfast ls`)");
    };
    if node.kind != NodeKind::File {
        bail!("{} is not a regular file in the snapshot (it is a {:?}); use `holdfast restore` for directories", path.display(), node.kind);
    }
    if let Some(target) = onto {
        let r = holdfast_engine::image::write_into(&repo, &index, &node, target)?;
        if args.json {
            print_json(&r)?;
        } else if !args.quiet {
            println!(
                "wrote {} onto {}: {} of data, {} zeroed",
                path.display(),
                target.display(),
                ui::size(r.data_bytes),
                ui::size(r.zeroed_bytes)
            );
        }
        return Ok(exit::OK);
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    restorer::dump(&repo, &index, &node, &mut out)?;
    out.flush()?;
    Ok(exit::OK)
}
