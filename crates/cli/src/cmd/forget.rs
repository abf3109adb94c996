//! `holdfast forget`: remove snapshots by a retention policy, or by ID.
//!
//! Removing a snapshot deletes its file; the data only it referenced stays until a
//! `prune`. An empty policy never removes anything: without `--keep-*` options and
//! without snapshot IDs, `forget` refuses to run.

use std::collections::HashSet;

use anyhow::{bail, Result};
use holdfast_engine::retention::{self, GroupKey, Policy};
use holdfast_repo::backend::FileKind;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;

use super::snapshots::snapshot_json;
use super::{filter, now_ns, open, print_json};
use crate::args::Duration;
use crate::cli::{Args, ForgetArgs, PruneArgs};
use crate::{exit, ui};

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

/// One group's outcome: kept and removed snapshots, each with its reasons.
struct GroupOutcome {
    key: Option<GroupKey>,
    keep: Vec<(Id, Snapshot, Vec<String>)>,
    remove: Vec<(Id, Snapshot, Vec<String>)>,
}

fn entry_json(id: &Id, s: &Snapshot, reasons: &[String]) -> serde_json::Value {
    let mut v = snapshot_json(id, s);
    if let Some(o) = v.as_object_mut() {
        o.insert("reasons".into(), serde_json::json!(reasons));
    }
    v
}

fn group_json(g: &GroupOutcome) -> serde_json::Value {
    let key = g.key.as_ref();
    serde_json::json!({
        "host": key.and_then(|k| k.host.clone()),
        "paths": key.and_then(|k| k.paths.as_ref()).map(|p| p
            .iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect::<Vec<_>>()),
        "tags": key.and_then(|k| k.tags.clone()),
        "keep": g.keep.iter().map(|(id, s, r)| entry_json(id, s, r)).collect::<Vec<_>>(),
        "remove": g.remove.iter().map(|(id, s, r)| entry_json(id, s, r)).collect::<Vec<_>>(),
    })
}

fn print_table(rows: &[(Id, Snapshot, Vec<String>)], with_reasons: bool) {
    println!(
        "{:<10} {:<26} {:<16} {:<16} {:<28} paths",
        "ID",
        "time",
        "host",
        "tags",
        if with_reasons { "reasons" } else { "" }
    );
    for (id, s, reasons) in rows {
        let paths: Vec<String> = s
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        println!(
            "{:<10} {:<26} {:<16} {:<16} {:<28} {}",
            id.short(),
            ui::time(s.time_ns, s.utc_offset_s),
            s.host,
            s.tags.join(","),
            if with_reasons {
                reasons.join(", ")
            } else {
                String::new()
            },
            paths.join(" ")
        );
    }
}

pub fn run(args: &Args, f: &ForgetArgs) -> Result<i32> {
    let policy = policy(f);
    let group_by = f.group_by;
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
    let sfilter = filter(&f.filter)?;

    let mut groups: Vec<GroupOutcome> = Vec::new();
    if !f.snapshots.is_empty() {
        let mut seen = HashSet::new();
        let mut remove = Vec::new();
        for spec in &f.snapshots {
            let (id, s) = repo.find_snapshot(spec, &sfilter)?;
            if seen.insert(id) {
                remove.push((id, s, vec!["named on the command line".to_string()]));
            }
        }
        groups.push(GroupOutcome {
            key: None,
            keep: Vec::new(),
            remove,
        });
    } else {
        let (all, bad) = repo.snapshots()?;
        for e in &bad {
            eprintln!("holdfast: warning: {e} (left alone)");
        }
        let list: Vec<(Id, Snapshot)> = all
            .into_iter()
            .filter(|(_, s)| sfilter.matches(s))
            .collect();
        let now = now_ns();
        for (key, snaps) in retention::group(&list, group_by) {
            let by_id: std::collections::HashMap<Id, &Snapshot> =
                snaps.iter().map(|(id, s)| (*id, s)).collect();
            let mut g = GroupOutcome {
                key: Some(key),
                keep: Vec::new(),
                remove: Vec::new(),
            };
            for d in retention::apply_at(&policy, &snaps, Some(now)) {
                let s = by_id[&d.id].clone();
                if d.keep {
                    g.keep.push((d.id, s, d.reasons));
                } else {
                    g.remove.push((d.id, s, d.reasons));
                }
            }
            groups.push(g);
        }
    }

    let to_remove: Vec<Id> = groups
        .iter()
        .flat_map(|g| g.remove.iter().map(|(id, _, _)| *id))
        .collect();
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    if !f.dry_run {
        for id in &to_remove {
            match repo.backend().remove(FileKind::Snapshot, id) {
                Ok(()) => removed.push(*id),
                Err(e) => failures.push(format!("cannot remove snapshot {id}: {e}")),
            }
        }
    }

    if args.json {
        print_json(&serde_json::json!({
            "dry_run": f.dry_run,
            "policy": if f.snapshots.is_empty() { Some(policy.to_string()) } else { None },
            "groups": groups.iter().map(group_json).collect::<Vec<_>>(),
            "removed": removed,
            "would_remove": if f.dry_run { to_remove.clone() } else { Vec::new() },
            "errors": failures,
        }));
    } else if !args.quiet {
        if f.snapshots.is_empty() {
            println!("applying policy: {policy}");
        }
        for g in &groups {
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
                to_remove.len()
            );
        } else {
            println!("removed {} snapshots", removed.len());
        }
    }
    for e in &failures {
        eprintln!("holdfast: error: {e}");
    }
    if !failures.is_empty() {
        return Ok(exit::FAILURE);
    }
    if f.prune && !to_remove.is_empty() {
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
