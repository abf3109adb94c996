//! `holdfast migrate`: turn on a repository format feature, or list them.

use anyhow::{bail, Context, Result};
use holdfast_engine::migrate::{self, FeatureList, FeatureState, MigrateOptions};

use super::{host_name, open, print_json};
use crate::cli::{Args, MigrateArgs};
use crate::exit;

/// How often a waiting `migrate` looks at the sessions again.
const POLL: std::time::Duration = std::time::Duration::from_secs(5);

pub fn run(args: &Args, m: &MigrateArgs) -> Result<i32> {
    let repo = open(args)?;
    if m.list {
        let l = migrate::list(&repo)?;
        if args.json {
            print_json(&l)?;
        } else if !args.quiet {
            print_list(&l);
        }
        return Ok(exit::OK);
    }
    let Some(feature) = m.feature.as_deref() else {
        bail!("name a feature to turn on, or use --list");
    };
    let Some(timeout_ns) = m.timeout.exact_nanos() else {
        bail!("--timeout needs an exact span: give it in s, min, h, d or w");
    };
    let opts = MigrateOptions {
        host: host_name(),
        wait: (!m.no_wait).then(|| std::time::Duration::from_nanos(timeout_ns.max(0) as u64)),
        poll: POLL,
    };
    let r = migrate::migrate(&repo, feature, &opts)
        .with_context(|| format!("cannot turn on feature `{feature}`"))?;
    if args.json {
        print_json(&r)?;
    } else if !args.quiet {
        println!(
            "feature `{}` is on: config generation {} ({})",
            r.feature,
            r.generation,
            r.config.short()
        );
        if r.in_force {
            println!("in force: no backup that started before the change is still running");
        } else {
            println!(
                "pending: {} sessions that started before the change are still running and may write the old way until they end (`holdfast migrate --list` shows when they have)",
                r.pending_sessions
            );
        }
    }
    if !r.in_force && !m.no_wait {
        eprintln!(
            "error: feature `{}` is on but still pending after {}: {} sessions from before the change are still running",
            r.feature, m.timeout, r.pending_sessions
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

fn print_list(l: &FeatureList) {
    println!(
        "config generation {} (version {}, {} config files)",
        l.generation, l.config_version, l.config_files
    );
    for f in &l.features {
        let state = match f.state {
            FeatureState::On => "on".to_string(),
            FeatureState::Pending => {
                format!("on (pending: {} writers from before)", f.pending_sessions)
            }
            FeatureState::Off if f.known => "off (available)".to_string(),
            FeatureState::Off => "off".to_string(),
        };
        println!(
            "{:<14} {:<36} {:<22} since holdfast {}",
            f.name,
            state,
            f.class.name(),
            f.since
        );
        match f.what {
            Some(w) => println!("               {w}"),
            None => println!(
                "               (not known to this holdfast: upgrade to at least {})",
                f.since
            ),
        }
    }
}
