//! The reproduced bug: a writer is `SIGSTOP`ped after uploading its pack, before writing
//! its index file; its session goes stale and is removed; two prunes at margin 0 run (the
//! first marks the writer's orphan pack, the second deletes it); the writer resumes. Its
//! heartbeat thread wakes first and writes a new session file: without a sticky lease
//! that heartbeat revives the lease, the writer's lease checks pass, and it commits a
//! snapshot referencing the deleted pack.

mod common;

use common::*;
use holdfast_gc_model::*;

fn bug_scenario(sg: Safeguards) -> Config {
    Config::new(
        sg,
        vec![
            ProcSpec::writer(B2, 0),
            ProcSpec::prune(0),
            ProcSpec::prune(0),
        ],
        Repo::standard(),
    )
}

/// The exact interleaving.
const SCRIPT: &[Script] = &[
    // The writer uploads P2 = {b2} and is stopped before its index write.
    Script::RunUntil(0, Pc::IndexCheck),
    // Stopped for 75 minutes: its lease (50) lapses, its session (60 + 10) goes stale.
    Script::Do(Action::Advance(75)),
    // Prune 1 marks P2 (an orphan whose writer is not live) and deletes the stale session.
    Script::Run(1),
    // Prune 2 sweeps: deletes P2.
    Script::Run(2),
    // The writer resumes: its heartbeat thread first (reads t0, writes a new session file,
    // deletes the old one), then the main thread.
    Script::Do(Action::Heartbeat(0)),
    Script::Do(Action::Heartbeat(0)),
    Script::Do(Action::Heartbeat(0)),
    Script::Run(0),
];

#[test]
fn reproduced_bug_loses_data_without_sticky_lease() {
    let cfg = bug_scenario(Safeguards::ALL.without("lease_sticky"));
    let (trace, v) = run_script(&cfg, SCRIPT);
    let (pretty, _) = cfg.replay(&trace);
    println!("{pretty}");
    let v = v.expect("without lease_sticky the reproduced bug must lose data");
    assert_eq!(v.invariant, Invariant::I1NoLoss, "{v}");
}

#[test]
fn reproduced_bug_is_fixed_with_all_safeguards() {
    for sg in [Safeguards::ALL, Safeguards::BRIEF] {
        let cfg = bug_scenario(sg);
        let (trace, v) = run_script(&cfg, SCRIPT);
        let (pretty, _) = cfg.replay(&trace);
        println!("{pretty}");
        assert!(
            v.is_none(),
            "violation with all safeguards on: {v:?}\n{pretty}"
        );
        // The writer noticed: its heartbeat after the lapse did not renew the lease, and
        // it failed cleanly without an index file or snapshot.
        let mut st = cfg.initial();
        for &a in &trace {
            cfg.step(&mut st, a).unwrap();
        }
        assert_eq!(st.world.procs[0].status, Status::Failed);
        assert_eq!(st.world.snaps.len(), 1, "no snapshot beyond S0");
    }
}

/// The same scenario, explored: every interleaving of the writer (with heartbeats) and
/// the two prunes around one 75-minute stall. Without `lease_sticky` the explorer finds
/// the bug (or a shorter variant of it); with every safeguard on, nothing.
#[test]
fn reproduced_bug_scenario_explored() {
    let mut cfg = bug_scenario(Safeguards::ALL);
    cfg.procs[1] = ProcSpec::prune(0).no_heartbeat().no_crash();
    cfg.procs[2] = ProcSpec::prune(0).no_heartbeat().no_crash();
    cfg.procs[0] = ProcSpec::writer(B2, 0).no_crash();
    cfg.env = Env {
        advances: vec![75],
        max_advances: 1,
        max_crashes: 0,
        max_forgets: 0,
        prune_check_gap: false,
    };
    let n = assert_necessary("lease_sticky", &cfg, 45);
    println!("lease_sticky: shortest counterexample {n} steps");
}
