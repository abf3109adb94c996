//! Long-running tools, ignored by default (minutes each):
//!
//! * `survey`: for every safeguard, explore a set of scenarios with it off and print
//!   whether (and how shortly) the model shows it necessary. Environment: `ROBUST=1`
//!   (base [`Safeguards::ROBUST`] instead of [`Safeguards::ALL`]), `GAP=1` (stalls between
//!   prune lease checks and actions), `ONLY=a,b` (safeguards; also `ALL`, `BRIEF`),
//!   `SCEN=x,y` (scenario names), `DEPTH` (default 45), `CAP` (states, default 3000000).
//! * `hunt`: random configurations and burst schedules ([`simulate`]) with every
//!   safeguard on. Environment: `N` (schedules, default 1000000), `SEED`, `ROBUST`, `GAP`,
//!   `SG` (a safeguard to switch off, or `BRIEF`).
//!
//! `cargo test -p holdfast-gc-model --test survey -- --ignored --nocapture survey`

mod common;

use std::time::Instant;

use common::*;
use holdfast_gc_model::*;

fn env_flag(k: &str) -> bool {
    std::env::var(k).is_ok()
}

fn env_num<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn base() -> Safeguards {
    if env_flag("ROBUST") {
        Safeguards::ROBUST
    } else {
        Safeguards::ALL
    }
}

fn scenarios() -> Vec<(&'static str, Config)> {
    vec![
        ("small2", small2()),
        (
            "marked2",
            Config {
                repo: Repo::marked(),
                ..small2()
            },
        ),
        (
            "writer+15",
            scenario(
                vec![writer(B1 | B2, 15), prune_runs(2, 0)],
                Repo::standard(),
                &[10, 75],
                1,
                0,
                0,
            ),
        ),
        (
            "prune+25",
            scenario(
                vec![writer(B1 | B2, 0).no_heartbeat(), prune_runs(2, 25)],
                Repo::standard(),
                &[47],
                1,
                0,
                0,
            ),
        ),
        ("rescue3", rescue3()),
        ("two_prunes", two_prunes()),
        ("writer_two_prunes_rescue", writer_two_prunes_rescue()),
        ("crash_and_healthy", crash_and_healthy()),
        (
            "late_index",
            scenario(
                vec![
                    ProcSpec::writer(B2, 0).no_heartbeat().no_crash(),
                    ProcSpec::writer(B2, 0).no_heartbeat().no_crash(),
                    prune_runs(2, 0),
                ],
                Repo::standard(),
                &[75],
                1,
                0,
                0,
            ),
        ),
    ]
}

#[test]
#[ignore]
fn survey() {
    let only = std::env::var("ONLY").ok();
    let scen = std::env::var("SCEN").ok();
    let cap: usize = env_num("CAP", 3_000_000);
    let depth: usize = env_num("DEPTH", 45);
    let names = Safeguards::NAMES.iter().copied().chain(["BRIEF", "ALL"]);
    let mut table = Vec::new();
    for name in names {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == name))
        {
            continue;
        }
        let sg = match name {
            "BRIEF" => Safeguards::BRIEF,
            "ALL" => base(),
            n => base().without(n),
        };
        let mut best: Option<(usize, &str, String)> = None;
        for (sn, mut cfg) in scenarios() {
            if scen
                .as_deref()
                .is_some_and(|o| !o.split(',').any(|x| x == sn))
            {
                continue;
            }
            cfg.sg = sg;
            cfg.env.prune_check_gap = env_flag("GAP");
            let t = Instant::now();
            let r = explore(&cfg, depth, cap);
            println!("  {name:35} {sn:26} {r} ({:?})", t.elapsed());
            if let Some(f) = r.violation {
                if best.as_ref().is_none_or(|b| f.trace.len() < b.0) {
                    best = Some((f.trace.len(), sn, f.pretty));
                }
            }
        }
        match best {
            Some((n, sn, p)) => {
                println!("{name}: NECESSARY, shortest {n} steps ({sn})\n{p}");
                table.push(format!("{name:35} necessary: {n} steps ({sn})"));
            }
            None => {
                println!("{name}: no violation found");
                table.push(format!("{name:35} not shown"));
            }
        }
    }
    println!("\nSummary:\n{}", table.join("\n"));
}

#[test]
#[ignore]
fn hunt() {
    let n: u64 = env_num("N", 1_000_000);
    let seed: u64 = env_num("SEED", 1);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let sel = |r: u64, v: &[i32]| v[(r % v.len() as u64) as usize];
    let sg = match std::env::var("SG").ok().as_deref() {
        None => base(),
        Some("BRIEF") => Safeguards::BRIEF,
        Some(name) => base().without(name),
    };
    let (mut residual, mut steps) = (0u64, 0usize);
    let mut best: Option<(usize, String)> = None;
    let t = Instant::now();
    for _ in 0..n {
        let mut procs = Vec::new();
        for _ in 0..2 + next() % 2 {
            let mut w = ProcSpec::writer(
                (1 + next() % 7) as u8,
                sel(next(), &[-15, -5, 0, 0, 0, 5, 15]),
            );
            w.may_crash = next() % 2 == 0;
            w.heartbeats = next() % 5 != 0;
            procs.push(w);
        }
        for _ in 0..1 + next() % 3 {
            let mut p =
                ProcSpec::prune(sel(next(), &[-15, 0, 0, 15, 25])).runs((1 + next() % 3) as u8);
            p.may_crash = next() % 2 == 0;
            p.heartbeats = next() % 2 == 0;
            p.margin = sel(next(), &[0, 0, 0, 30]);
            procs.push(p);
        }
        procs.truncate(6);
        let repo = match next() % 4 {
            0 => Repo::standard(),
            1 => Repo::marked(),
            2 => rescue_repo(),
            _ => Repo {
                packs: vec![(B0, true), (B1, true), (B1 | B2, true)],
                index: vec![0b011, 0b100],
                snaps: vec![B0 | B1],
                uncommitted: vec![],
                markers: vec![(-30, 0b010)],
            },
        };
        let mut cfg = Config::new(sg, procs, repo);
        let durations = [1, 5, 10, 20, 45, 47, 55, 75, 130];
        cfg.env = Env {
            advances: (0..1 + next() % 3)
                .map(|_| sel(next(), &durations))
                .collect(),
            max_advances: (next() % 6) as u8,
            max_crashes: (next() % 3) as u8,
            max_forgets: (next() % 2) as u8,
            prune_check_gap: env_flag("GAP"),
        };
        let choices: Vec<u32> = (0..400).map(|_| next() as u32).collect();
        let (trace, v, res) = simulate(&cfg, &choices);
        residual += u64::from(res);
        steps += trace.len();
        if let Some(v) = v {
            if best.as_ref().is_none_or(|b| trace.len() < b.0) {
                let (pretty, _) = cfg.replay(&trace);
                best = Some((
                    trace.len(),
                    format!("{v}\n{:?}\n{:?}\n{pretty}", cfg.procs, cfg.env),
                ));
            }
        }
    }
    println!(
        "{n} schedules in {:?}, mean {:.1} steps, {residual} ending with the residual",
        t.elapsed(),
        steps as f64 / n as f64
    );
    match best {
        Some((_, p)) => panic!("violation:\n{p}"),
        None => println!("no violation"),
    }
}
