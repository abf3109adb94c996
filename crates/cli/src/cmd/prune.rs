//! `holdfast prune`.

use anyhow::{bail, Result};
use holdfast_engine::prune::{prune, PruneOptions, PruneReport, INDEX_FILE_ENTRIES};

use super::{host_name, open, print_json};
use crate::cli::{Args, PruneArgs};
use crate::{exit, ui};

/// Parses durations like `2h`, `90m`, `1h30m`, `45s`, `3d`, `0`.
pub fn parse_duration_ns(s: &str) -> Result<i64> {
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
        num.clear();
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => bail!("invalid duration {s:?}: use units s, m, h, d, w (e.g. 2h or 1h30m)"),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() {
        if num == "0" {
            return Ok(0);
        }
        bail!("invalid duration {s:?}: give a unit (s, m, h, d, w)");
    }
    Ok(total.saturating_mul(1_000_000_000))
}

pub fn run(args: &Args, p: &PruneArgs) -> Result<i32> {
    let repo = open(args)?;
    run_on(args, &repo, p)
}

/// Prunes an open repository (shared with `forget --prune`).
pub fn run_on(
    args: &Args,
    repo: &holdfast_repo::repository::Repository,
    p: &PruneArgs,
) -> Result<i32> {
    if !(0.0..=100.0).contains(&p.max_unused) {
        bail!("--max-unused must be a percentage between 0 and 100");
    }
    let opts = PruneOptions {
        dry_run: p.dry_run,
        margin_ns: parse_duration_ns(&p.safety_margin)?,
        max_unused: p.max_unused / 100.0,
        host: host_name(),
        index_file_entries: INDEX_FILE_ENTRIES,
    };
    let r = prune(repo, &opts)?;
    if args.json {
        print_json(&serde_json::json!({"dry_run": p.dry_run, "report": r}));
    } else if !args.quiet {
        print_report(&r, p.dry_run);
    }
    Ok(exit::OK)
}

fn print_report(r: &PruneReport, dry: bool) {
    let would = if dry { "would be " } else { "" };
    println!("live blobs: {}", r.live_blobs);
    if r.markers_due > 0 {
        println!(
            "sweep: {} packs {would}deleted ({}), {} rescued because a snapshot needs them now",
            r.packs_deleted,
            ui::size(r.bytes_deleted),
            r.packs_rescued
        );
    }
    for why in &r.sweep_postponed {
        println!("sweep postponed: {why}");
    }
    println!(
        "mark: {} packs {would}marked for deletion ({}; {} not indexed, {} repacked: {} blobs copied)",
        r.packs_marked,
        ui::size(r.bytes_marked),
        r.orphans_marked,
        r.packs_repacked,
        r.blobs_repacked
    );
    if r.index_files_compacted > 0 {
        println!(
            "index: {} small index files {would}merged",
            r.index_files_compacted
        );
    }
    if r.temp_files_removed > 0 {
        println!(
            "tmp: {} files left by interrupted backups removed",
            r.temp_files_removed
        );
    }
    if r.packs_marked > 0 && !dry {
        println!("marked packs are deleted by a prune run after the safety margin has passed");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ns;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("2h").unwrap(), 7200 * 1_000_000_000);
        assert_eq!(parse_duration_ns("1h30m").unwrap(), 5400 * 1_000_000_000);
        assert_eq!(parse_duration_ns("0").unwrap(), 0);
        assert_eq!(parse_duration_ns("0s").unwrap(), 0);
        assert!(parse_duration_ns("5").is_err());
        assert!(parse_duration_ns("2x").is_err());
    }
}
