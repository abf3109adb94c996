//! Exhaustive exploration with every safeguard on: every interleaving of small scenarios,
//! up to a step bound, with I1 (and I2) checked after every step and I3 in every
//! quiescent state. None may be violated. Run with `--nocapture` for state counts.

mod common;

use std::time::Instant;

use common::*;
use holdfast_gc_model::*;

fn assert_clean(what: &str, cfg: &Config, max_depth: usize, max_states: usize) -> Report {
    let t = Instant::now();
    let r = explore(cfg, max_depth, max_states);
    println!("{what}: {r} ({:?})", t.elapsed());
    if let Some(f) = &r.violation {
        panic!("{what}: violation with every safeguard on:\n{}", f.pretty);
    }
    r
}

/// One writer (b1 garbage, b2 new) and a prune running twice, time jumping by 10 or 75
/// minutes up to twice, the writer heartbeating.
#[test]
fn all_on_writer_and_prune() {
    assert_clean(
        "writer + prune x2, two time jumps",
        &small2(),
        45,
        3_000_000,
    );
    assert_clean(
        "same, P1 already marked",
        &Config {
            repo: Repo::marked(),
            ..small2()
        },
        45,
        3_000_000,
    );
}

/// "1 writer + 1 prune + 1 healthy writer": a writer that may crash or stall, a healthy
/// writer, a prune running twice; 3 blobs.
#[test]
fn all_on_crashing_writer_healthy_writer_and_prune() {
    let r = assert_clean(
        "crashing writer + healthy writer + prune x2",
        &crash_and_healthy(),
        30,
        3_000_000,
    );
    assert!(r.quiescent > 0);
}

/// Two independent prunes that may stall and heartbeat, on a repository with a due
/// marker: exhausted.
#[test]
fn all_on_two_prunes() {
    let r = assert_clean("two prunes", &two_prunes(), 100, 3_000_000);
    assert!(r.exhausted);
}

/// A writer and two independent prunes.
#[test]
fn all_on_writer_and_two_prunes() {
    let cfg = scenario(
        vec![
            writer(B1 | B2, 0).no_heartbeat(),
            ProcSpec::prune(0).no_crash().no_heartbeat(),
            ProcSpec::prune(0).no_crash().no_heartbeat(),
        ],
        Repo::marked(),
        &[75],
        1,
        0,
        0,
    );
    assert_clean("writer + two prunes", &cfg, 40, 3_000_000);
}

/// A writer and two prunes on a repository where a sweep must rescue, with a forget:
/// where a stale prune could act on decisions another prune has made obsolete.
#[test]
fn all_on_writer_two_prunes_and_a_rescue() {
    assert_clean(
        "writer + two prunes + rescue + forget",
        &writer_two_prunes_rescue(),
        40,
        3_000_000,
    );
}

/// The robust variant (rescued packs stay marked) even when a prune can stall between
/// its lease check and the action it guards: exhausted.
#[test]
fn robust_variant_with_check_gap() {
    for (what, cfg) in [
        (
            "robust + gap: writer + two prunes + rescue + forget",
            writer_two_prunes_rescue(),
        ),
        ("robust + gap: two prunes", two_prunes()),
        ("robust + gap: rescue, three runs", rescue3()),
    ] {
        assert_clean(what, &robust_with_gap(cfg), 60, 3_000_000);
    }
}

/// A sweep that must rescue, with a batch delete that may fail half done and a forget.
#[test]
fn all_on_rescue() {
    let r = assert_clean("rescue", &rescue(), 60, 3_000_000);
    assert!(r.exhausted);
    assert_clean(
        "rescue, three prune runs, two failures",
        &rescue3(),
        60,
        3_000_000,
    );
}

fn skews(w: Time, p: Time) {
    let cfg = scenario(
        vec![writer(B1 | B2, w), prune_runs(2, p)],
        Repo::standard(),
        &[10, 47, 75],
        2,
        0,
        0,
    );
    assert_clean(
        &format!("writer skew {w:+}, prune skew {p:+}"),
        &cfg,
        40,
        3_000_000,
    );
}

/// Clock skews within what the protocol allows (writers up to SKEW / 2; prunes any, as
/// they use server time), and writers beyond it (which must refuse).
#[test]
fn all_on_skews_fast_writer_slow_prune() {
    skews(5, -15);
    skews(15, 0);
}

/// See [`all_on_skews_fast_writer_slow_prune`].
#[test]
fn all_on_skews_slow_writer_fast_prune() {
    skews(-5, 25);
    skews(-15, 0);
}

/// Two writers sharing blobs and a prune running twice, with the writers' heartbeats.
#[test]
fn all_on_two_writers_and_prune() {
    let cfg = scenario(
        vec![writer(B1 | B2, 0), writer(B2, 0), prune_runs(2, 0)],
        Repo::marked(),
        &[75],
        1,
        0,
        0,
    );
    assert_clean("two writers + prune x2", &cfg, 32, 3_000_000);
}

/// The protocol exactly as described (proposed fixes off) has holes: the explorer finds
/// each of them in a small scenario (the traces are printed by the mutation tests).
#[test]
fn brief_protocol_has_holes() {
    for (what, cfg) in [
        ("H1 (marker lands late)", small()),
        ("H3 (prune deletes its superseding index)", two_prunes()),
    ] {
        let r = explore(
            &Config {
                sg: Safeguards::BRIEF,
                ..cfg
            },
            40,
            3_000_000,
        );
        println!("{what}: {r}");
        assert!(r.violation.is_some(), "{what}: expected a violation");
    }
}
