//! `holdfast backup`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use holdfast_engine::archiver::BackupProgress;
use holdfast_engine::backup::{self, BackupRequest, Source};
use holdfast_engine::command::CommandOutput;
use holdfast_engine::feed::{self, Entry, Feed};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::image::ImageBase;
use holdfast_engine::scanner;

use super::{now_ns, open, print_json};
use crate::args;
use crate::cli::{Args, Command};
use crate::{exit, ui};

/// The request the arguments describe.
fn request(args: &Args) -> Result<BackupRequest> {
    let Command::Backup {
        paths,
        stdin,
        stdin_from_command,
        stdin_filename,
        device,
        device_name,
        changed_extents: _,
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
    let mut sources: Vec<Source> = if *stdin || *stdin_from_command {
        vec![Source::feed(format!("/{stdin_filename}"))]
    } else {
        paths.iter().cloned().map(Source::new).collect()
    };
    if let Some(dev) = device {
        let abs = std::path::absolute(dev)?;
        sources.push(Source::image(dev, device_name.clone().unwrap_or(abs)));
    }
    let mut req = BackupRequest::new(sources);
    req.excludes = PathFilter::new(&patterns)?;
    req.one_file_system = *one_file_system;
    req.exclude_caches = *exclude_caches;
    req.parent = args::parent_choice(parent);
    req.force = *force;
    if let Some(h) = host {
        req.host = h.clone();
    }
    req.tags = args::tags(tags);
    Ok(req)
}

/// The stream to back up for --stdin or --stdin-from-command, if one of them is given.
/// The command is started here, after the repository is open (a wrong password must not
/// cost a dump).
fn stream(args: &Args, time_ns: i64) -> Result<Option<Box<dyn Feed>>> {
    let Command::Backup {
        paths,
        stdin,
        stdin_from_command,
        ..
    } = &args.command
    else {
        unreachable!("dispatched on Backup")
    };
    if *stdin {
        if std::io::stdin().is_terminal() {
            anyhow::bail!(
                "--stdin reads standard input, which is a terminal here: pipe the data in \
                 (e.g. `pg_dumpall | holdfast backup --stdin --stdin-filename pg.sql`) or \
                 use --stdin-from-command -- COMMAND"
            );
        }
        let entry = Entry::reader(vec![], time_ns, std::io::stdin());
        return Ok(Some(Box::new(feed::single_file(entry))));
    }
    if *stdin_from_command {
        let argv: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let output = CommandOutput::spawn(&argv)?;
        let entry = Entry::reader(vec![], time_ns, output);
        return Ok(Some(Box::new(feed::single_file(entry))));
    }
    Ok(None)
}

pub fn run(args: &Args) -> Result<i32> {
    let mut req = request(args)?;
    let repo = open(args)?;
    // Changed extents are relative to the image in the parent snapshot.
    if let Command::Backup {
        changed_extents: Some(extents),
        parent: Some(spec),
        ..
    } = &args.command
    {
        let (base, _) = repo.find_snapshot(spec, &Default::default())?;
        for s in req.sources.iter_mut().filter(|s| s.is_image()) {
            *s = s.clone().changed_since(ImageBase {
                snapshot: base,
                extents: extents.0.clone(),
            });
        }
    }
    // The snapshot's time is when the backup starts, after the password and the key.
    req.time_ns = now_ns();
    let progress = Arc::new(BackupProgress::default());
    let mode = ui::ProgressMode::for_args(args.quiet, args.json);
    // The total for the display's percentage and ETA, from a walk beside the backup.
    let total = Arc::new(AtomicU64::new(0));
    let stop_scan = Arc::new(AtomicBool::new(false));
    let feed = stream(args, req.time_ns)?;
    let scanner = if mode != ui::ProgressMode::Off && feed.is_none() {
        let (paths, excludes, ofs) = (req.read_paths()?, req.excludes.clone(), req.one_file_system);
        let (total, stop) = (total.clone(), stop_scan.clone());
        Some(std::thread::spawn(move || {
            scanner::scan_total(&paths, &excludes, ofs, &total, &stop)
        }))
    } else {
        None
    };
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
    let report = backup::run_feed(&repo, &req, feed, &progress);
    stop_scan.store(true, Ordering::Relaxed);
    if let Some(s) = scanner {
        let _ = s.join();
    }
    bar.finish();
    let report = report?;
    super::print_backup_notes(&report);
    let s = &report.summary;
    if matches!(&args.command, Command::Backup { stdin: true, .. }) && s.bytes_read == 0 {
        eprintln!(
            "holdfast: warning: standard input was empty: the snapshot holds an empty file \
             (was nothing piped in?)"
        );
    }
    if args.json {
        print_json(&report)?;
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
        println!("snapshot {} saved", report.snapshot_id.short());
    }
    if report.is_complete() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "holdfast: {} entries could not be read; the snapshot was saved without them",
            report.warnings.len()
        );
        Ok(exit::PARTIAL)
    }
}
