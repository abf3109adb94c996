//! Scenarios and assertions shared by the tests.

#![allow(dead_code)]

use std::time::Instant;

use holdfast_gc_model::*;

/// Blob bits: the standard repository holds `B0` (referenced by snapshot S0) in pack P0
/// and `B1` (garbage) in pack P1; `B2` is new.
pub const B0: u8 = 0b001;
/// See [`B0`].
pub const B1: u8 = 0b010;
/// See [`B0`].
pub const B2: u8 = 0b100;

/// A writer that does not crash and takes heartbeats.
pub fn writer(wants: u8, offset: Time) -> ProcSpec {
    ProcSpec::writer(wants, offset).no_crash()
}

/// A prune that runs `runs` times in a row at margin 0, without heartbeats or crashes.
pub fn prune_runs(runs: u8, offset: Time) -> ProcSpec {
    ProcSpec::prune(offset).no_heartbeat().no_crash().runs(runs)
}

/// A scenario with every safeguard on and the given adversary.
pub fn scenario(
    procs: Vec<ProcSpec>,
    repo: Repo,
    advances: &[Time],
    max_advances: u8,
    max_crashes: u8,
    max_forgets: u8,
) -> Config {
    let mut c = Config::new(Safeguards::ALL, procs, repo);
    c.env = Env {
        advances: advances.to_vec(),
        max_advances,
        max_crashes,
        max_forgets,
        prune_check_gap: false,
    };
    c
}

/// One writer wanting b1 (garbage, about to be marked) and b2 (new), one prune running
/// twice (mark, then sweep) at margin 0; time may jump by 10 or 75 minutes, once.
pub fn small() -> Config {
    scenario(
        vec![writer(B1 | B2, 0), prune_runs(2, 0)],
        Repo::standard(),
        &[10, 75],
        1,
        0,
        0,
    )
}

/// Like [`small`] but time may jump twice.
pub fn small2() -> Config {
    Config {
        env: Env {
            max_advances: 2,
            ..small().env
        },
        ..small()
    }
}

/// [`small`] starting with P1 already marked 20 minutes ago.
pub fn small_marked() -> Config {
    Config {
        repo: Repo::marked(),
        ..small()
    }
}

/// A repository where a sweep must rescue: marker M0 (20 minutes old) lists P1 = {b1}
/// and P2 = {b2}, and snapshot S1, written by a writer that started before the mark,
/// references b1.
pub fn rescue_repo() -> Repo {
    Repo {
        packs: vec![(B0, true), (B1, true), (B2, true)],
        index: vec![0b111],
        snaps: vec![B0, B1],
        uncommitted: vec![],
        markers: vec![(-20, 0b110)],
    }
}

/// A writer wanting b1, a prune running twice whose batch deletes can fail (once), and a
/// user who may forget one snapshot, on [`rescue_repo`].
pub fn rescue() -> Config {
    scenario(
        vec![
            writer(B1, 0).no_heartbeat(),
            ProcSpec::prune(0).no_heartbeat().runs(2),
        ],
        rescue_repo(),
        &[10],
        0,
        1,
        1,
    )
}

/// [`rescue`] with three prune runs and up to two crashes or batch-delete failures.
pub fn rescue3() -> Config {
    Config {
        procs: vec![
            writer(B1, 0).no_heartbeat(),
            ProcSpec::prune(0).no_heartbeat().runs(3),
        ],
        env: Env {
            max_crashes: 2,
            ..rescue().env
        },
        ..rescue()
    }
}

/// A writer wanting b1, two independent prunes, on [`rescue_repo`]; time may jump by 75
/// minutes once, a snapshot may be forgotten. The scenario where stale prunes matter.
pub fn writer_two_prunes_rescue() -> Config {
    scenario(
        vec![
            writer(B1, 0).no_heartbeat(),
            ProcSpec::prune(0).no_crash().no_heartbeat(),
            ProcSpec::prune(0).no_crash().no_heartbeat(),
        ],
        rescue_repo(),
        &[75],
        1,
        0,
        1,
    )
}

/// `cfg` with the robust variant ([`Safeguards::ROBUST`]) and a possible stall between
/// every prune lease check and the action it guards.
pub fn robust_with_gap(cfg: Config) -> Config {
    Config {
        sg: Safeguards::ROBUST,
        env: Env {
            prune_check_gap: true,
            ..cfg.env
        },
        ..cfg
    }
}

/// Two independent prunes (each may take heartbeats) on [`Repo::marked`]; time may jump
/// by 75 minutes once.
pub fn two_prunes() -> Config {
    scenario(
        vec![ProcSpec::prune(0).no_crash(), ProcSpec::prune(0).no_crash()],
        Repo::marked(),
        &[75],
        1,
        0,
        0,
    )
}

/// "1 writer + 1 prune + 1 healthy writer": a writer that may crash, a healthy writer,
/// and a prune running twice; time may jump by 75 minutes once, one crash.
pub fn crash_and_healthy() -> Config {
    scenario(
        vec![
            ProcSpec::writer(B2, 0).no_heartbeat(),
            writer(B1 | B2, 0).no_heartbeat(),
            prune_runs(2, 0),
        ],
        Repo::standard(),
        &[75],
        1,
        1,
        0,
    )
}

/// Explores `cfg` with every safeguard on (must find nothing up to the depth at which the
/// mutant fails) and with `name` off (must find a violation); prints the shortest trace
/// and returns its length.
pub fn assert_necessary(name: &str, cfg: &Config, max_depth: usize) -> usize {
    let t = Instant::now();
    let mutant = Config {
        sg: cfg.sg.without(name),
        ..cfg.clone()
    };
    let mut r = explore(&mutant, max_depth, 20_000_000);
    let found = r
        .violation
        .take()
        .unwrap_or_else(|| panic!("{name} off: no violation found within depth {max_depth} ({r})"));
    println!(
        "{name} off: {r} ({:?}); shortest counterexample, {} steps, {}:\n{}",
        t.elapsed(),
        found.trace.len(),
        found.violation,
        found.pretty
    );
    let t = Instant::now();
    let all = explore(cfg, found.trace.len(), 20_000_000);
    println!("all on, same depth: {all} ({:?})", t.elapsed());
    if let Some(v) = &all.violation {
        panic!("all safeguards on: violation\n{}", v.pretty);
    }
    found.trace.len()
}

/// Explores `cfg` with `name` off and asserts it finds nothing (the model cannot show
/// the safeguard necessary in this scenario).
pub fn assert_not_shown(name: &str, cfg: &Config, max_depth: usize, max_states: usize) {
    let t = Instant::now();
    let mutant = Config {
        sg: cfg.sg.without(name),
        ..cfg.clone()
    };
    let r = explore(&mutant, max_depth, max_states);
    println!("{name} off: {r} ({:?})", t.elapsed());
    if let Some(v) = &r.violation {
        panic!("{name} off: violation found after all:\n{}", v.pretty);
    }
}
