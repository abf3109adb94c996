//! `holdfast forget`: remove snapshots by a retention policy, or by ID.
//!
//! Removing a snapshot deletes its file; the data only it referenced stays until a
//! `prune`. An empty policy never removes anything: without `--keep-*` options and
//! without snapshot IDs, `forget` refuses to run.

use anyhow::{bail, Result};
use holdfast_engine::forget::{self, ForgetEntry, ForgetRequest, ForgetSelection};
use holdfast_engine::retention::Policy;

use super::{filter, now_ns, open, print_json};
use crate::args::Duration;
use crate::cli::{Args, ForgetArgs, PruneArgs};
use crate::exit;

/// The policy given by the `--keep-*` options (each checked by its value parser).
fn policy(f: &ForgetArgs) -> Policy {
    let count = |v: Option<u32>| v.unwrap_or(0);
    // `duration::retention` accepted only durations that have a calendar form.
    let dur = |v: &Option<Duration>| v.and_then(Duration::to_calendar).unwrap_or_default();
    Policy {
        last: count(f.keep_last),
        hourly: count(f.keep_hourly),
        daily: count(f.keep_daily),
        weekly: count(f.keep_weekly),
        monthly: count(f.keep_monthly),
        yearly: count(f.keep_yearly),
        within: dur(&f.keep_within),
        within_hourly: dur(&f.keep_within_hourly),
        within_daily: dur(&f.keep_within_daily),
        within_weekly: dur(&f.keep_within_weekly),
        within_monthly: dur(&f.keep_within_monthly),
        within_yearly: dur(&f.keep_within_yearly),
        tags: f.keep_tags.iter().map(|t| t.0.clone()).collect(),
    }
}

fn print_table(rows: &[ForgetEntry], with_reasons: bool) {
    println!(
        "{:<10} {:<26} {:<16} {:<16} {:<28} paths",
        "ID",
        "time",
        "host",
        "tags",
        if with_reasons { "reasons" } else { "" }
    );
    for ForgetEntry {
        snapshot: s,
        reasons,
    } in rows
    {
        println!(
            "{:<10} {:<26} {:<16} {:<16} {:<28} {}",
            s.short_id,
            s.time,
            s.host,
            s.tags.join(","),
            if with_reasons {
                reasons.join(", ")
            } else {
                String::new()
            },
            s.paths.join(" ")
        );
    }
}

pub fn run(args: &Args, f: &ForgetArgs) -> Result<i32> {
    let policy = policy(f);
    if !f.snapshots.is_empty() && !policy.is_empty() {
        bail!("give either snapshot IDs or a policy (--keep-*), not both");
    }
    if f.snapshots.is_empty() && policy.is_empty() {
        bail!(
            "no policy given: use --keep-last, --keep-daily, --keep-within, --keep-tag, … \
             (see `holdfast forget --help`), or name the snapshots to forget; nothing was removed"
        );
    }
    let repo = open(args)?;
    let req = ForgetRequest {
        selection: if f.snapshots.is_empty() {
            ForgetSelection::Policy(policy, f.group_by)
        } else {
            ForgetSelection::Ids(f.snapshots.clone())
        },
        filter: filter(&f.filter)?,
        dry_run: f.dry_run,
    };
    let plan = forget::plan(&repo, &req, now_ns())?;
    for e in &plan.unreadable {
        eprintln!("holdfast: warning: {e} (left alone)");
    }
    forget::check_allowed(&repo, &plan)?;
    let report = forget::apply(&repo, &plan);
    let failures = &report.errors;

    if args.json {
        print_json(&report)?;
    } else if !args.quiet {
        if let Some(policy) = &report.policy {
            println!("applying policy: {policy}");
        }
        for g in &report.groups {
            if let Some(k) = &g.key {
                println!("\nsnapshots of {k}:");
            }
            if !g.keep.is_empty() {
                println!("keep {} snapshots:", g.keep.len());
                print_table(&g.keep, true);
            }
            if !g.remove.is_empty() {
                println!(
                    "{} {} snapshots:",
                    if f.dry_run { "would remove" } else { "remove" },
                    g.remove.len()
                );
                print_table(&g.remove, false);
            }
        }
        println!();
        if f.dry_run {
            println!(
                "dry run: {} snapshots would be removed, nothing was changed",
                report.would_remove.len()
            );
        } else {
            println!("removed {} snapshots", report.removed.len());
        }
    }
    for e in failures {
        eprintln!("holdfast: error: {e}");
    }
    if !failures.is_empty() {
        return Ok(exit::FAILURE);
    }
    if f.prune && !plan.to_remove().is_empty() {
        if !args.json && !args.quiet {
            println!("\nrunning prune");
        }
        let p = PruneArgs {
            dry_run: f.dry_run,
            safety_margin: f.safety_margin,
            max_unused: f.max_unused,
        };
        return super::prune::run_on(args, &repo, &p);
    }
    Ok(exit::OK)
}
