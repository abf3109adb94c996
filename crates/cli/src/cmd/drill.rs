//! `holdfast drill`: restore drills (see the `holdfast-drill` crate). Exit codes: 0 the
//! drill passed, 1 it failed (recorded as such), others as for any command when the drill
//! could not run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args as ClapArgs, Subcommand};
use holdfast_drill::postgres::{self, Check, ExistingServer, Expect, PgTarget, ScratchServer};
use holdfast_drill::record::{self, DrillRecord, DrillResult};
use holdfast_drill::volume;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;

use super::{filter, open, print_json};
use crate::cli::{Args, Filter};
use crate::{exit, ui};

/// `holdfast drill ...`.
#[derive(Debug, ClapArgs)]
pub struct DrillArgs {
    /// Which drill.
    #[command(subcommand)]
    pub action: DrillAction,
}

/// `drill` subcommands.
#[derive(Debug, Subcommand)]
pub enum DrillAction {
    /// Restore a snapshot into a scratch directory (removed afterwards), re-hash every
    /// restored file against the snapshot's blob IDs, compare files and bytes with its
    /// summary, and report the time to restore. Exits 0 if it passed, 1 if not; the
    /// outcome is recorded in the repository either way.
    Volume(VolumeArgs),
    /// Restore a SQL dump from a snapshot into a scratch PostgreSQL the drill starts (or a
    /// scratch database of --target-url), then run the checks. Exits 0 if it passed, 1 if
    /// not; the outcome is recorded in the repository either way.
    Postgres(PostgresArgs),
    /// List recorded drill outcomes, oldest first.
    History {
        /// Only this drill.
        #[arg(long)]
        name: Option<String>,
    },
}

/// What both drills share: which snapshot, the name, where to work.
#[derive(Debug, ClapArgs)]
pub struct Common {
    /// Snapshot ID, unique prefix or "latest" (the newest passing the filters that is not
    /// itself a drill record).
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    #[command(flatten)]
    pub filter: Filter,
    /// The drill's name (the drill= tag; default from the kind and the path).
    #[arg(long)]
    pub name: Option<String>,
    /// Make scratch directories in this directory (default: the system's temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}

/// `holdfast drill volume`.
#[derive(Debug, ClapArgs)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep the restored scratch directory (its path is printed and recorded).
    #[arg(long)]
    pub keep: bool,
}

/// `holdfast drill postgres`.
#[derive(Debug, ClapArgs)]
pub struct PostgresArgs {
    #[command(flatten)]
    pub common: Common,
    /// The dump's absolute path inside the snapshot (plain SQL: pg_dumpall or pg_dump).
    #[arg(long, value_name = "PATH")]
    pub file: String,
    /// A query to run after the restore (repeatable); each --expect or --expect-rows
    /// after it applies to it. Without one, the query must only run without an error.
    #[arg(long = "check", value_name = "SQL")]
    pub checks: Vec<String>,
    /// What the preceding --check's first value must be: '>= 100', '= ok', '!= 0'.
    #[arg(long = "expect", value_name = "OP VALUE", allow_hyphen_values = true)]
    pub expects: Vec<String>,
    /// The preceding --check must return at least one row.
    #[arg(long = "expect-rows", action = clap::ArgAction::Count)]
    pub expect_rows: u8,
    /// The database the checks run in, on the scratch server (default postgres).
    #[arg(long, conflicts_with = "target_url")]
    pub database: Option<String>,
    /// Restore into a scratch database of this running server instead of a scratch
    /// server (for a pg_dump of one database, not a pg_dumpall).
    #[arg(long, value_name = "postgres://...")]
    pub target_url: Option<String>,
    /// Where PostgreSQL's programs are (initdb, pg_ctl, psql; default: the PATH, then the
    /// newest /usr/lib/postgresql/*/bin).
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// When running as root, run the scratch server as this user (default postgres).
    #[arg(long, value_name = "USER")]
    pub pg_user: Option<String>,
}

/// The checks with their expectations, in command-line order: clap gives the values of
/// each option, not how they interleave, so the order is read from the arguments
/// themselves (after clap accepted them) and cross-checked with clap's values.
fn checks_in_order(p: &PostgresArgs) -> Result<Vec<Check>> {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut checks: Vec<Check> = Vec::new();
    let mut expects_seen = 0usize;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        let value = |name: &str, i: &mut usize| -> Option<String> {
            if a == name {
                *i += 1;
                argv.get(*i).cloned()
            } else {
                a.strip_prefix(&format!("{name}=")).map(String::from)
            }
        };
        if a == "--" {
            break;
        }
        if let Some(sql) = value("--check", &mut i) {
            checks.push(Check {
                sql,
                expect: Expect::Succeeds,
            });
        } else if let Some(e) = value("--expect", &mut i) {
            expects_seen += 1;
            let expect: Expect = e.parse().map_err(anyhow::Error::msg)?;
            set_expect(&mut checks, expect, &e)?;
        } else if a == "--expect-rows" {
            expects_seen += 1;
            set_expect(&mut checks, Expect::Rows, "--expect-rows")?;
        }
        i += 1;
    }
    let sqls: Vec<&String> = checks.iter().map(|c| &c.sql).collect();
    let clap_sqls: Vec<&String> = p.checks.iter().collect();
    if sqls != clap_sqls || expects_seen != p.expects.len() + p.expect_rows as usize {
        bail!("cannot tell which --expect belongs to which --check: write each --expect right after its --check");
    }
    Ok(checks)
}

/// Gives the last check its expectation.
fn set_expect(checks: &mut [Check], expect: Expect, text: &str) -> Result<()> {
    match checks.last_mut() {
        None => bail!("the expectation {text:?} comes before any --check"),
        Some(c) if c.expect != Expect::Succeeds => {
            bail!("--check {:?} has two expectations", c.sql)
        }
        Some(c) => {
            c.expect = expect;
            Ok(())
        }
    }
}

/// The snapshot to drill: `latest` is the newest passing the filter that is not a drill
/// record (a record is on the drilled snapshot's host, so a host filter alone would find
/// it).
fn drilled(repo: &Repository, spec: &str, f: &SnapshotFilter) -> Result<(Id, Snapshot)> {
    if spec != "latest" {
        return Ok(repo.find_snapshot(spec, f)?);
    }
    let (all, _) = repo.snapshots()?;
    all.into_iter()
        .rev()
        .find(|(_, s)| f.matches(s) && !s.tags.iter().any(|t| t == record::KIND_TAG))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no snapshot to drill: none passes --host/--tag/--path (drill records left out)"
            )
        })
}

/// Runs `holdfast drill ...`.
pub fn run(args: &Args, d: &DrillArgs) -> Result<i32> {
    match &d.action {
        DrillAction::Volume(v) => {
            let c = &v.common;
            let f = filter(&c.filter)?;
            let repo = open(args)?;
            let (id, snap) = drilled(&repo, &c.snapshot, &f)?;
            let name = c.name.clone().unwrap_or_else(|| {
                let what = c
                    .filter
                    .paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| snap.host.clone());
                format!("volume-{what}")
            });
            let opts = volume::VolumeOptions {
                name: holdfast_drill::safe_name(&name),
                scratch: c.scratch.clone(),
                keep: v.keep,
            };
            let rec = volume::run(&repo, id, &snap, &opts)?;
            finish(args, &repo, rec)
        }
        DrillAction::Postgres(p) => {
            let c = &p.common;
            let checks = checks_in_order(p)?;
            let f = filter(&c.filter)?;
            let repo = open(args)?;
            let (id, snap) = drilled(&repo, &c.snapshot, &f)?;
            let name = c
                .name
                .clone()
                .unwrap_or_else(|| format!("postgres-{}", p.file));
            let opts = postgres::PostgresOptions {
                name: holdfast_drill::safe_name(&name),
                file: p.file.clone(),
                checks,
                scratch: c.scratch.clone(),
            };
            // The target lives until the record is written, then is stopped and removed
            // (also on every error path, by its Drop).
            let mut target: Box<dyn PgTarget> = match &p.target_url {
                Some(url) => Box::new(ExistingServer::create(url, p.pg_bin.as_deref())?),
                None => Box::new(ScratchServer::start(&postgres::ScratchOptions {
                    bin_dir: p.pg_bin.clone(),
                    run_as: p.pg_user.clone(),
                    scratch: c.scratch.clone(),
                    database: p.database.clone(),
                })?),
            };
            let rec = postgres::run(&repo, id, &snap, target.as_mut(), &opts);
            drop(target);
            finish(args, &repo, rec?)
        }
        DrillAction::History { name } => {
            let repo = open(args)?;
            let records = record::history(&repo, name.as_deref())?;
            if args.json {
                print_json(&records)?;
            } else if !args.quiet {
                for r in &records {
                    let rec = &r.record;
                    println!(
                        "{}  {}  {:<4}  {}  RTO {:.1}s ({} files, {})  snapshot {}  record {}{}",
                        rec.started,
                        rec.name,
                        rec.result.as_str(),
                        rec.kind,
                        rec.restore_s,
                        rec.files_restored,
                        ui::size(rec.bytes_restored),
                        &rec.snapshot.id[..8.min(rec.snapshot.id.len())],
                        &r.record_snapshot[..8],
                        rec.failure
                            .as_deref()
                            .map(|f| format!("\n    {f}"))
                            .unwrap_or_default(),
                    );
                }
                if records.is_empty() {
                    println!("no drill records");
                }
            }
            Ok(exit::OK)
        }
    }
}

/// Stores the record, reports it, and gives the exit code of its verdict.
fn finish(args: &Args, repo: &Repository, rec: DrillRecord) -> Result<i32> {
    let rid = record::store(repo, &rec)?;
    if args.json {
        let mut v = serde_json::to_value(&rec)?;
        v["record_snapshot"] = serde_json::Value::String(rid.to_hex());
        print_json(&v)?;
    } else if !args.quiet {
        println!(
            "drill {} ({}) of snapshot {} (host {}, {}): {}",
            rec.name,
            rec.kind,
            &rec.snapshot.id[..8],
            rec.snapshot.host,
            rec.snapshot.time,
            rec.result.as_str().to_uppercase()
        );
        for c in &rec.checks {
            println!(
                "  {} {}: {}",
                if c.passed { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!(
            "restored {} files, {} in {:.2}s ({}/s) into {}; recorded as snapshot {}",
            rec.files_restored,
            ui::size(rec.bytes_restored),
            rec.restore_s,
            ui::size(rec.bytes_per_s as u64),
            rec.target,
            rid.short()
        );
    }
    match rec.result {
        DrillResult::Pass => Ok(exit::OK),
        DrillResult::Fail => {
            let msg = format!(
                "drill {} failed: {}",
                rec.name,
                rec.failure.as_deref().unwrap_or("(no reason recorded)")
            );
            // As errors are reported: a JSON document on stderr with --json.
            if args.json {
                eprintln!(
                    "{}",
                    serde_json::json!({"error": msg, "exit_code": exit::FAILURE})
                );
            } else {
                eprintln!("holdfast: {msg}");
            }
            Ok(exit::FAILURE)
        }
    }
}
