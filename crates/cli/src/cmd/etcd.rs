//! `holdfast etcd backup`: an etcd snapshot through the v3 maintenance API, recorded at
//! `/etcd/<name>/snapshot.db` with the tag `kind=etcd`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use holdfast_engine::archiver::BackupProgress;
use holdfast_engine::backup::{self, BackupRequest, Source};
use holdfast_engine::feed::{self, Entry};
use holdfast_etcd::{Client, ClientOptions, Credentials, TlsFiles};

use super::{now_ns, open, print_json};
use crate::args;
use crate::cli::Args;
use crate::{exit, ui};

/// `holdfast etcd ...`.
#[derive(Debug, ClapArgs)]
pub struct EtcdArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: EtcdAction,
}

/// `etcd` subcommands.
#[derive(Debug, Subcommand)]
pub enum EtcdAction {
    /// Take a snapshot of etcd through its v3 maintenance API (the JSON gateway on the
    /// client URL) and store it as /etcd/NAME/snapshot.db, tagged kind=etcd. The
    /// snapshot's sha256 trailer is checked while it streams: a stream that breaks off,
    /// carries an error or does not match writes no snapshot.
    Backup(EtcdBackup),
}

/// `holdfast etcd backup`.
#[derive(Debug, ClapArgs)]
pub struct EtcdBackup {
    /// etcd client URLs, tried in order until one gives a snapshot (comma-separated or
    /// repeated; without a scheme, https:// when TLS files are given, else http://).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        env = "ETCDCTL_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    /// CA certificates (PEM) the server's certificate must chain to.
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client certificate's key (PEM).
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// etcd user, as USER:PASSWORD or USER (the password then from
    /// HOLDFAST_ETCD_PASSWORD).
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// Record the snapshot at /etcd/NAME/snapshot.db (default: the cluster ID, 16 hex
    /// digits, which every member shares).
    #[arg(long)]
    pub name: Option<String>,
    /// Host name for the snapshot (default: HOLDFAST_HOST, else this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Tag the snapshot (repeatable), besides kind=etcd, etcd-cluster=ID and
    /// etcd-member=NAME.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

/// The client options the arguments describe.
fn client_options(b: &EtcdBackup) -> Result<ClientOptions> {
    let mut o = ClientOptions::new(b.endpoints.clone());
    o.tls = TlsFiles {
        cacert: b.cacert.clone(),
        cert: b.cert.clone(),
        key: b.key.clone(),
    };
    o.credentials = match &b.user {
        None => None,
        Some(u) => Some(match u.split_once(':') {
            Some((user, pw)) => Credentials {
                user: user.into(),
                password: pw.into(),
            },
            None => Credentials {
                user: u.clone(),
                password: std::env::var("HOLDFAST_ETCD_PASSWORD").context(
                    "--user gives no password: write --user USER:PASSWORD or set \
                     HOLDFAST_ETCD_PASSWORD",
                )?,
            },
        }),
    };
    Ok(o)
}

/// Runs `holdfast etcd ...`.
pub fn run(args: &Args, e: &EtcdArgs) -> Result<i32> {
    let EtcdAction::Backup(b) = &e.action;
    let client = Client::new(&client_options(b)?)?;
    let repo = open(args)?;
    let (member, stream) = client.snapshot()?;
    let name = match &b.name {
        Some(n) => holdfast_drill::safe_name(n),
        None => format!("{:016x}", member.cluster_id),
    };
    let path = format!("/etcd/{name}/snapshot.db");
    let mut req = BackupRequest::new(vec![Source::feed(&path)]);
    if let Some(h) = &b.host {
        req.host = h.clone();
    }
    req.tags = vec![
        "kind=etcd".to_string(),
        format!("etcd-cluster={:016x}", member.cluster_id),
        format!(
            "etcd-member={}",
            member
                .member_name
                .clone()
                .unwrap_or_else(|| format!("{:016x}", member.member_id))
        ),
    ];
    req.tags.extend(args::tags(&b.tags));
    req.time_ns = now_ns();
    let progress = Arc::new(BackupProgress::default());
    let total = Arc::new(AtomicU64::new(member.db_size));
    let (p2, t2) = (progress.clone(), total.clone());
    let bar = ui::Progress::start(
        ui::ProgressMode::for_args(args.quiet, args.json),
        "etcd snapshot",
        Arc::new(move || {
            (
                p2.entries.load(Ordering::Relaxed),
                p2.bytes.load(Ordering::Relaxed),
                t2.load(Ordering::Relaxed),
            )
        }),
    );
    let feed = feed::single_file(Entry::reader(vec![], req.time_ns, stream));
    let report = backup::run_feed(&repo, &req, Some(Box::new(feed)), &progress);
    bar.finish();
    let report = report?;
    let s = &report.summary;
    if args.json {
        print_json(&serde_json::json!({
            "snapshot_id": report.snapshot_id,
            "path": path,
            "member": member,
            "tags": req.tags,
            "bytes": s.bytes_read,
            "summary": s,
        }))?;
    } else if !args.quiet {
        println!(
            "etcd {} member {} (cluster {:016x}) at {}: snapshot of {} in {:.1}s, {} added",
            member.version,
            member.member_name.as_deref().unwrap_or("(unnamed)"),
            member.cluster_id,
            member.endpoint,
            ui::size(s.bytes_read),
            s.duration_ns as f64 / 1e9,
            ui::size(s.bytes_added_stored),
        );
        println!("snapshot {} saved with {path}", report.snapshot_id.short());
    }
    Ok(exit::OK)
}
