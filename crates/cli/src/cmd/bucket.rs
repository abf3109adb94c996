//! `holdfast bucket backup` and `holdfast bucket restore`: an S3 bucket as a snapshot
//! (through the engine's feeds, see the `holdfast-bucket` crate) and back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_bucket::{recorded_path, Bucket, RestoreProgress};
use holdfast_engine::archiver::BackupProgress;
use holdfast_engine::backup::{self, BackupRequest, Source};
use holdfast_repo::snapshot::Snapshot;

use super::{now_ns, open, print_json};
use crate::args;
use crate::args::SnapshotPath;
use crate::cli::{Args, BucketAction};
use crate::{exit, ui};

/// The tag every bucket snapshot has.
const KIND_TAG: &str = "kind=bucket";

/// Where bucket backups are recorded (see [`recorded_path`]).
const BUCKETS_DIR: &str = "/buckets/";

pub fn run(args: &Args, action: &BucketAction) -> Result<i32> {
    match action {
        BucketAction::Backup {
            location,
            tags,
            host,
            parent,
            force,
            region,
        } => {
            let mut req = BackupRequest::new(Vec::new());
            req.parent = args::parent_choice(parent);
            req.force = *force;
            if let Some(h) = host {
                req.host = h.clone();
            }
            req.tags = args::tags(tags);
            backup_bucket(args, location, region.clone(), req)
        }
        BucketAction::Restore {
            snapshot,
            target,
            region,
        } => restore_bucket(args, snapshot, target, region.clone()),
    }
}

/// Opens a bucket location with the bucket credentials (see [`Bucket::from_env`]).
fn open_bucket(location: &str, region: Option<String>) -> Result<Arc<Bucket>> {
    let b = Bucket::from_env(location, region)
        .with_context(|| format!("cannot use the bucket {location}"))?;
    Ok(Arc::new(b))
}

/// `n` with thousands separators: 10,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Backs the bucket at `location` up with `req` (its source, tags and time set here).
fn backup_bucket(
    args: &Args,
    location: &str,
    region: Option<String>,
    mut req: BackupRequest,
) -> Result<i32> {
    // The location is checked (and the credentials found) before the password is asked.
    let bucket = open_bucket(location, region)?;
    let (name, prefix) = (
        bucket.location().bucket.clone(),
        bucket.location().prefix.clone(),
    );
    let at = recorded_path(&name, &prefix);
    req.sources = vec![Source::feed(&at)];
    for t in [KIND_TAG.to_string(), format!("bucket={name}")] {
        if !req.tags.contains(&t) {
            req.tags.push(t);
        }
    }
    let repo = open(args)?;
    req.time_ns = now_ns();
    let progress = Arc::new(BackupProgress::default());
    let p2 = progress.clone();
    let bar = ui::Progress::start(
        ui::ProgressMode::for_args(args.quiet, args.json),
        "bucket backup",
        Arc::new(move || {
            (
                p2.entries.load(Ordering::Relaxed),
                p2.bytes.load(Ordering::Relaxed),
                0,
            )
        }),
    );
    let report = backup::run_feed(&repo, &req, Some(Box::new(bucket.feed())), &progress);
    bar.finish();
    let report = report.with_context(|| format!("backing up the bucket {location}"))?;
    super::print_backup_notes(&report);
    let s = &report.summary;
    let downloaded = bucket.objects_downloaded();
    let objects = s.files_new + s.files_changed + s.files_unchanged;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["objects_downloaded"] = downloaded.into();
        v["objects"] = objects.into();
        v["bucket"] = name.clone().into();
        print_json(&v)?;
    } else if !args.quiet {
        println!(
            "Objects:     downloaded {} of {} objects",
            thousands(downloaded),
            thousands(objects)
        );
        println!(
            "Files:       {} new, {} changed, {} unchanged",
            s.files_new, s.files_changed, s.files_unchanged
        );
        println!(
            "Read {} of {}; added {} ({} stored after compression and encryption) in {:.1}s",
            ui::size(s.bytes_read),
            ui::size(s.bytes_total),
            ui::size(s.bytes_added_raw),
            ui::size(s.bytes_added_stored),
            s.duration_ns as f64 / 1e9
        );
        match report.parent {
            Some(p) => println!(
                "snapshot {} of {at} saved (parent {})",
                report.snapshot_id.short(),
                p.short()
            ),
            None => println!("snapshot {} of {at} saved", report.snapshot_id.short()),
        }
    }
    if report.is_complete() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "holdfast: {} objects could not be read (see above); the snapshot was saved \
             without them",
            report.warnings.len()
        );
        Ok(exit::PARTIAL)
    }
}

/// What a snapshot records: its paths and tags.
struct Recorded<'a> {
    paths: &'a [Vec<u8>],
    tags: &'a [String],
}

impl<'a> From<&'a Snapshot> for Recorded<'a> {
    fn from(s: &'a Snapshot) -> Self {
        Recorded {
            paths: &s.paths,
            tags: &s.tags,
        }
    }
}

/// The path of `snap` to restore into a bucket: `given`, or the one bucket path the
/// snapshot records; refused unless it is at or below a bucket path of a bucket snapshot.
fn bucket_path(id: &str, snap: &Recorded, given: Option<&[u8]>) -> Result<String> {
    let recorded: Vec<String> = snap
        .paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let buckets: Vec<&String> = recorded
        .iter()
        .filter(|p| p.starts_with(BUCKETS_DIR))
        .collect();
    if !snap.tags.iter().any(|t| t == KIND_TAG) || buckets.is_empty() {
        bail!(
            "snapshot {id} is not a bucket backup (it records {}{}): `holdfast bucket \
             restore` restores what `holdfast bucket backup` saved; restore other snapshots \
             into a directory with `holdfast restore`",
            recorded.join(", "),
            if snap.tags.is_empty() {
                String::new()
            } else {
                format!(", tags {}", snap.tags.join(","))
            }
        );
    }
    let Some(given) = given else {
        return match buckets.as_slice() {
            [one] => Ok((*one).clone()),
            _ => bail!(
                "snapshot {id} records several buckets ({}): choose one with \
                 SNAPSHOT:/buckets/BUCKET",
                recorded.join(", ")
            ),
        };
    };
    let Ok(given) = std::str::from_utf8(given) else {
        bail!("the path {} is not UTF-8", String::from_utf8_lossy(given));
    };
    let given = given.trim_end_matches('/');
    let inside = buckets.iter().any(|b| {
        given == b.as_str()
            || given
                .strip_prefix(b.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    });
    if !inside {
        bail!(
            "{given} holds no bucket backup in snapshot {id}: give a path at or below {}",
            buckets
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    Ok(given.to_string())
}

/// Restores `spec` (a bucket snapshot, or a path in one) into the bucket at `target`.
fn restore_bucket(
    args: &Args,
    spec: &SnapshotPath,
    target: &str,
    region: Option<String>,
) -> Result<i32> {
    let bucket = open_bucket(target, region)?;
    let repo = open(args)?;
    let (id, snap) = repo.find_snapshot(&spec.snapshot, &Default::default())?;
    let path = bucket_path(&id.short(), &(&snap).into(), spec.path.as_deref())?;
    let index = repo.load_index()?;
    if holdfast_engine::restorer::lookup(&repo, &index, &snap.tree, path.as_bytes())?.is_none() {
        bail!("{path} is not in snapshot {}", id.short());
    }
    drop(index);
    let progress = Arc::new(RestoreProgress::default());
    let total = if snap.paths.iter().any(|p| p == path.as_bytes()) {
        snap.summary.bytes_total
    } else {
        0
    };
    let p2 = progress.clone();
    let bar = ui::Progress::start(
        ui::ProgressMode::for_args(args.quiet, args.json),
        "bucket restore",
        Arc::new(move || {
            (
                p2.objects.load(Ordering::Relaxed),
                p2.bytes.load(Ordering::Relaxed),
                total,
            )
        }),
    );
    let report = holdfast_bucket::restore(&repo, &snap, &path, &bucket, &progress);
    bar.finish();
    let report = report.with_context(|| {
        format!(
            "restoring {}:{path} into {target} failed after {} objects",
            id.short(),
            progress.objects.load(Ordering::Relaxed)
        )
    })?;
    for s in &report.skipped {
        eprintln!("holdfast: warning: {s} is not a file: left out");
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["snapshot_id"] = id.to_string().into();
        v["path"] = path.clone().into();
        v["target"] = target.into();
        print_json(&v)?;
    } else if !args.quiet {
        println!(
            "restored {}:{path} into {target}: {} objects, {} in {:.1}s",
            id.short(),
            thousands(report.objects),
            ui::size(report.bytes),
            report.duration_ns as f64 / 1e9
        );
    }
    if report.skipped.is_empty() {
        Ok(exit::OK)
    } else {
        Ok(exit::PARTIAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line of the README's agent example (`commands:`), with the `--host`
    /// the agent may add, is understood.
    #[test]
    fn readme_agent_example_parses() {
        use clap::Parser;
        let a = crate::cli::Args::try_parse_from([
            "holdfast",
            "bucket",
            "backup",
            "s3:http://rook-ceph-rgw-store.rook-ceph.svc/photos",
            "--host",
            "cluster-a",
        ])
        .unwrap();
        let crate::cli::Command::Bucket {
            action: BucketAction::Backup { location, host, .. },
        } = a.command
        else {
            panic!("not bucket backup: {a:?}")
        };
        assert_eq!(
            location,
            "s3:http://rook-ceph-rgw-store.rook-ceph.svc/photos"
        );
        assert_eq!(host.as_deref(), Some("cluster-a"));
        let readme = include_str!("../../../../README.md");
        assert!(
            readme.contains(
                r#"args: [bucket, backup, "s3:http://rook-ceph-rgw-store.rook-ceph.svc/photos"]"#
            ),
            "the README's example changed: update this test"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(70), "70");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn snap(paths: &[&str], tags: &[&str]) -> (Vec<Vec<u8>>, Vec<String>) {
        (
            paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
            tags.iter().map(|t| t.to_string()).collect(),
        )
    }

    fn bucket_path(
        id: &str,
        s: &(Vec<Vec<u8>>, Vec<String>),
        given: Option<&[u8]>,
    ) -> Result<String> {
        super::bucket_path(
            id,
            &Recorded {
                paths: &s.0,
                tags: &s.1,
            },
            given,
        )
    }

    /// The path restored: the snapshot's bucket path, or one at or below it; anything
    /// else is refused, naming what the snapshot holds.
    #[test]
    fn bucket_paths() {
        let s = snap(&["/buckets/photos"], &["kind=bucket", "bucket=photos"]);
        assert_eq!(bucket_path("x", &s, None).unwrap(), "/buckets/photos");
        assert_eq!(
            bucket_path("x", &s, Some(b"/buckets/photos/2024/")).unwrap(),
            "/buckets/photos/2024"
        );
        for bad in [&b"/buckets/photosx"[..], b"/buckets", b"/etc"] {
            let e = bucket_path("x", &s, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("holds no bucket backup"), "{e}");
            assert!(e.contains("/buckets/photos"), "{e}");
        }
        let files = snap(&["/home/me"], &[]);
        let e = bucket_path("x", &files, None).unwrap_err().to_string();
        assert!(
            e.contains("not a bucket backup") && e.contains("/home/me"),
            "{e}"
        );
        // A directory that happens to be called /buckets, backed up as files.
        let untagged = snap(&["/buckets/photos"], &["daily"]);
        let e = bucket_path("x", &untagged, None).unwrap_err().to_string();
        assert!(e.contains("not a bucket backup"), "{e}");
    }
}
