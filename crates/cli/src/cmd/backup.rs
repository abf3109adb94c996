//! `holdfast backup`.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use holdfast_engine::archiver::{self, BackupOptions, BackupProgress};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::scanner;
use holdfast_repo::blob::CompressionLevel;

use super::{host_name, now_ns, open, print_json, user_name};
use crate::cli::{Args, Command};
use crate::{exit, ui};

pub fn run(args: &Args) -> Result<i32> {
    let Command::Backup {
        paths,
        tags,
        host,
        excludes,
        exclude_files,
        one_file_system,
        exclude_caches,
        parent,
        force,
    } = &args.command
    else {
        unreachable!("dispatched on Backup")
    };
    let mut patterns = excludes.clone();
    for f in exclude_files {
        patterns.extend(PathFilter::read_pattern_file(f)?);
    }
    let excludes = PathFilter::new(&patterns)?;
    let repo = open(args)?;
    let host = host.clone().unwrap_or_else(host_name);
    // The session is announced before the index is read, so a concurrent prune waits for it.
    let writer = repo.begin_write(&host)?;

    let mut abs_paths = Vec::new();
    for p in paths {
        abs_paths.push(archiver::normalize_path(p)?);
    }
    let mut path_bytes: Vec<Vec<u8>> = abs_paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    path_bytes.sort();
    path_bytes.dedup();
    let parent = match parent {
        Some(spec) => Some(repo.find_snapshot(spec, &Default::default())?.0),
        None => {
            let (all, _) = repo.snapshots()?;
            all.into_iter()
                .rev()
                .find(|(_, s)| {
                    s.host == host && {
                        let mut p = s.paths.clone();
                        p.sort();
                        p == path_bytes
                    }
                })
                .map(|(id, _)| id)
        }
    };

    let local = chrono::Local::now();
    let opts = BackupOptions {
        paths: abs_paths,
        excludes,
        one_file_system: *one_file_system,
        exclude_caches: *exclude_caches,
        parent,
        force: *force,
        host,
        user: user_name(),
        tags: tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        time_ns: now_ns(),
        utc_offset_s: local.offset().local_minus_utc(),
        program_version: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
        compression: CompressionLevel::default(),
    };
    let progress = Arc::new(BackupProgress::default());
    let mode = ui::ProgressMode::for_args(args.quiet, args.json);
    // The total for the display's percentage and ETA, from a walk beside the backup.
    let total = Arc::new(AtomicU64::new(0));
    let stop_scan = Arc::new(AtomicBool::new(false));
    let scanner = (mode != ui::ProgressMode::Off).then(|| {
        let (paths, excludes, ofs) = (
            opts.paths.clone(),
            opts.excludes.clone(),
            opts.one_file_system,
        );
        let (total, stop) = (total.clone(), stop_scan.clone());
        std::thread::spawn(move || scanner::scan_total(&paths, &excludes, ofs, &total, &stop))
    });
    let (p2, t2) = (progress.clone(), total.clone());
    let bar = ui::Progress::start(
        mode,
        "backup",
        Arc::new(move || {
            (
                p2.entries.load(Ordering::Relaxed),
                p2.bytes.load(Ordering::Relaxed),
                t2.load(Ordering::Relaxed),
            )
        }),
    );
    let outcome = archiver::backup(&writer, &opts, &progress);
    drop(writer);
    stop_scan.store(true, Ordering::Relaxed);
    if let Some(s) = scanner {
        let _ = s.join();
    }
    bar.finish();
    let outcome = outcome?;
    for n in &outcome.notices {
        eprintln!("holdfast: note: {n}");
    }
    for w in &outcome.warnings {
        eprintln!("holdfast: warning: {w}");
    }
    let s = &outcome.snapshot.summary;
    if args.json {
        print_json(&serde_json::json!({
            "snapshot_id": outcome.id,
            "parent": outcome.snapshot.parent,
            "summary": s,
            "warnings": outcome.warnings,
            "notices": outcome.notices,
        }));
    } else if !args.quiet {
        println!(
            "Files:       {} new, {} changed, {} unchanged",
            s.files_new, s.files_changed, s.files_unchanged
        );
        println!(
            "Directories: {} new, {} changed, {} unchanged",
            s.dirs_new, s.dirs_changed, s.dirs_unchanged
        );
        println!(
            "Read {} of {}; added {} ({} stored after compression and encryption) in {:.1}s",
            ui::size(s.bytes_read),
            ui::size(s.bytes_total),
            ui::size(s.bytes_added_raw),
            ui::size(s.bytes_added_stored),
            s.duration_ns as f64 / 1e9
        );
        println!("snapshot {} saved", outcome.id.short());
    }
    if outcome.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "holdfast: {} entries could not be read; the snapshot was saved without them",
            outcome.warnings.len()
        );
        Ok(exit::PARTIAL)
    }
}
