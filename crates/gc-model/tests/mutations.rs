//! Mutation checks: for each safeguard, the explorer runs a small scenario with exactly
//! that safeguard off and must find a violation (printing the shortest trace), and with
//! every safeguard on must find none up to the same depth. Run with `--nocapture` to see
//! the traces.
//!
//! Three safeguards cannot be shown necessary by the model; their tests assert that the
//! explorer finds nothing without them and say why (see also the doc comments of
//! [`Safeguards`]).

mod common;

use common::*;
use holdfast_gc_model::*;

// ---------------------------------------------------------------------------------------
// Safeguards of the protocol as described: shown necessary
// ---------------------------------------------------------------------------------------

/// A writer whose clock is 15 minutes fast starts just before a mark: its start looks
/// later than `mark_time + SKEW`, so the sweep does not wait for it and deletes the pack
/// it deduplicated against.
#[test]
fn skew_refusal_is_necessary() {
    let cfg = scenario(
        vec![writer(B1 | B2, 15), prune_runs(2, 0)],
        Repo::standard(),
        &[10, 75],
        1,
        0,
        0,
    );
    assert_necessary("skew_refusal", &cfg, 40);
}

/// A writer that starts after a mark deduplicates against the marked pack; the sweep
/// rightly does not wait for it.
#[test]
fn writer_ignores_marked_is_necessary() {
    assert_necessary("writer_ignores_marked", &small_marked(), 40);
}

/// A writer stalled past its lease lists packs after a sweep deleted one its (older)
/// index view still names: it deduplicates against a deleted pack (I2).
#[test]
fn writer_checks_pack_exists_is_necessary_for_i2() {
    assert_necessary("writer_checks_pack_exists", &small(), 40);
}

/// The same safeguard, shown necessary for I1 without I2: a writer stalled between its
/// index lease check and the index landing lands an index naming a pack that was marked
/// (as its orphan) and swept meanwhile; a healthy writer deduplicates against it.
#[test]
fn writer_checks_pack_exists_is_necessary_for_i1() {
    let mut cfg = scenario(
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
    );
    cfg.check_i2 = false;
    assert_necessary("writer_checks_pack_exists", &cfg, 40);
}

/// Listing packs first, then the index, then the markers: the pack is deleted (and its
/// marker with it) between the listing and the marker load.
#[test]
fn writer_lists_packs_after_markers_is_necessary() {
    assert_necessary("writer_lists_packs_after_markers", &small_marked(), 40);
}

/// Without the after-write check, a snapshot whose PUT was issued under a valid lease
/// but landed after a stall (lease lost, session stale, packs swept) counts as done.
#[test]
fn lease_checked_after_write_is_necessary() {
    assert_necessary("lease_checked_after_write", &small(), 40);
}

/// A writer stalled past staleness writes its snapshot without any lease check.
#[test]
fn snapshot_write_gated_is_necessary() {
    assert_necessary("snapshot_write_gated", &small(), 40);
}

/// The reproduced bug: a heartbeat after the lapse revives the lease (see also
/// `reproduced_bug.rs`).
#[test]
fn lease_sticky_is_necessary() {
    assert_necessary("lease_sticky", &small(), 40);
}

/// A prune whose clock is 25 minutes fast judges a writer's session stale after 46
/// minutes, while the writer's lease (50) is still valid: the sweep does not wait for it.
/// (With clocks off by at most 20 minutes, STALE + SKEW - LEASE, the prune's own clock
/// would do; the protocol does not bound the prune's skew.)
#[test]
fn prune_uses_server_time_is_necessary() {
    let cfg = scenario(
        vec![writer(B1 | B2, 0).no_heartbeat(), prune_runs(2, 25)],
        Repo::standard(),
        &[47],
        1,
        0,
        0,
    );
    assert_necessary("prune_uses_server_time", &cfg, 40);
}

/// A writer that deduplicated before the mark is still running at the sweep.
#[test]
fn sweep_waits_for_older_writers_is_necessary() {
    assert_necessary("sweep_waits_for_older_writers", &small(), 40);
}

/// Snapshots read before the sessions are listed: the older writer commits and ends in
/// between, and the sweep misses both its snapshot and its session.
#[test]
fn sweep_sessions_before_snapshots_is_necessary() {
    assert_necessary("sweep_sessions_before_snapshots", &small(), 40);
}

/// One unordered batch deletes the rescue marker first and then fails: the old marker
/// comes back to life and lists the rescued pack again, with its old `mark_time`. A writer
/// that deduplicated against the rescued pack meanwhile is not waited for; the snapshot
/// that caused the rescue is forgotten, and the next sweep deletes the pack.
#[test]
fn rescue_marker_deleted_last_is_necessary() {
    assert_necessary("rescue_marker_deleted_last", &rescue(), 40);
}

/// The residual (an uncommitted snapshot written after its writer's lease expired, whose
/// writer was killed before deleting it) references a deleted pack. Without the refusal
/// a prune completes as if all were well, and the damage goes unnoticed (I3). This is the
/// only way the model can show this safeguard necessary: it detects damage rather than
/// preventing loss (I1 never depends on it when every other safeguard is on).
#[test]
fn prune_refuses_missing_is_necessary() {
    let repo = Repo {
        packs: vec![(B0, true), (B1, true), (B2, false)],
        index: vec![0b011, 0b100],
        snaps: vec![B0],
        uncommitted: vec![B2],
        markers: vec![],
    };
    let cfg = scenario(vec![], repo, &[], 0, 0, 0);
    assert_necessary("prune_refuses_missing", &cfg, 5);
}

/// The residual arises under every safeguard (it is a known, accepted state), and every
/// quiescent state that holds it makes the final prune refuse.
#[test]
fn residual_is_reachable_and_detected() {
    let cfg = scenario(
        vec![ProcSpec::writer(B2, 0).no_heartbeat(), prune_runs(2, 0)],
        Repo::standard(),
        &[75],
        1,
        1,
        0,
    );
    let r = explore(&cfg, 60, 20_000_000);
    println!("{r}");
    assert!(r.violation.is_none(), "{}", r.violation.unwrap().pretty);
    assert!(r.residual_states > 0, "the residual should be reachable");
    assert!(
        r.residual_detected > 0,
        "quiescent residual states should be detected"
    );
}

// ---------------------------------------------------------------------------------------
// Proposed fixes: each closes a hole of the protocol as described
// ---------------------------------------------------------------------------------------

/// Hole H1: the prune reads the clock for `mark_time`, then stalls 10 minutes before the
/// marker lands. A writer starting in between loads the markers (none yet) and
/// deduplicates against the pack being marked; its start is `mark_time + 10`, so the sweep
/// (comparing with `mark_time`) does not wait for it.
#[test]
fn sweep_uses_marker_mtime_is_necessary() {
    assert_necessary("sweep_uses_marker_mtime", &small(), 40);
}

/// Hole H1's cousin H2, scripted: the prune's offset measurement straddles a stall (its
/// session file landed, then it was stopped 10 minutes before reading its clock), so its
/// idea of server time is 10 minutes slow; the marker lands at once but carries a
/// `mark_time` 10 minutes in the past.
#[test]
fn sweep_uses_marker_mtime_also_covers_a_skewed_offset_measurement() {
    use Script::*;
    let script = [
        Do(Action::Step(1)), // prune: session lands
        Do(Action::Advance(10)),
        Do(Action::Step(1)), // prune: measures offset 10 (true 0)
        RunUntil(1, Pc::MarkClock),
        Do(Action::Step(0)),     // writer: session, start = 10
        Do(Action::Step(0)),     // writer: loads markers (none)
        RunUntil(1, Pc::Finish), // prune: marker lands with mark_time 0
        Do(Action::Step(1)),     // first run ends
        RunUntil(0, Pc::SnapCheck),
        Run(1), // second run sweeps P1 (the writer's start, 10, is not < 0 + SKEW)
        Run(0),
    ];
    for (sg, bad) in [
        (Safeguards::ALL.without("sweep_uses_marker_mtime"), true),
        (Safeguards::ALL, false),
    ] {
        let cfg = Config { sg, ..small() };
        let (trace, v) = run_script(&cfg, &script);
        let (pretty, _) = cfg.replay(&trace);
        println!("{pretty}");
        assert_eq!(v.is_some(), bad, "{v:?}");
    }
}

/// Hole H3: a prune writes its sweep's index file (superseding I0), then stalls past its
/// lease; a second prune, seeing the first's session stale, deletes I0 as superseded; the
/// first wakes, finds its lease lost and deletes the index file it wrote: every entry of
/// I0 is gone and snapshot S0 can no longer be restored (I3; a prune without
/// `prune_refuses_missing` would go on to delete P0 as an orphan).
#[test]
fn prune_keeps_superseding_index_is_necessary() {
    assert_necessary("prune_keeps_superseding_index", &two_prunes(), 40);
}

/// Hole H4: a writer's index file lands under a valid lease; a second writer
/// deduplicates against the pack it names and commits; the first stalls past its lease,
/// its after-write check fails and it deletes the index file: the second writer's
/// committed snapshot cannot be restored (I3; without `prune_refuses_missing` the pack
/// would be deleted as an orphan, I1).
#[test]
fn writer_keeps_landed_index_is_necessary() {
    let cfg = scenario(
        vec![
            ProcSpec::writer(B2, 0).no_heartbeat().no_crash(),
            ProcSpec::writer(B2, 0).no_heartbeat().no_crash(),
        ],
        Repo::standard(),
        &[75],
        1,
        0,
        0,
    );
    assert_necessary("writer_keeps_landed_index", &cfg, 40);
}

/// Hole H5: a prune writes a rescue marker M1 (superseding M0) and stops before deleting
/// any marker; the next run sweeps M1 (M0 is superseded, so not due) and deletes it,
/// reviving M0, which lists the rescued pack again with its old `mark_time`. A writer
/// that deduplicated against the rescued pack meanwhile is not waited for; once the
/// snapshot that caused the rescue is forgotten, a third run deletes the pack.
#[test]
fn superseded_markers_deleted_first_is_necessary() {
    assert_necessary("superseded_markers_deleted_first", &rescue3(), 45);
}

/// A prune stalls past its lease after deciding to rescue P1 (snapshot S1 needs b1); a
/// second prune starts once the first's session is stale and sweeps the same marker;
/// S1 is forgotten; a writer deduplicates against P1 once the first prune's late rescue
/// marker un-marks it, while the second prune, which read the snapshots before the
/// writer's landed and the markers before the rescue marker, deletes P1. The lease stops
/// the stale prune before it writes.
#[test]
fn prune_lease_is_necessary() {
    assert_necessary("prune_lease", &writer_two_prunes_rescue(), 40);
}

/// Two prunes started together both sweep the same marker; one rescues, one deletes (the
/// snapshot that caused the rescue is forgotten in between, and a new writer takes a
/// reference into the rescued pack).
#[test]
fn prune_refuses_concurrent_is_necessary() {
    assert_necessary("prune_refuses_concurrent", &writer_two_prunes_rescue(), 40);
}

/// Holes H6/H7: the brief checks the prune's lease only before deletes and after index
/// writes; a stale prune's rescue marker (or index rewrite) lands unchecked.
#[test]
fn prune_lease_before_writes_is_necessary() {
    assert_necessary("prune_lease_before_writes", &writer_two_prunes_rescue(), 40);
}

/// Hole H8: any lease-based fence is a check followed by an action; a prune stalled
/// between the two (after checking its lease, before its request goes out) acts after
/// another prune has started. With a possible stall there (`prune_check_gap`), the
/// protocol with every fix loses data in the H7 way; keeping rescued packs marked
/// (`Safeguards::ROBUST`) makes a late action harmless.
#[test]
fn rescue_keeps_packs_marked_is_necessary() {
    let cfg = robust_with_gap(writer_two_prunes_rescue());
    assert_necessary("rescue_keeps_packs_marked", &cfg, 40);
}

// ---------------------------------------------------------------------------------------
// Safeguards the model cannot show necessary
// ---------------------------------------------------------------------------------------

/// Not shown necessary. Without the gate, a writer whose lease is lost may still land its
/// index file; but a gated writer can do exactly that too (check passes, the PUT lands
/// after a stall), so the gate adds no protection the rest of the protocol does not
/// already need: dangling entries are ignored by writers (`writer_checks_pack_exists`)
/// and rewritten by prunes, and the snapshot gate stops the writer.
#[test]
fn index_writes_gated_not_shown_necessary() {
    assert_not_shown("index_writes_gated", &small(), 45, 3_000_000);
    assert_not_shown("index_writes_gated", &crash_and_healthy(), 30, 3_000_000);
}

/// Not shown necessary: with the sessions listed first and older writers waited for, a
/// writer whose snapshot the sweep reads has finished (index files written) before the
/// sweep listed sessions, so an index read before the snapshots already holds its
/// entries. The spec's danger case (a pack that was an orphan when marked) needs a
/// writer the sweep does not wait for, which the wait rule and the lease exclude; it is
/// not found even with `orphan_per_pack_rule` off as well.
#[test]
fn sweep_read_order_not_shown_necessary() {
    assert_not_shown("sweep_read_order", &small2(), 40, 3_000_000);
    let cfg = Config {
        sg: Safeguards::ALL.without("orphan_per_pack_rule"),
        ..small2()
    };
    assert_not_shown("sweep_read_order", &cfg, 40, 3_000_000);
}

/// Not shown necessary: an orphan marked while its writer is live is protected anyway,
/// because that writer started before the mark and the sweep waits for it (and rescues
/// its packs through its snapshot). The rule saves later backups from uploading the
/// blobs of a running backup again; it is about efficiency, not safety.
#[test]
fn orphan_per_pack_rule_not_shown_necessary() {
    assert_not_shown("orphan_per_pack_rule", &small2(), 40, 3_000_000);
    assert_not_shown("orphan_per_pack_rule", &crash_and_healthy(), 30, 3_000_000);
}

/// Every safeguard has a test in this file.
#[test]
fn every_safeguard_is_covered() {
    let src = include_str!("mutations.rs");
    for name in Safeguards::NAMES {
        assert!(
            src.contains(&format!("fn {name}_is_necessary"))
                || src.contains(&format!("fn {name}_not_shown_necessary")),
            "no mutation test for {name}"
        );
    }
}

/// In the robust variant (rescued packs stay marked), even with stalls between every
/// prune lease check and its action, the safeguards that only keep prunes from acting
/// concurrently or order marker deletes are no longer needed: late or concurrent prune
/// actions are harmless once no pack that was ever marked gains a new reference.
fn robust_does_not_need(name: &str) {
    assert_not_shown(
        name,
        &robust_with_gap(writer_two_prunes_rescue()),
        28,
        3_000_000,
    );
    assert_not_shown(name, &robust_with_gap(rescue3()), 45, 3_000_000);
}

#[test]
fn robust_variant_needs_no_prune_lease() {
    robust_does_not_need("prune_lease");
}

#[test]
fn robust_variant_needs_no_prune_exclusion() {
    robust_does_not_need("prune_refuses_concurrent");
}

#[test]
fn robust_variant_needs_no_lease_before_writes() {
    robust_does_not_need("prune_lease_before_writes");
}

#[test]
fn robust_variant_needs_no_rescue_marker_order() {
    robust_does_not_need("rescue_marker_deleted_last");
}

#[test]
fn robust_variant_needs_no_superseded_marker_order() {
    robust_does_not_need("superseded_markers_deleted_first");
}
