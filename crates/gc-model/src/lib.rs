//! An executable, deterministic model of holdfast's lock-free garbage collection
//! (SPEC.md §7.2, §11.2, §12), in the version with leases that is being implemented now.
//!
//! # Why
//!
//! Prune deletes data while backups run without any lock. The argument that this is safe
//! (SPEC.md §12.4) is a chain of orderings, clock comparisons and time limits; each link is
//! easy to get subtly wrong, and the reproduced bug (a writer that resumed after a long
//! `SIGSTOP` and revived its lapsed lease with a heartbeat) slipped through review. This
//! crate turns the protocol into a small state machine and lets a computer try the
//! interleavings:
//!
//! * [`explore`] walks every interleaving of a small [`Config`] breadth first (so the first
//!   violation it reports has a shortest trace), deduplicating states;
//! * [`simulate`] follows one schedule chosen by a list of numbers: the random-schedule
//!   property tests feed it from `proptest`;
//! * after **every** step the invariants are checked ([`Config::check`]), and in every
//!   quiescent state (all processes ended) the repository must survive one more full prune
//!   ([`Config::check_quiescent`]).
//!
//! Every safeguard of the protocol is a boolean of [`Safeguards`]; the tests switch each
//! one off alone and ask the explorer for a counterexample, which shows the safeguard is
//! necessary (or, where none exists, that the model cannot show it).
//!
//! # What the model found
//!
//! The protocol as described ([`Safeguards::BRIEF`]) has holes; each has a proposed fix
//! (a safeguard that is off in `BRIEF`), and `tests/mutations.rs` prints a shortest trace
//! for each:
//!
//! * **H1** (fix [`Safeguards::sweep_uses_marker_mtime`]): `mark_time` is read before the
//!   marker write; if the prune stalls before the write lands, a writer starting in between
//!   misses the marker, deduplicates against the pack, and is not waited for by the sweep.
//! * **H2** (same fix): the prune's server-time offset, measured from its session file's
//!   mtime after a stall, is off by the stall, and so is `mark_time`.
//! * **H3** (fix [`Safeguards::prune_keeps_superseding_index`]): a prune that finds its
//!   lease lost after an index write deletes that file, whose superseded files another
//!   prune may already have deleted: their entries are lost.
//! * **H4** (fix [`Safeguards::writer_keeps_landed_index`]): the same for a writer: once
//!   its index file has landed, another writer may have committed a snapshot relying on it.
//! * **H5** (fix [`Safeguards::superseded_markers_deleted_first`]): a sweep deletes a
//!   rescue marker left by an interrupted prune while the marker it supersedes still
//!   exists, which revives it with its old `mark_time`.
//! * **H6/H7** (fix [`Safeguards::prune_lease_before_writes`]): a prune stalled past its
//!   lease still writes its index rewrite or rescue marker (only deletes are gated), acting
//!   on decisions another prune's rescue has made obsolete.
//! * **H8** (alternative design [`Safeguards::rescue_keeps_packs_marked`]): every lease
//!   fence is check-then-act; a prune stalled between the check and its request acts after
//!   another prune started ([`Env::prune_check_gap`]). Keeping rescued packs marked makes
//!   late prune actions harmless, so [`Safeguards::ROBUST`] survives that too.
//!
//! With every safeguard and fix on ([`Safeguards::ALL`], atomic lease checks; or
//! [`Safeguards::ROBUST`] with [`Env::prune_check_gap`]) the explorer and the random
//! schedules find nothing. The known residual (a snapshot PUT landing after its writer's
//! lease expired, the writer killed before deleting it) is reachable and always detected
//! by the next prune's refusal ([`Config::residual`]).
//!
//! # What is modelled
//!
//! * **Time** is a global discrete true time in minutes. The storage server's clock is
//!   true time; file modification times (`mtime`) are server time. Each process has a
//!   fixed clock offset ([`ProcSpec::offset`]); its monotonic clock (leases) is true time
//!   and counts suspends. The state stores every time *relative to now* ("now" is always
//!   0; [`Action::Advance`] shifts every stored time back), so two states that differ only
//!   by when they happened are one state.
//! * **Storage**: packs (a set of blobs), index files (a set of packs and a `supersedes`
//!   set), snapshots (a set of blobs), gc markers (`mark_time`, packs, `supersedes`) and
//!   session files. A file is visible exactly when its write *lands*; the model separates
//!   deciding to write (and reading the clock or checking the lease for it) from the write
//!   landing wherever a pause between the two matters, so the adversary can put a pause
//!   (time advancing while that process takes no step) or a crash between them. Nothing
//!   is ever modified in place; deleted files stay in the state with `exists == false`
//!   (except session files, which are removed) so traces can name them.
//! * **Blobs** are a universe of at most 8 IDs (bit masks). Blob contents and trees are
//!   not modelled: a snapshot references a set of blobs directly.
//! * **Processes**: writers (backups) and prunes, each a program of atomic steps plus a
//!   heartbeat "thread" ([`Action::Heartbeat`]). The adversary chooses which process moves
//!   next, when time advances, which process crashes or which batch delete fails (a
//!   bounded number of times), in which order the items of a batch delete (S3
//!   `DeleteObjects`) are removed, and when a user forgets a finished snapshot. A prune
//!   may run several times in a row ([`ProcSpec::runs`], a cron job), also after a crash.
//! * **Invariants**: I1 (no committed snapshot references a lost blob) and I2 (no writer
//!   deduplicates against a pack deleted before its listing) after every step; I3 (after
//!   one more prune, everything is indexed and restorable, or the prune refused because of
//!   the known residual) in quiescent states.
//!
//! # Reductions (deliberate simplifications)
//!
//! * Listings and reads of a whole directory are atomic; a reader that finds a listed
//!   index file gone re-lists (SPEC.md §7.2), which this abstracts.
//! * A writer writes at most one pack (holding every blob it could not deduplicate) and one
//!   index file. Pieces of index files, repack and index compaction are not modelled.
//! * The writer's session write, the reading of its start time and its skew measurement
//!   are one step: a pause before the write lands only makes its `start` earlier than the
//!   file (more sweeps wait for it), and a pause after it only makes the measured skew
//!   larger (it refuses more), so splitting them adds no behaviour that matters.
//! * A heartbeat is taken at most every [`HEARTBEAT`] minutes, and not after the lease is
//!   known lost (with [`Safeguards::lease_sticky`] it could never renew it again). Not
//!   taking a heartbeat is how a process "stalls".
//! * Deleting stale sessions and superseded files at the end of a prune is one step; a
//!   session file that was stale when listed can only ever be deleted, never refreshed
//!   (a heartbeat writes a new file), so delaying that delete changes nothing.
//! * Undecodable session files and the same-host PID liveness shortcut are not modelled.
//! * A marker's `mtime` is when it became visible. True for an S3 PUT (small objects; a
//!   stalled upload times out rather than landing late); **not** for a local backend that
//!   writes a temporary file and renames it (the mtime is the write, the visibility the
//!   rename): there the H1 fix needs the mtime set after the rename.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Minutes of model time. Stored times are relative to the current time (now = 0).
pub type Time = i32;
/// A set of small IDs (packs, index files, markers) as a bit mask.
pub type Mask = u32;

/// Heartbeat period (SPEC.md §12.2): a process refreshes its session this often when it is
/// not stalled. The model allows a heartbeat once this much time has passed since the last.
pub const HEARTBEAT: Time = 5;
/// A lease lasts this long after the start of the heartbeat that renewed it.
pub const LEASE: Time = 50;
/// A session whose file is older than `STALE + SKEW` (server time) is stale.
pub const STALE: Time = 60;
/// The clock skew allowance: every comparison of times from different hosts includes it;
/// writers refuse to run with a skew over half of it.
pub const SKEW: Time = 10;
/// "Nobody": the writer of initial files.
pub const NOBODY: u8 = u8::MAX;

/// Bit `i`.
fn bit(i: usize) -> Mask {
    1 << i
}

/// The indices of the set bits of `m`, lowest first.
fn bits(m: Mask) -> impl Iterator<Item = usize> {
    (0..32).filter(move |i| m & (1 << i) != 0)
}

// ---------------------------------------------------------------------------------------
// Safeguards
// ---------------------------------------------------------------------------------------

/// Every safeguard of the protocol, each of which can be switched off alone to see whether
/// the model finds a violation without it. [`Safeguards::ALL`] is the protocol being
/// implemented plus the fixes this model proposes for holes it found;
/// [`Safeguards::BRIEF`] is the protocol exactly as described to the model's author
/// (proposed fixes off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Safeguards {
    /// Writer step 1: refuse to run when the clock skew measured against the session
    /// file's server mtime exceeds `SKEW / 2`. (The sweep compares a writer's own-clock
    /// start with marker times plus `SKEW`.)
    pub skew_refusal: bool,
    /// Writers do not deduplicate against a pack a current gc marker lists.
    pub writer_ignores_marked: bool,
    /// Writers deduplicate only against packs present in their own pack listing.
    pub writer_checks_pack_exists: bool,
    /// Writers load the markers, then the index, then list packs. Off: the reverse order
    /// (packs, index, markers).
    pub writer_lists_packs_after_markers: bool,
    /// Writers check their lease before writing an index file (and, with
    /// [`Safeguards::lease_checked_after_write`], after it).
    ///
    /// *Not shown necessary by the model*: a gated writer can land its index file late
    /// anyway (the check passes, the PUT lands after a stall), so the rest of the protocol
    /// must already cope with an index file landing after its writer's lease is gone
    /// (dangling entries are ignored by writers and rewritten by prunes). Hygiene only.
    pub index_writes_gated: bool,
    /// After an index file or snapshot write completes, the writer checks its lease again;
    /// if it is lost it deletes what it just wrote and fails.
    pub lease_checked_after_write: bool,
    /// Writers check their lease before writing the snapshot (and after it, with
    /// [`Safeguards::lease_checked_after_write`]).
    pub snapshot_write_gated: bool,
    /// A lease observed expired stays lost; a heartbeat renews it only if its write
    /// completed while the previous lease was still valid. Off: a heartbeat after a lapse
    /// revives the lease (the reproduced bug).
    pub lease_sticky: bool,
    /// Prune computes ages (sessions, markers) and `mark_time` in server time, from the
    /// offset it measured against its own session file's mtime. Off: its own clock.
    pub prune_uses_server_time: bool,
    /// Prune holds a lease like a writer: checked before each destructive step and after
    /// each index write (deleting the index file it wrote if the lease is lost, which is
    /// hole H3: see [`Safeguards::prune_keeps_superseding_index`]). Necessary: it is what
    /// stops a stalled prune once another may have started (see
    /// [`Safeguards::prune_lease_before_writes`] for the writes it must also cover).
    pub prune_lease: bool,
    /// A prune refuses to run when another live prune session exists. Necessary: two
    /// prunes sweeping the same marker can disagree (one rescues a pack after a new
    /// writer may reference it, the other deletes it).
    pub prune_refuses_concurrent: bool,
    /// Sweep step 1: postpone a marker while a live writer session has
    /// `start < mark_time + SKEW`.
    pub sweep_waits_for_older_writers: bool,
    /// Sweep step 2: the index is read after the snapshots. Off: before them.
    ///
    /// *Not shown necessary by the model*: with the sessions listed first and older
    /// writers waited for, every writer whose snapshot the sweep reads had ended (index
    /// written) before the sessions were listed, so an index read before the snapshots
    /// already has its entries. SPEC.md's danger case (a pack that was an orphan when
    /// marked) needs a writer the sweep does not wait for, which the wait rule and the
    /// sticky lease exclude. Not found even with [`Safeguards::orphan_per_pack_rule`] off.
    pub sweep_read_order: bool,
    /// Sweep step 2: the snapshots are read after the sessions were listed (SPEC.md §12.4,
    /// first bullet). Off: before.
    pub sweep_sessions_before_snapshots: bool,
    /// Delete the old markers first and the rescue marker only after them (two batches).
    /// Off: one unordered batch.
    pub rescue_marker_deleted_last: bool,
    /// Orphan packs are marked one by one, only when no live writer session has
    /// `start < pack_mtime + SKEW`. Off: every orphan is marked.
    ///
    /// *Not shown necessary by the model*: an orphan marked while its writer is live is
    /// safe anyway, since that writer started before the mark and the sweep waits for it,
    /// then rescues its packs through its snapshot. The rule spares later backups from
    /// uploading a running backup's blobs again: efficiency, not safety.
    pub orphan_per_pack_rule: bool,
    /// The mark phase refuses (deletes nothing more) when a snapshot needs a blob with no
    /// indexed copy in an existing pack.
    pub prune_refuses_missing: bool,
    /// **Proposed fix (hole H1/H2).** The sweep's wait rule compares writer starts with the
    /// marker file's server mtime (when it became visible) rather than with the `mark_time`
    /// written inside it, which was read before the write and may be arbitrarily older
    /// than the moment writers could see the marker (a stall between reading the clock and
    /// the PUT landing, or an offset measured across a stall).
    pub sweep_uses_marker_mtime: bool,
    /// **Proposed fix (hole H3).** A prune that finds its lease lost after writing an index
    /// file does not delete that file when it supersedes others: another prune may already
    /// have deleted the files it supersedes, so deleting it loses their entries.
    pub prune_keeps_superseding_index: bool,
    /// **Proposed fix (hole H4).** A writer that finds its lease lost after its index
    /// write does not delete the index file: from the moment it landed, another writer may
    /// have deduplicated against the packs it names and committed a snapshot, which
    /// deleting it would leave unrestorable (and, for a prune without
    /// [`Safeguards::prune_refuses_missing`], its packs orphans to delete). Leaving it is
    /// harmless: its packs are ordinary indexed garbage, or already deleted, and then its
    /// dangling entries are ignored by writers ([`Safeguards::writer_checks_pack_exists`])
    /// and rewritten away by the next prune.
    pub writer_keeps_landed_index: bool,
    /// **Proposed fix (hole H5).** Before deleting the markers it swept, the sweep deletes
    /// the existing markers they supersede (SPEC.md §7.2: a file may be deleted only once
    /// every file it supersedes is gone or superseded by another existing file). Without
    /// it, a sweep of a rescue marker left behind by a prune that stopped before deleting
    /// markers (crash, S3 error, lost lease) deletes the rescue marker while the old marker
    /// it supersedes still exists: the old marker comes back to life with its old
    /// `mark_time` and lists the rescued packs again. [`Safeguards::rescue_marker_deleted_last`]
    /// is the special case of this rule within one sweep.
    pub superseded_markers_deleted_first: bool,
    /// **Proposed fix (holes H6, H7).** With [`Safeguards::prune_lease`], the prune also
    /// checks its lease *before* writing an index file (the sweep's rewrite, the mark
    /// phase's rewrite without missing packs) or a rescue marker: an index rewrite drops
    /// entries, and a rescue marker un-marks packs, both as destructive as deleting. Without
    /// it a prune stalled past its lease acts on stale decisions while another prune runs:
    /// H6, its rewrite drops a pack the other prune rescued and a new writer has since
    /// deduplicated against; H7, its late rescue marker un-marks a pack that the other
    /// prune, sweeping the same old marker, is about to delete, and a new writer
    /// deduplicates against it in between. Like every lease-based fence this assumes the
    /// action takes effect promptly after the check: see [`Env::prune_check_gap`] and
    /// [`Safeguards::rescue_keeps_packs_marked`].
    pub prune_lease_before_writes: bool,
    /// **Alternative design (not in [`Safeguards::ALL`]).** A rescued pack stays marked:
    /// the sweep writes no rescue marker and deletes only the markers none of whose packs
    /// it rescued; the others stay and are swept again later. Writers therefore never take
    /// a new reference into a pack once it has been marked, so a prune's decision to
    /// delete a pack stays valid however late it acts, and the protocol no longer relies
    /// on prunes excluding each other (see [`Safeguards::ROBUST`]). The cost: backups
    /// upload the blobs of rescued packs again, until the snapshots that caused the rescue
    /// are forgotten and the packs are deleted.
    pub rescue_keeps_packs_marked: bool,
}

impl Safeguards {
    /// The protocol as described in the brief, every safeguard on, proposed fixes off.
    pub const BRIEF: Safeguards = Safeguards {
        skew_refusal: true,
        writer_ignores_marked: true,
        writer_checks_pack_exists: true,
        writer_lists_packs_after_markers: true,
        index_writes_gated: true,
        lease_checked_after_write: true,
        snapshot_write_gated: true,
        lease_sticky: true,
        prune_uses_server_time: true,
        prune_lease: true,
        prune_refuses_concurrent: true,
        sweep_waits_for_older_writers: true,
        sweep_read_order: true,
        sweep_sessions_before_snapshots: true,
        rescue_marker_deleted_last: true,
        orphan_per_pack_rule: true,
        prune_refuses_missing: true,
        sweep_uses_marker_mtime: false,
        prune_keeps_superseding_index: false,
        writer_keeps_landed_index: false,
        superseded_markers_deleted_first: false,
        prune_lease_before_writes: false,
        rescue_keeps_packs_marked: false,
    };

    /// Every safeguard on, including the proposed fixes: the protocol this model finds no
    /// violation in.
    pub const ALL: Safeguards = Safeguards {
        sweep_uses_marker_mtime: true,
        prune_keeps_superseding_index: true,
        writer_keeps_landed_index: true,
        superseded_markers_deleted_first: true,
        prune_lease_before_writes: true,
        ..Safeguards::BRIEF
    };

    /// [`Safeguards::ALL`] with [`Safeguards::rescue_keeps_packs_marked`]: the variant that
    /// stays safe when a prune's lease check and its action can be separated by a stall
    /// ([`Env::prune_check_gap`]).
    pub const ROBUST: Safeguards = Safeguards {
        rescue_keeps_packs_marked: true,
        ..Safeguards::ALL
    };

    /// The names of all safeguards, as accepted by [`Safeguards::without`].
    pub const NAMES: &'static [&'static str] = &[
        "skew_refusal",
        "writer_ignores_marked",
        "writer_checks_pack_exists",
        "writer_lists_packs_after_markers",
        "index_writes_gated",
        "lease_checked_after_write",
        "snapshot_write_gated",
        "lease_sticky",
        "prune_uses_server_time",
        "prune_lease",
        "prune_refuses_concurrent",
        "sweep_waits_for_older_writers",
        "sweep_read_order",
        "sweep_sessions_before_snapshots",
        "rescue_marker_deleted_last",
        "orphan_per_pack_rule",
        "prune_refuses_missing",
        "sweep_uses_marker_mtime",
        "prune_keeps_superseding_index",
        "writer_keeps_landed_index",
        "superseded_markers_deleted_first",
        "prune_lease_before_writes",
        "rescue_keeps_packs_marked",
    ];

    /// A mutable reference to the safeguard called `name`; panics on an unknown name.
    pub fn get_mut(&mut self, name: &str) -> &mut bool {
        match name {
            "skew_refusal" => &mut self.skew_refusal,
            "writer_ignores_marked" => &mut self.writer_ignores_marked,
            "writer_checks_pack_exists" => &mut self.writer_checks_pack_exists,
            "writer_lists_packs_after_markers" => &mut self.writer_lists_packs_after_markers,
            "index_writes_gated" => &mut self.index_writes_gated,
            "lease_checked_after_write" => &mut self.lease_checked_after_write,
            "snapshot_write_gated" => &mut self.snapshot_write_gated,
            "lease_sticky" => &mut self.lease_sticky,
            "prune_uses_server_time" => &mut self.prune_uses_server_time,
            "prune_lease" => &mut self.prune_lease,
            "prune_refuses_concurrent" => &mut self.prune_refuses_concurrent,
            "sweep_waits_for_older_writers" => &mut self.sweep_waits_for_older_writers,
            "sweep_read_order" => &mut self.sweep_read_order,
            "sweep_sessions_before_snapshots" => &mut self.sweep_sessions_before_snapshots,
            "rescue_marker_deleted_last" => &mut self.rescue_marker_deleted_last,
            "orphan_per_pack_rule" => &mut self.orphan_per_pack_rule,
            "prune_refuses_missing" => &mut self.prune_refuses_missing,
            "sweep_uses_marker_mtime" => &mut self.sweep_uses_marker_mtime,
            "prune_keeps_superseding_index" => &mut self.prune_keeps_superseding_index,
            "writer_keeps_landed_index" => &mut self.writer_keeps_landed_index,
            "superseded_markers_deleted_first" => &mut self.superseded_markers_deleted_first,
            "prune_lease_before_writes" => &mut self.prune_lease_before_writes,
            "rescue_keeps_packs_marked" => &mut self.rescue_keeps_packs_marked,
            _ => panic!("unknown safeguard {name}"),
        }
    }

    /// These safeguards with the one called `name` switched off.
    pub fn without(mut self, name: &str) -> Safeguards {
        *self.get_mut(name) = false;
        self
    }
}

// ---------------------------------------------------------------------------------------
// Files on the server
// ---------------------------------------------------------------------------------------

/// A pack file: which blobs it holds, when it landed (server time), who wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pack {
    /// Blob bit mask.
    pub blobs: u8,
    /// Server time of the write.
    pub mtime: Time,
    /// Not deleted.
    pub exists: bool,
    /// Writing process or [`NOBODY`].
    pub by: u8,
}

/// An index file: the packs it names (with all their blobs) and the index files it
/// supersedes (SPEC.md §7.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IndexFile {
    /// Pack bit mask.
    pub packs: Mask,
    /// Index file bit mask.
    pub supersedes: Mask,
    /// Not deleted.
    pub exists: bool,
    /// Writing process or [`NOBODY`].
    pub by: u8,
}

/// A snapshot: the blobs it references, and what the model knows about its writer's lease
/// (the server does not know this; only the invariants use it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// Blob bit mask.
    pub blobs: u8,
    /// Writing process or [`NOBODY`].
    pub by: u8,
    /// Not deleted.
    pub exists: bool,
    /// The writer passed its after-write lease check (or made no such check), or the
    /// snapshot was there from the start. Invariant I1 covers committed snapshots.
    pub committed: bool,
    /// The write landed while the writer's lease was really valid: the protocol must
    /// protect it even if the writer then died before its after-write check.
    pub protected: bool,
}

/// A gc marker (SPEC.md §12.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Marker {
    /// The time written inside the marker (the prune's idea of server time, read before
    /// the write).
    pub mark_time: Time,
    /// Server time at which the marker became visible.
    pub mtime: Time,
    /// Pack bit mask: packs pending deletion.
    pub packs: Mask,
    /// Marker bit mask.
    pub supersedes: Mask,
    /// Not deleted.
    pub exists: bool,
    /// Writing process or [`NOBODY`].
    pub by: u8,
}

/// A session file (SPEC.md §12.2). Deleted session files are removed from the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionFile {
    /// Owning process.
    pub owner: u8,
    /// Generation: 0 for the first file, +1 per heartbeat.
    pub gen: u8,
    /// Which run of the owner (prunes run several times).
    pub run: u8,
    /// Role prune (else writer).
    pub prune: bool,
    /// Session start, owner's clock.
    pub start: Time,
    /// Time of this heartbeat, owner's clock.
    pub heartbeat: Time,
    /// Server time of the write.
    pub mtime: Time,
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A process's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A backup.
    Writer,
    /// A prune run.
    Prune,
}

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// Has not written its session yet (may start at any time).
    #[default]
    NotStarted,
    /// Running.
    Running,
    /// Finished normally.
    Done,
    /// Stopped cleanly after losing its lease.
    Failed,
    /// Refused to run (clock skew, another prune running).
    Refused,
    /// Prune only: refused because a snapshot needs a blob with no indexed existing copy.
    RefusedMissing,
    /// Vanished, leaving its files behind.
    Crashed,
}

impl Status {
    /// The process will take no more steps.
    pub fn terminal(self) -> bool {
        !matches!(self, Status::NotStarted | Status::Running)
    }
}

/// What a writer loads in step 2, in an order the safeguards choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Load {
    Markers,
    Index,
    Packs,
}

/// What the sweep reads, in an order the safeguards choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SweepRead {
    Sessions,
    Snapshots,
    Index,
}

/// A batch delete in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Sweep: the packs to delete.
    SweepPacks,
    /// Sweep: the index files that named them.
    SweepIndex,
    /// Sweep: the markers (old ones, then — with the safeguard — the rescue marker).
    SweepMarkers,
    /// Mark: index files superseded by the rewrite that dropped missing packs.
    MissingIndex,
}

/// The program counter: the next main-thread step of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Pc {
    /// Write the session file (both roles).
    #[default]
    Start,
    /// Writer step 2: the k-th of the three loads.
    Load(u8),
    /// Writer step 3: upload one pack with every blob not deduplicated.
    Upload,
    /// Writer step 4: lease check before the index write.
    IndexCheck,
    /// Writer step 4: the index write lands.
    IndexLand,
    /// Writer step 4: lease check after the index write.
    IndexCheckAfter,
    /// Writer step 4: lease lost after the write: delete the index file, fail.
    IndexUndo,
    /// Writer step 5: lease check before the snapshot write.
    SnapCheck,
    /// Writer step 5: the snapshot write lands.
    SnapLand,
    /// Writer step 5: lease check after the snapshot write.
    SnapCheckAfter,
    /// Writer step 5: lease lost after the write: delete the snapshot, fail.
    SnapUndo,
    /// Writer step 6: delete the session.
    End,
    /// Prune: read the clock, measure the server-time offset from the session file's
    /// mtime, refuse if another live prune session exists.
    Measure,
    /// Sweep: load the markers, pick those due.
    SweepPrep,
    /// Sweep: the k-th of the three reads (sessions, snapshots, index + pack listing).
    SweepRead(u8),
    /// Sweep: write the rescue marker.
    SweepRescue,
    /// Sweep: the rewritten index file lands.
    SweepIndexLand,
    /// Sweep: lease check after the index write.
    SweepIndexCheck,
    /// Sweep: lease lost after the index write.
    SweepIndexUndo,
    /// A batch delete: the adversary picks the items one by one ([`Action::Pick`]).
    Batch(BatchKind),
    /// Mark: load markers, read snapshots.
    MarkRead,
    /// Mark: read the index, then list packs.
    MarkIndex,
    /// Mark: list sessions; decide what to mark, whether to refuse.
    MarkSessions,
    /// Mark: read the clock for `mark_time`.
    MarkClock,
    /// Mark: the marker write lands.
    MarkLand,
    /// Mark: the index rewrite without missing packs lands.
    MissingLand,
    /// Mark: lease check after that write.
    MissingCheck,
    /// Mark: lease lost after that write.
    MissingUndo,
    /// Prune: delete stale sessions and superseded files, then its own session.
    Finish,
}

/// The heartbeat thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hb {
    /// Waiting for the next period.
    #[default]
    Idle,
    /// Read the lease start `t0`; the new session file's write has not landed yet.
    Landing(Time),
    /// Wrote the new session file; the old one (this generation) is still to delete.
    Deleting(u8),
}

/// A process's memory: what it has read and decided. One struct for both roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mem {
    /// Packs current markers list (as last loaded).
    pub marked: Mask,
    /// Packs current index files name (as last loaded).
    pub indexed: Mask,
    /// Packs in the last listing.
    pub listing: Mask,
    /// Writer: packs already deleted at the time of its listing (for I2).
    pub gone: Mask,
    /// Writer: packs it deduplicated against.
    pub uses: Mask,
    /// Writer: blobs it must upload.
    pub missing: u8,
    /// Writer: its pack; prune: the index file it wrote last.
    pub pack: u8,
    /// Writer: its index file.
    pub index: u8,
    /// Writer: its snapshot.
    pub snap: u8,
    /// Prune: measured offset of its clock against server time.
    pub est_offset: Time,
    /// Prune: server time its session file landed (until measured).
    pub c1: Time,
    /// Prune: current markers.
    pub mcur: Mask,
    /// Prune: superseded markers that exist.
    pub msup: Mask,
    /// Prune: markers due.
    pub due: Mask,
    /// Prune: due markers not postponed.
    pub sweepable: Mask,
    /// Prune: blobs referenced by the snapshots read.
    pub referenced: u8,
    /// Prune: current index files.
    pub icur: Mask,
    /// Prune: superseded index files that exist.
    pub isup: Mask,
    /// Prune (sweep): packs to delete.
    pub delete: Mask,
    /// Prune (sweep): packs rescued.
    pub rescue: Mask,
    /// Prune (sweep): current index files naming packs to delete.
    pub naming: Mask,
    /// Prune (sweep): the rescue marker it wrote, or [`NOBODY`].
    pub rescue_marker: u8,
    /// Prune: the batch being deleted.
    pub batch: Mask,
    /// Prune: the batch after it.
    pub batch2: Mask,
    /// Prune: the batch after that.
    pub batch3: Mask,
    /// Prune: the lease was checked for the current batch.
    pub batch_checked: bool,
    /// Prune: the lease was checked for the next write (with [`Env::prune_check_gap`]).
    pub write_checked: bool,
    /// Prune (mark): packs to mark.
    pub to_mark: Mask,
    /// Prune (mark): the clock reading for the marker.
    pub mark_time: Time,
    /// Prune (mark): indexed packs missing from the listing.
    pub missing_packs: Mask,
    /// Prune (mark): current index files naming them.
    pub naming_missing: Mask,
}

/// One process's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Proc {
    /// Life stage.
    pub status: Status,
    /// Next main-thread step.
    pub pc: Pc,
    /// Generation of its newest session file.
    pub gen: u8,
    /// Session start, own clock.
    pub start: Time,
    /// The lease is valid while now < `lease_end` (true time) and not `lost`.
    pub lease_end: Time,
    /// The lease was observed expired (sticky).
    pub lost: bool,
    /// Start of the last heartbeat (true time).
    pub last_hb: Time,
    /// Heartbeat thread.
    pub hb: Hb,
    /// What it read and decided.
    pub m: Mem,
    /// Prune: runs already ended.
    pub runs: u8,
}

// ---------------------------------------------------------------------------------------
// Fixed-capacity vectors (states are cloned millions of times: no heap)
// ---------------------------------------------------------------------------------------

/// A vector of at most `N` items stored inline. Unused slots always hold `T::default()`,
/// so equality may compare them; hashing skips them (fingerprints are the hot path).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Slots<T, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> Default for Slots<T, N> {
    fn default() -> Self {
        Slots {
            len: 0,
            items: [T::default(); N],
        }
    }
}

impl<T: Copy + Default, const N: usize> Slots<T, N> {
    /// Appends; returns the new item's index. Panics if full (a model bound).
    pub fn push(&mut self, t: T) -> u8 {
        assert!(
            (self.len as usize) < N,
            "model bound exceeded: more than {N} items"
        );
        self.items[self.len as usize] = t;
        self.len += 1;
        self.len - 1
    }
    /// The items.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len as usize]
    }
    /// The items, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len as usize]
    }
    /// Removes the item at `i`, keeping the order of the others.
    pub fn remove(&mut self, i: usize) {
        let n = self.len as usize;
        self.items.copy_within(i + 1..n, i);
        self.items[n - 1] = T::default();
        self.len -= 1;
    }
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// No items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy + Default + Hash, const N: usize> Hash for Slots<T, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.len);
        for t in self.as_slice() {
            t.hash(state);
        }
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Index<usize> for Slots<T, N> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.as_slice()[i]
    }
}

impl<T: Copy + Default, const N: usize> std::ops::IndexMut<usize> for Slots<T, N> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.as_mut_slice()[i]
    }
}

impl<T: fmt::Debug + Copy + Default, const N: usize> fmt::Debug for Slots<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

// ---------------------------------------------------------------------------------------
// The state
// ---------------------------------------------------------------------------------------

/// Everything that determines the future: the server's files, the processes, the
/// adversary's remaining budgets. Times are relative to now. This is what the explorer
/// deduplicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct World {
    /// Packs by ID.
    pub packs: Slots<Pack, 16>,
    /// Index files by ID.
    pub index: Slots<IndexFile, 16>,
    /// Snapshots by ID.
    pub snaps: Slots<Snapshot, 8>,
    /// gc markers by ID.
    pub markers: Slots<Marker, 16>,
    /// Existing session files.
    pub sessions: Slots<SessionFile, 12>,
    /// Processes, in the order of [`Config::procs`] (the extra last one is the final prune
    /// of [`Config::check_quiescent`]).
    pub procs: Slots<Proc, 7>,
    /// Time advances taken.
    pub advances: u8,
    /// Crashes taken.
    pub crashes: u8,
    /// Snapshots forgotten.
    pub forgets: u8,
}

/// A [`World`] plus what only matters to humans: the absolute time, and (when replaying a
/// trace) a log of what each step did.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The model state.
    pub world: World,
    /// Absolute minutes since the start (for traces).
    pub elapsed: Time,
    /// Descriptions of the steps taken, when logging.
    pub log: Option<Vec<String>>,
}

impl State {
    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            log.push(f());
        }
    }
}

impl World {
    /// Moves time forward by `d`: every stored time becomes `d` older.
    fn shift(&mut self, d: Time) {
        for p in self.packs.as_mut_slice() {
            p.mtime -= d;
        }
        for m in self.markers.as_mut_slice() {
            m.mark_time -= d;
            m.mtime -= d;
        }
        for s in self.sessions.as_mut_slice() {
            s.start -= d;
            s.heartbeat -= d;
            s.mtime -= d;
        }
        for p in self.procs.as_mut_slice() {
            if p.status != Status::Running {
                continue;
            }
            p.start -= d;
            p.lease_end -= d;
            p.last_hb -= d;
            if let Hb::Landing(t0) = &mut p.hb {
                *t0 -= d;
            }
            if p.pc == Pc::Measure {
                p.m.c1 -= d;
            }
            if p.pc == Pc::MarkLand {
                p.m.mark_time -= d;
            }
        }
    }

    /// Current markers (not superseded by an existing marker), and the existing markers
    /// that are superseded.
    pub fn marker_view(&self) -> (Mask, Mask) {
        let mut exist = 0;
        let mut sup = 0;
        for (i, m) in self.markers.as_slice().iter().enumerate() {
            if m.exists {
                exist |= bit(i);
                sup |= m.supersedes;
            }
        }
        (exist & !sup, exist & sup)
    }

    /// Packs listed by the given markers.
    pub fn packs_of_markers(&self, ms: Mask) -> Mask {
        bits(ms).fold(0, |a, i| a | self.markers[i].packs)
    }

    /// Current index files (not superseded by an existing file), and existing superseded
    /// ones.
    pub fn index_view(&self) -> (Mask, Mask) {
        let mut exist = 0;
        let mut sup = 0;
        for (i, f) in self.index.as_slice().iter().enumerate() {
            if f.exists {
                exist |= bit(i);
                sup |= f.supersedes;
            }
        }
        (exist & !sup, exist & sup)
    }

    /// Packs named by the given index files.
    pub fn packs_of_files(&self, fs: Mask) -> Mask {
        bits(fs).fold(0, |a, i| a | self.index[i].packs)
    }

    /// Packs that exist.
    pub fn existing_packs(&self) -> Mask {
        let mut m = 0;
        for (i, p) in self.packs.as_slice().iter().enumerate() {
            if p.exists {
                m |= bit(i);
            }
        }
        m
    }

    /// Packs that were written and deleted.
    pub fn deleted_packs(&self) -> Mask {
        let all = if self.packs.is_empty() {
            0
        } else {
            Mask::MAX >> (32 - self.packs.len())
        };
        all & !self.existing_packs()
    }

    /// Blobs held by the given packs.
    pub fn blobs_in(&self, packs: Mask) -> u8 {
        bits(packs).fold(0, |a, i| a | self.packs[i].blobs)
    }

    /// Blobs referenced by existing snapshots.
    pub fn referenced(&self) -> u8 {
        self.snaps
            .as_slice()
            .iter()
            .filter(|s| s.exists)
            .fold(0, |a, s| a | s.blobs)
    }

    /// Blobs a reader can restore: in a pack that a current index file names and that
    /// exists.
    pub fn restorable_blobs(&self) -> u8 {
        let (cur, _) = self.index_view();
        self.blobs_in(self.packs_of_files(cur) & self.existing_packs())
    }

    fn session_pos(&self, owner: usize, run: u8, gen: u8) -> Option<usize> {
        self.sessions
            .as_slice()
            .iter()
            .position(|s| s.owner as usize == owner && s.run == run && s.gen == gen)
    }

    /// Whether `s` belongs to the current run of process `p`.
    fn own(&self, s: &SessionFile, p: usize) -> bool {
        s.owner as usize == p && s.run == self.procs[p].runs
    }

    fn delete_sessions_of(&mut self, owner: usize) {
        let run = self.procs[owner].runs;
        while let Some(i) = self
            .sessions
            .as_slice()
            .iter()
            .position(|s| s.owner as usize == owner && s.run == run)
        {
            self.sessions.remove(i);
        }
    }

    /// All processes have ended.
    pub fn quiescent(&self) -> bool {
        self.procs.as_slice().iter().all(|p| p.status.terminal())
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// One process of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSpec {
    /// Writer or prune.
    pub role: Role,
    /// Its clock minus true time.
    pub offset: Time,
    /// Writer: the blobs its snapshot references.
    pub wants: u8,
    /// The adversary may crash it.
    pub may_crash: bool,
    /// It may take heartbeats (off shrinks the state space where they are irrelevant).
    pub heartbeats: bool,
    /// Prune: the safety margin.
    pub margin: Time,
    /// Prune: how many runs, one after the other (a cron job); each run after the first
    /// may start once the previous one has ended (and not crashed).
    pub runs: u8,
}

impl ProcSpec {
    /// A writer wanting `wants`, clock offset `offset`, crashable, heartbeating.
    pub fn writer(wants: u8, offset: Time) -> ProcSpec {
        ProcSpec {
            role: Role::Writer,
            offset,
            wants,
            may_crash: true,
            heartbeats: true,
            margin: 0,
            runs: 1,
        }
    }
    /// A prune at margin 0 with clock offset `offset`, crashable, heartbeating.
    pub fn prune(offset: Time) -> ProcSpec {
        ProcSpec {
            role: Role::Prune,
            offset,
            wants: 0,
            may_crash: true,
            heartbeats: true,
            margin: 0,
            runs: 1,
        }
    }
    /// `n` sequential runs.
    pub fn runs(mut self, n: u8) -> ProcSpec {
        self.runs = n;
        self
    }
    /// Not crashable.
    pub fn no_crash(mut self) -> ProcSpec {
        self.may_crash = false;
        self
    }
    /// No heartbeats.
    pub fn no_heartbeat(mut self) -> ProcSpec {
        self.heartbeats = false;
        self
    }
    /// The prune [`Config::check_quiescent`] runs.
    pub fn final_prune() -> ProcSpec {
        ProcSpec::prune(0).no_crash().no_heartbeat()
    }
}

/// The repository a scenario starts from. Every initial file is there from the start
/// (mtime in the past) and every initial snapshot is committed unless listed in
/// `uncommitted`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repo {
    /// Packs: blob masks, and whether the pack exists (a deleted one can still be named by
    /// an index file, to start from a leftover of the known residual).
    pub packs: Vec<(u8, bool)>,
    /// Index files: pack masks.
    pub index: Vec<Mask>,
    /// Committed snapshots: blob masks.
    pub snaps: Vec<u8>,
    /// Uncommitted snapshots (leftovers of a killed writer whose PUT landed after its
    /// lease): blob masks.
    pub uncommitted: Vec<u8>,
    /// Markers: (mark_time relative to the start, pack mask).
    pub markers: Vec<(Time, Mask)>,
}

impl Repo {
    /// `P0 = {b0}`, `P1 = {b1}`, one index file naming both, one snapshot referencing
    /// `b0`: P1 is garbage a prune will mark.
    pub fn standard() -> Repo {
        Repo {
            packs: vec![(0b01, true), (0b10, true)],
            index: vec![0b11],
            snaps: vec![0b01],
            uncommitted: vec![],
            markers: vec![],
        }
    }
    /// [`Repo::standard`] with P1 already marked 20 minutes ago (due at margin 0).
    pub fn marked() -> Repo {
        Repo {
            markers: vec![(-20, 0b10)],
            ..Repo::standard()
        }
    }
}

/// The adversary's powers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// Durations by which time may advance in one [`Action::Advance`].
    pub advances: Vec<Time>,
    /// At most this many advances.
    pub max_advances: u8,
    /// At most this many crashes and batch-delete failures together.
    pub max_crashes: u8,
    /// At most this many `forget`s of finished snapshots.
    pub max_forgets: u8,
    /// A prune's lease check and the write or delete it guards are separate steps, so a
    /// stall can fall between them (a process stopped after checking, before its request
    /// is sent). Off: check and action are atomic, as the protocol assumes.
    pub prune_check_gap: bool,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            advances: vec![10, 75],
            max_advances: 2,
            max_crashes: 1,
            max_forgets: 0,
            prune_check_gap: false,
        }
    }
}

/// A scenario: protocol variant, adversary, processes, starting repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Which safeguards are on.
    pub sg: Safeguards,
    /// The adversary.
    pub env: Env,
    /// The processes (at most 6).
    pub procs: Vec<ProcSpec>,
    /// The starting repository.
    pub repo: Repo,
    /// Check invariant I2 (writer views) as well as I1.
    pub check_i2: bool,
    /// Check invariant I3 in quiescent states.
    pub check_i3: bool,
}

/// Which invariant was violated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// A committed (or protected) snapshot references a blob no existing pack holds.
    I1NoLoss,
    /// A writer deduplicated against a pack that was already deleted when it listed packs.
    I2NoPoisoning,
    /// After a final prune: an index entry names a missing pack or a snapshot cannot be
    /// restored, and the prune did not refuse.
    I3Quiescent,
}

/// A violated invariant and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.invariant, self.detail)
    }
}

/// One move of the adversary/scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Process `p` takes its next main-thread step.
    Step(u8),
    /// Process `p` deletes item `i` of its current batch (S3 `DeleteObjects` deletes in no
    /// particular order).
    Pick(u8, u8),
    /// Process `p`'s heartbeat thread takes its next step.
    Heartbeat(u8),
    /// Process `p` vanishes (kill -9, power loss).
    Crash(u8),
    /// The rest of process `p`'s batch delete fails (S3 `DeleteObjects` reports per-key
    /// errors); the prune gives up cleanly (deleting its session).
    FailBatch(u8),
    /// Time passes by this many minutes; every process not scheduled meanwhile is paused.
    Advance(Time),
    /// A user forgets (deletes) finished snapshot `s`.
    Forget(u8),
}

fn blob_names(m: u8) -> String {
    let v: Vec<String> = (0..8)
        .filter(|i| m & (1 << i) != 0)
        .map(|i| format!("b{i}"))
        .collect();
    format!("{{{}}}", v.join(","))
}

fn id_names(prefix: &str, m: Mask) -> String {
    let v: Vec<String> = bits(m).map(|i| format!("{prefix}{i}")).collect();
    format!("{{{}}}", v.join(","))
}

impl Config {
    /// A scenario with the given safeguards, processes and repository, default adversary,
    /// all invariants checked.
    pub fn new(sg: Safeguards, procs: Vec<ProcSpec>, repo: Repo) -> Config {
        assert!(procs.len() <= 6, "at most 6 processes");
        Config {
            sg,
            env: Env::default(),
            procs,
            repo,
            check_i2: true,
            check_i3: true,
        }
    }

    /// The spec of process `p` (the one past the end is the final prune).
    pub fn spec(&self, p: usize) -> ProcSpec {
        self.procs
            .get(p)
            .copied()
            .unwrap_or_else(ProcSpec::final_prune)
    }

    /// The starting state.
    pub fn initial(&self) -> State {
        let mut w = World::default();
        for &(blobs, exists) in &self.repo.packs {
            w.packs.push(Pack {
                blobs,
                mtime: -200,
                exists,
                by: NOBODY,
            });
        }
        for &packs in &self.repo.index {
            w.index.push(IndexFile {
                packs,
                supersedes: 0,
                exists: true,
                by: NOBODY,
            });
        }
        for &blobs in &self.repo.snaps {
            w.snaps.push(Snapshot {
                blobs,
                by: NOBODY,
                exists: true,
                committed: true,
                protected: true,
            });
        }
        for &blobs in &self.repo.uncommitted {
            w.snaps.push(Snapshot {
                blobs,
                by: NOBODY,
                exists: true,
                committed: false,
                protected: false,
            });
        }
        for &(t, packs) in &self.repo.markers {
            w.markers.push(Marker {
                mark_time: t,
                mtime: t,
                packs,
                supersedes: 0,
                exists: true,
                by: NOBODY,
            });
        }
        for _ in &self.procs {
            w.procs.push(Proc::default());
        }
        State {
            world: w,
            elapsed: 0,
            log: None,
        }
    }

    fn writer_order(&self) -> [Load; 3] {
        if self.sg.writer_lists_packs_after_markers {
            [Load::Markers, Load::Index, Load::Packs]
        } else {
            [Load::Packs, Load::Index, Load::Markers]
        }
    }

    fn sweep_order(&self) -> [SweepRead; 3] {
        let mut o = if self.sg.sweep_sessions_before_snapshots {
            [SweepRead::Sessions, SweepRead::Snapshots, SweepRead::Index]
        } else {
            [SweepRead::Snapshots, SweepRead::Sessions, SweepRead::Index]
        };
        if !self.sg.sweep_read_order {
            let s = o.iter().position(|r| *r == SweepRead::Snapshots).unwrap();
            let i = o.iter().position(|r| *r == SweepRead::Index).unwrap();
            o.swap(s, i);
        }
        o
    }

    /// Every move possible in `st`.
    pub fn actions(&self, st: &State) -> Vec<Action> {
        let w = &st.world;
        let mut out = Vec::new();
        for (i, p) in w.procs.as_slice().iter().enumerate() {
            let spec = self.spec(i);
            let i8 = i as u8;
            match p.status {
                Status::NotStarted => out.push(Action::Step(i8)),
                Status::Running => {
                    match p.pc {
                        Pc::Batch(_)
                            if self.env.prune_check_gap
                                && self.sg.prune_lease
                                && !p.m.batch_checked =>
                        {
                            out.push(Action::Step(i8));
                        }
                        Pc::Batch(_) => {
                            for j in bits(p.m.batch) {
                                out.push(Action::Pick(i8, j as u8));
                            }
                        }
                        Pc::End | Pc::Finish if p.hb != Hb::Idle => {}
                        _ => out.push(Action::Step(i8)),
                    }
                    if self.heartbeat_enabled(&spec, p) {
                        out.push(Action::Heartbeat(i8));
                    }
                    if spec.may_crash && w.crashes < self.env.max_crashes {
                        out.push(Action::Crash(i8));
                        if matches!(p.pc, Pc::Batch(_)) {
                            out.push(Action::FailBatch(i8));
                        }
                    }
                }
                _ => {}
            }
        }
        if w.forgets < self.env.max_forgets {
            for (i, s) in w.snaps.as_slice().iter().enumerate() {
                let finished = s.by == NOBODY
                    || w.procs
                        .as_slice()
                        .get(s.by as usize)
                        .is_some_and(|p| p.status.terminal());
                if s.exists && s.committed && finished {
                    out.push(Action::Forget(i as u8));
                }
            }
        }
        if w.advances < self.env.max_advances && !w.quiescent() {
            for &d in &self.env.advances {
                out.push(Action::Advance(d));
            }
        }
        out
    }

    fn heartbeat_enabled(&self, spec: &ProcSpec, p: &Proc) -> bool {
        if !spec.heartbeats || p.status != Status::Running || p.pc == Pc::Start {
            return false;
        }
        match p.hb {
            Hb::Idle => {
                !(self.sg.lease_sticky && p.lost)
                    && -p.last_hb >= HEARTBEAT
                    && !matches!(p.pc, Pc::End | Pc::Finish)
            }
            _ => true,
        }
    }

    /// Applies `a` to `st` and checks the invariants that must hold after every step.
    pub fn step(&self, st: &mut State, a: Action) -> Result<(), Violation> {
        match a {
            Action::Advance(d) => {
                st.world.shift(d);
                st.world.advances += 1;
                st.elapsed += d;
                st.note(|| format!("time passes: +{d} min"));
            }
            Action::Crash(p) => {
                let p = p as usize;
                st.world.crashes += 1;
                // A prune with runs left is started again later (a cron job).
                let runs = st.world.procs[p].runs + 1;
                let again = runs < self.spec(p).runs;
                st.world.procs[p] = Proc {
                    status: if again {
                        Status::NotStarted
                    } else {
                        Status::Crashed
                    },
                    runs,
                    ..Proc::default()
                };
                st.note(|| format!("#{p} crashes (its files stay)"));
            }
            Action::FailBatch(p) => {
                st.world.crashes += 1;
                st.note(|| format!("#{p}: the rest of its batch delete fails"));
                self.terminate(st, p as usize, Status::Failed);
            }
            Action::Forget(s) => {
                st.world.forgets += 1;
                st.world.snaps[s as usize].exists = false;
                st.note(|| format!("user forgets snapshot S{s}"));
            }
            Action::Heartbeat(p) => self.heartbeat(st, p as usize),
            Action::Step(p) => {
                let p = p as usize;
                match self.spec(p).role {
                    Role::Writer => self.writer_step(st, p)?,
                    Role::Prune => self.prune_step(st, p),
                }
            }
            Action::Pick(p, i) => self.pick(st, p as usize, i as usize),
        }
        self.check(st)
    }

    // -----------------------------------------------------------------------------------
    // Leases
    // -----------------------------------------------------------------------------------

    /// The process checks its lease (an observation: with `lease_sticky`, an expired lease
    /// becomes lost for good).
    fn check_lease(&self, w: &mut World, p: usize) -> bool {
        let pr = &mut w.procs[p];
        if self.sg.lease_sticky {
            if pr.lost {
                return false;
            }
            if pr.lease_end <= 0 {
                pr.lost = true;
                return false;
            }
            true
        } else {
            pr.lease_end > 0
        }
    }

    fn lease_really_valid(p: &Proc) -> bool {
        !p.lost && p.lease_end > 0
    }

    fn heartbeat(&self, st: &mut State, p: usize) {
        let spec = self.spec(p);
        let w = &mut st.world;
        match w.procs[p].hb {
            Hb::Idle => {
                w.procs[p].hb = Hb::Landing(0);
                w.procs[p].last_hb = 0;
                st.note(|| format!("#{p} heartbeat: reads lease start t0"));
            }
            Hb::Landing(t0) => {
                let pr = w.procs[p];
                let gen = pr.gen + 1;
                w.sessions.push(SessionFile {
                    owner: p as u8,
                    gen,
                    run: pr.runs,
                    prune: spec.role == Role::Prune,
                    start: pr.start,
                    heartbeat: spec.offset,
                    mtime: 0,
                });
                let pr = &mut w.procs[p];
                let old = pr.gen;
                pr.gen = gen;
                pr.hb = Hb::Deleting(old);
                let renewed = if self.sg.lease_sticky {
                    if Self::lease_really_valid(pr) {
                        pr.lease_end = t0 + LEASE;
                        true
                    } else {
                        pr.lost = true;
                        false
                    }
                } else {
                    pr.lease_end = t0 + LEASE;
                    true
                };
                st.note(|| {
                    format!(
                        "#{p} heartbeat: new session file lands; lease {}",
                        if renewed {
                            "renewed"
                        } else {
                            "stays lost (lapsed)"
                        }
                    )
                });
            }
            Hb::Deleting(old) => {
                if let Some(i) = w.session_pos(p, w.procs[p].runs, old) {
                    w.sessions.remove(i);
                }
                w.procs[p].hb = Hb::Idle;
                st.note(|| format!("#{p} heartbeat: deletes the old session file"));
            }
        }
    }

    /// Ends process `p` with `status`, deleting its session files (a process that ends
    /// cleanly removes its session; the heartbeat thread is joined first).
    fn terminate(&self, st: &mut State, p: usize, status: Status) {
        st.world.delete_sessions_of(p);
        let runs = st.world.procs[p].runs + 1;
        let again = runs < self.spec(p).runs;
        st.world.procs[p] = Proc {
            status: if again { Status::NotStarted } else { status },
            runs,
            ..Proc::default()
        };
        st.note(|| {
            if again {
                format!("#{p} ends: {status:?} (run {runs}; may run again)")
            } else {
                format!("#{p} ends: {status:?}")
            }
        });
    }

    // -----------------------------------------------------------------------------------
    // Writer
    // -----------------------------------------------------------------------------------

    fn writer_step(&self, st: &mut State, p: usize) -> Result<(), Violation> {
        let spec = self.spec(p);
        let sg = self.sg;
        let pc = st.world.procs[p].pc;
        match pc {
            Pc::Start => {
                let o = spec.offset;
                st.world.sessions.push(SessionFile {
                    owner: p as u8,
                    gen: 0,
                    run: st.world.procs[p].runs,
                    prune: false,
                    start: o,
                    heartbeat: o,
                    mtime: 0,
                });
                let pr = &mut st.world.procs[p];
                pr.status = Status::Running;
                pr.start = o;
                pr.lease_end = LEASE;
                pr.last_hb = 0;
                let e = st.elapsed;
                st.note(|| format!("#{p} writer: writes its session (start {} by its clock), measures skew {o}", e + o));
                if sg.skew_refusal && o.abs() > SKEW / 2 {
                    self.terminate(st, p, Status::Refused);
                } else {
                    st.world.procs[p].pc = Pc::Load(0);
                }
            }
            Pc::Load(k) => {
                let what = self.writer_order()[k as usize];
                let w = &mut st.world;
                match what {
                    Load::Markers => {
                        let (cur, _) = w.marker_view();
                        w.procs[p].m.marked = w.packs_of_markers(cur);
                    }
                    Load::Index => {
                        let (cur, _) = w.index_view();
                        w.procs[p].m.indexed = w.packs_of_files(cur);
                    }
                    Load::Packs => {
                        w.procs[p].m.listing = w.existing_packs();
                        w.procs[p].m.gone = w.deleted_packs();
                    }
                }
                let m = w.procs[p].m;
                st.note(|| match what {
                    Load::Markers => format!(
                        "#{p} writer: loads markers: marked {}",
                        id_names("P", m.marked)
                    ),
                    Load::Index => format!(
                        "#{p} writer: loads index: indexed {}",
                        id_names("P", m.indexed)
                    ),
                    Load::Packs => {
                        format!("#{p} writer: lists packs: {}", id_names("P", m.listing))
                    }
                });
                if k < 2 {
                    st.world.procs[p].pc = Pc::Load(k + 1);
                } else {
                    return self.writer_view(st, p);
                }
            }
            Pc::Upload => {
                let w = &mut st.world;
                let missing = w.procs[p].m.missing;
                let id = w.packs.push(Pack {
                    blobs: missing,
                    mtime: 0,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.pack = id;
                w.procs[p].pc = if sg.index_writes_gated {
                    Pc::IndexCheck
                } else {
                    Pc::IndexLand
                };
                st.note(|| format!("#{p} writer: uploads pack P{id} = {}", blob_names(missing)));
            }
            Pc::IndexCheck => {
                let ok = self.check_lease(&mut st.world, p);
                st.note(|| {
                    format!(
                        "#{p} writer: lease check before index write: {}",
                        ok_lost(ok)
                    )
                });
                if ok {
                    st.world.procs[p].pc = Pc::IndexLand;
                } else {
                    self.terminate(st, p, Status::Failed);
                }
            }
            Pc::IndexLand => {
                let w = &mut st.world;
                let pack = w.procs[p].m.pack;
                let id = w.index.push(IndexFile {
                    packs: bit(pack as usize),
                    supersedes: 0,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.index = id;
                w.procs[p].pc = if sg.index_writes_gated && sg.lease_checked_after_write {
                    Pc::IndexCheckAfter
                } else {
                    self.writer_after_index()
                };
                st.note(|| format!("#{p} writer: index file I{id} lands, naming P{pack}"));
            }
            Pc::IndexCheckAfter => {
                let ok = self.check_lease(&mut st.world, p);
                st.note(|| {
                    format!(
                        "#{p} writer: lease check after index write: {}",
                        ok_lost(ok)
                    )
                });
                st.world.procs[p].pc = if ok {
                    self.writer_after_index()
                } else {
                    Pc::IndexUndo
                };
            }
            Pc::IndexUndo => {
                let id = st.world.procs[p].m.index;
                if sg.writer_keeps_landed_index {
                    st.note(|| format!("#{p} writer: leaves its index file I{id}"));
                } else {
                    st.world.index[id as usize].exists = false;
                    st.note(|| format!("#{p} writer: deletes its index file I{id}"));
                }
                self.terminate(st, p, Status::Failed);
            }
            Pc::SnapCheck => {
                let ok = self.check_lease(&mut st.world, p);
                st.note(|| {
                    format!(
                        "#{p} writer: lease check before snapshot write: {}",
                        ok_lost(ok)
                    )
                });
                if ok {
                    st.world.procs[p].pc = Pc::SnapLand;
                } else {
                    self.terminate(st, p, Status::Failed);
                }
            }
            Pc::SnapLand => {
                let w = &mut st.world;
                let protected = Self::lease_really_valid(&w.procs[p]);
                let checked = sg.snapshot_write_gated && sg.lease_checked_after_write;
                let id = w.snaps.push(Snapshot {
                    blobs: spec.wants,
                    by: p as u8,
                    exists: true,
                    committed: !checked,
                    protected,
                });
                w.procs[p].m.snap = id;
                w.procs[p].pc = if checked { Pc::SnapCheckAfter } else { Pc::End };
                st.note(|| {
                    format!(
                        "#{p} writer: snapshot S{id} = {} lands (lease really {})",
                        blob_names(spec.wants),
                        if protected { "valid" } else { "expired" }
                    )
                });
            }
            Pc::SnapCheckAfter => {
                let ok = self.check_lease(&mut st.world, p);
                st.note(|| {
                    format!(
                        "#{p} writer: lease check after snapshot write: {}",
                        ok_lost(ok)
                    )
                });
                let w = &mut st.world;
                if ok {
                    let id = w.procs[p].m.snap as usize;
                    w.snaps[id].committed = true;
                    w.procs[p].pc = Pc::End;
                } else {
                    w.procs[p].pc = Pc::SnapUndo;
                }
            }
            Pc::SnapUndo => {
                let id = st.world.procs[p].m.snap;
                st.world.snaps[id as usize].exists = false;
                st.note(|| format!("#{p} writer: deletes its snapshot S{id}"));
                self.terminate(st, p, Status::Failed);
            }
            Pc::End => {
                st.note(|| format!("#{p} writer: deletes its session"));
                self.terminate(st, p, Status::Done);
            }
            other => unreachable!("writer at {other:?}"),
        }
        Ok(())
    }

    fn writer_after_index(&self) -> Pc {
        if self.sg.snapshot_write_gated {
            Pc::SnapCheck
        } else {
            Pc::SnapLand
        }
    }

    /// After the three loads: which blobs the writer finds, which it must upload.
    fn writer_view(&self, st: &mut State, p: usize) -> Result<(), Violation> {
        let spec = self.spec(p);
        let sg = self.sg;
        let w = &mut st.world;
        let m = w.procs[p].m;
        let mut usable = m.indexed;
        if sg.writer_ignores_marked {
            usable &= !m.marked;
        }
        if sg.writer_checks_pack_exists {
            usable &= m.listing;
        }
        let mut uses = 0;
        let mut missing = 0u8;
        for b in 0..8 {
            if spec.wants & (1 << b) == 0 {
                continue;
            }
            match bits(usable).find(|&q| w.packs[q].blobs & (1 << b) != 0) {
                Some(q) => uses |= bit(q),
                None => missing |= 1 << b,
            }
        }
        let pr = &mut w.procs[p];
        pr.m.uses = uses;
        pr.m.missing = missing;
        let gone = m.gone;
        // What the writer needed only to decide is forgotten (smaller state space).
        pr.m.marked = 0;
        pr.m.indexed = 0;
        pr.m.listing = 0;
        pr.m.gone = 0;
        pr.pc = if missing != 0 {
            Pc::Upload
        } else {
            self.writer_after_index()
        };
        st.note(|| {
            format!(
                "#{p} writer: deduplicates against {}, must upload {}",
                id_names("P", uses),
                blob_names(missing)
            )
        });
        if self.check_i2 && uses & gone != 0 {
            return Err(Violation {
                invariant: Invariant::I2NoPoisoning,
                detail: format!(
                    "writer #{p} deduplicates against {}, deleted before its listing",
                    id_names("P", uses & gone)
                ),
            });
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Prune
    // -----------------------------------------------------------------------------------

    /// The prune's idea of server time now.
    fn est_now(&self, p: usize, w: &World) -> Time {
        let o = self.spec(p).offset;
        if self.sg.prune_uses_server_time {
            o - w.procs[p].m.est_offset
        } else {
            o
        }
    }

    /// Whether the prune `p` considers session `s` live.
    fn live(&self, p: usize, w: &World, s: &SessionFile) -> bool {
        self.est_now(p, w) - s.mtime <= STALE + SKEW
    }

    /// Starts of the live writer sessions, as prune `p` judges them.
    fn live_writer_starts(&self, p: usize, w: &World) -> Vec<Time> {
        w.sessions
            .as_slice()
            .iter()
            .filter(|s| !s.prune && self.live(p, w, s))
            .map(|s| s.start)
            .collect()
    }

    fn prune_step(&self, st: &mut State, p: usize) {
        let spec = self.spec(p);
        let sg = self.sg;
        let pc = st.world.procs[p].pc;
        match pc {
            Pc::Start => {
                let o = spec.offset;
                st.world.sessions.push(SessionFile {
                    owner: p as u8,
                    gen: 0,
                    run: st.world.procs[p].runs,
                    prune: true,
                    start: o,
                    heartbeat: o,
                    mtime: 0,
                });
                let pr = &mut st.world.procs[p];
                pr.status = Status::Running;
                pr.start = o;
                pr.lease_end = LEASE;
                pr.last_hb = 0;
                pr.m.c1 = 0;
                pr.m.rescue_marker = NOBODY;
                pr.pc = Pc::Measure;
                st.note(|| format!("#{p} prune: writes its session"));
            }
            Pc::Measure => {
                let w = &mut st.world;
                let c1 = w.procs[p].m.c1;
                w.procs[p].m.est_offset = spec.offset - c1;
                w.procs[p].m.c1 = 0;
                let other = w
                    .sessions
                    .as_slice()
                    .iter()
                    .any(|s| s.prune && !w.own(s, p) && self.live(p, w, s));
                let off = w.procs[p].m.est_offset;
                st.note(|| format!("#{p} prune: measures its clock offset as {off} (true {}), lists sessions: other live prune: {other}", spec.offset));
                if other && sg.prune_refuses_concurrent {
                    self.terminate(st, p, Status::Refused);
                } else {
                    st.world.procs[p].pc = Pc::SweepPrep;
                }
            }
            Pc::SweepPrep => {
                let w = &mut st.world;
                let (cur, sup) = w.marker_view();
                let now = self.est_now(p, w);
                let due = bits(cur)
                    .filter(|&i| now - w.markers[i].mark_time >= spec.margin)
                    .fold(0, |a, i| a | bit(i));
                let marked = w.packs_of_markers(cur);
                let pr = &mut w.procs[p];
                pr.m.mcur = cur;
                pr.m.msup = sup;
                pr.m.marked = marked;
                pr.m.due = due;
                pr.m.sweepable = due;
                pr.pc = if due != 0 {
                    Pc::SweepRead(0)
                } else {
                    Pc::MarkRead
                };
                st.note(|| {
                    format!(
                        "#{p} sweep: loads markers: current {}, due {}",
                        id_names("M", cur),
                        id_names("M", due)
                    )
                });
            }
            Pc::SweepRead(k) => self.sweep_read(st, p, k),
            Pc::Batch(kind) => {
                // Only with `prune_check_gap`: the lease check before a batch delete.
                if self.check_lease(&mut st.world, p) {
                    st.world.procs[p].m.batch_checked = true;
                    st.note(|| {
                        format!("#{p} prune: lease check before deleting ({kind:?}): valid")
                    });
                } else {
                    st.note(|| format!("#{p} prune: lease lost before deleting ({kind:?})"));
                    self.terminate(st, p, Status::Failed);
                }
            }
            Pc::SweepRescue => {
                if !self.lease_before_write(st, p) {
                    return;
                }
                let w = &mut st.world;
                let m = w.procs[p].m;
                let mark_time = bits(m.sweepable)
                    .map(|i| w.markers[i].mark_time)
                    .min()
                    .unwrap();
                let id = w.markers.push(Marker {
                    mark_time,
                    mtime: 0,
                    packs: m.delete,
                    supersedes: m.sweepable | m.msup,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.rescue_marker = id;
                w.procs[p].pc = if m.naming != 0 {
                    Pc::SweepIndexLand
                } else {
                    Pc::Batch(BatchKind::SweepPacks)
                };
                st.note(|| {
                    format!(
                        "#{p} sweep: rescue marker M{id} lands: packs {}, supersedes {}",
                        id_names("P", m.delete),
                        id_names("M", m.sweepable | m.msup)
                    )
                });
                if m.naming == 0 {
                    self.enter_batch(st, p, BatchKind::SweepPacks);
                }
            }
            Pc::SweepIndexLand => {
                if !self.lease_before_write(st, p) {
                    return;
                }
                let w = &mut st.world;
                let m = w.procs[p].m;
                let packs = w.packs_of_files(m.naming) & !m.delete;
                let id = w.index.push(IndexFile {
                    packs,
                    supersedes: m.naming | m.isup,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.pack = id;
                st.note(|| {
                    format!(
                        "#{p} sweep: index file I{id} lands: packs {}, supersedes {}",
                        id_names("P", packs),
                        id_names("I", m.naming | m.isup)
                    )
                });
                if sg.prune_lease {
                    st.world.procs[p].pc = Pc::SweepIndexCheck;
                } else {
                    self.enter_batch(st, p, BatchKind::SweepPacks);
                }
            }
            Pc::SweepIndexCheck | Pc::MissingCheck => {
                let ok = self.check_lease(&mut st.world, p);
                st.note(|| format!("#{p} prune: lease check after index write: {}", ok_lost(ok)));
                match (ok, pc) {
                    (true, Pc::SweepIndexCheck) => self.enter_batch(st, p, BatchKind::SweepPacks),
                    (true, _) => self.enter_batch(st, p, BatchKind::MissingIndex),
                    (false, Pc::SweepIndexCheck) => st.world.procs[p].pc = Pc::SweepIndexUndo,
                    (false, _) => st.world.procs[p].pc = Pc::MissingUndo,
                }
            }
            Pc::SweepIndexUndo | Pc::MissingUndo => {
                let id = st.world.procs[p].m.pack as usize;
                let supersedes = st.world.index[id].supersedes != 0;
                if sg.prune_keeps_superseding_index && supersedes {
                    st.note(|| {
                        format!("#{p} prune: keeps its index file I{id} (it supersedes others)")
                    });
                } else {
                    st.world.index[id].exists = false;
                    st.note(|| format!("#{p} prune: deletes its index file I{id}"));
                }
                self.terminate(st, p, Status::Failed);
            }
            Pc::MarkRead => {
                let w = &mut st.world;
                let (cur, sup) = w.marker_view();
                let marked = w.packs_of_markers(cur);
                let referenced = w.referenced();
                let pr = &mut w.procs[p];
                pr.m = Mem {
                    est_offset: pr.m.est_offset,
                    rescue_marker: NOBODY,
                    mcur: cur,
                    msup: sup,
                    marked,
                    referenced,
                    ..Mem::default()
                };
                pr.pc = Pc::MarkIndex;
                st.note(|| {
                    format!(
                        "#{p} mark: loads markers (marked {}), reads snapshots: referenced {}",
                        id_names("P", marked),
                        blob_names(referenced)
                    )
                });
            }
            Pc::MarkIndex => {
                let w = &mut st.world;
                let (cur, sup) = w.index_view();
                let indexed = w.packs_of_files(cur);
                let listing = w.existing_packs();
                let pr = &mut w.procs[p];
                pr.m.icur = cur;
                pr.m.isup = sup;
                pr.m.indexed = indexed;
                pr.m.listing = listing;
                pr.pc = Pc::MarkSessions;
                st.note(|| {
                    format!(
                        "#{p} mark: reads index (indexed {}), lists packs {}",
                        id_names("P", indexed),
                        id_names("P", listing)
                    )
                });
            }
            Pc::MarkSessions => self.mark_decide(st, p),
            Pc::MarkClock => {
                let now = self.est_now(p, &st.world);
                st.world.procs[p].m.mark_time = now;
                st.world.procs[p].pc = Pc::MarkLand;
                let e = st.elapsed;
                st.note(|| format!("#{p} mark: reads the clock: mark_time {}", e + now));
            }
            Pc::MarkLand => {
                let w = &mut st.world;
                let m = w.procs[p].m;
                let id = w.markers.push(Marker {
                    mark_time: m.mark_time,
                    mtime: 0,
                    packs: m.to_mark,
                    supersedes: 0,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.mark_time = 0;
                w.procs[p].pc = if m.naming_missing != 0 {
                    Pc::MissingLand
                } else {
                    Pc::Finish
                };
                st.note(|| {
                    format!(
                        "#{p} mark: marker M{id} lands: packs {}",
                        id_names("P", m.to_mark)
                    )
                });
            }
            Pc::MissingLand => {
                if !self.lease_before_write(st, p) {
                    return;
                }
                let w = &mut st.world;
                let m = w.procs[p].m;
                let packs = w.packs_of_files(m.naming_missing) & !m.missing_packs;
                let id = w.index.push(IndexFile {
                    packs,
                    supersedes: m.naming_missing | m.isup,
                    exists: true,
                    by: p as u8,
                });
                w.procs[p].m.pack = id;
                st.note(|| format!("#{p} mark: index file I{id} without missing packs lands: packs {}, supersedes {}", id_names("P", packs), id_names("I", m.naming_missing | m.isup)));
                if sg.prune_lease {
                    st.world.procs[p].pc = Pc::MissingCheck;
                } else {
                    self.enter_batch(st, p, BatchKind::MissingIndex);
                }
            }
            Pc::Finish => {
                if !self.gate(st, p, sg.prune_lease) {
                    return;
                }
                let w = &mut st.world;
                let stale: Vec<(u8, u8, u8)> = w
                    .sessions
                    .as_slice()
                    .iter()
                    .filter(|s| !w.own(s, p) && !self.live(p, w, s))
                    .map(|s| (s.owner, s.run, s.gen))
                    .collect();
                for &(o, r, g) in &stale {
                    let i = w.session_pos(o as usize, r, g).unwrap();
                    w.sessions.remove(i);
                }
                let (_, isup) = w.index_view();
                for i in bits(isup) {
                    w.index[i].exists = false;
                }
                let (_, msup) = w.marker_view();
                for i in bits(msup) {
                    w.markers[i].exists = false;
                }
                st.note(|| {
                    let owners: Vec<String> = stale.iter().map(|(o, _, _)| format!("#{o}")).collect();
                    format!(
                        "#{p} prune: deletes stale sessions of [{}], superseded index files {}, superseded markers {}",
                        owners.join(","),
                        id_names("I", isup),
                        id_names("M", msup)
                    )
                });
                self.terminate(st, p, Status::Done);
            }
            other => unreachable!("prune at {other:?}"),
        }
    }

    /// With the H6/H7 fix, checks the lease before a write; ends the run if lost. With
    /// [`Env::prune_check_gap`] the check is a step of its own (returns false: the write
    /// is the next step).
    fn lease_before_write(&self, st: &mut State, p: usize) -> bool {
        self.gate(
            st,
            p,
            self.sg.prune_lease && self.sg.prune_lease_before_writes,
        )
    }

    /// A lease check guarding the action of this step (if `enabled`): whether to go on
    /// with the action now. False if the lease was lost (the run ends) or if, with
    /// [`Env::prune_check_gap`], this step was the check (the action is the next step).
    fn gate(&self, st: &mut State, p: usize, enabled: bool) -> bool {
        if !enabled {
            return true;
        }
        if self.env.prune_check_gap && st.world.procs[p].m.write_checked {
            st.world.procs[p].m.write_checked = false;
            return true;
        }
        if !self.check_lease(&mut st.world, p) {
            st.note(|| format!("#{p} prune: lease lost before writing"));
            self.terminate(st, p, Status::Failed);
            return false;
        }
        if self.env.prune_check_gap {
            st.world.procs[p].m.write_checked = true;
            st.note(|| format!("#{p} prune: lease check before writing: valid"));
            return false;
        }
        true
    }

    fn sweep_read(&self, st: &mut State, p: usize, k: u8) {
        let what = self.sweep_order()[k as usize];
        let sg = self.sg;
        let w = &mut st.world;
        match what {
            SweepRead::Sessions => {
                let starts = self.live_writer_starts(p, w);
                let m = w.procs[p].m;
                let mut sweepable = m.sweepable;
                for i in bits(m.due) {
                    let mk = w.markers[i];
                    let t = if sg.sweep_uses_marker_mtime {
                        mk.mtime
                    } else {
                        mk.mark_time
                    };
                    if sg.sweep_waits_for_older_writers && starts.iter().any(|&s| s < t + SKEW) {
                        sweepable &= !bit(i);
                    }
                }
                w.procs[p].m.sweepable = sweepable;
                let marker_times: Vec<(Time, Time)> = w
                    .markers
                    .as_slice()
                    .iter()
                    .map(|mk| (mk.mark_time, mk.mtime))
                    .collect();
                let e = st.elapsed;
                st.note(|| {
                    let starts: Vec<Time> = starts.iter().map(|s| s + e).collect();
                    let times: Vec<String> = bits(m.due)
                        .map(|i| format!("M{i} mark_time {} mtime {}", marker_times[i].0 + e, marker_times[i].1 + e))
                        .collect();
                    format!(
                        "#{p} sweep: lists sessions: live writer starts {starts:?}; {}; sweepable {}",
                        times.join(", "),
                        id_names("M", sweepable)
                    )
                });
                if sweepable == 0 {
                    st.world.procs[p].pc = Pc::MarkRead;
                    return;
                }
            }
            SweepRead::Snapshots => {
                let r = w.referenced();
                w.procs[p].m.referenced = r;
                st.note(|| format!("#{p} sweep: reads snapshots: referenced {}", blob_names(r)));
            }
            SweepRead::Index => {
                let (cur, sup) = w.index_view();
                let indexed = w.packs_of_files(cur);
                let listing = w.existing_packs();
                let pr = &mut w.procs[p];
                pr.m.icur = cur;
                pr.m.isup = sup;
                pr.m.indexed = indexed;
                pr.m.listing = listing;
                st.note(|| {
                    format!(
                        "#{p} sweep: reads index (indexed {}), lists packs {}",
                        id_names("P", indexed),
                        id_names("P", listing)
                    )
                });
            }
        }
        if k < 2 {
            st.world.procs[p].pc = Pc::SweepRead(k + 1);
            return;
        }
        // Decide.
        let w = &mut st.world;
        let m = w.procs[p].m;
        let candidates = w.packs_of_markers(m.sweepable);
        let good = m.indexed & m.listing & !m.marked;
        let good_blobs = w.blobs_in(good);
        let mut rescue = 0;
        for q in bits(candidates & m.indexed) {
            if w.packs[q].blobs & m.referenced & !good_blobs != 0 {
                rescue |= bit(q);
            }
        }
        let delete = candidates & !rescue;
        let naming = bits(m.icur)
            .filter(|&f| w.index[f].packs & delete != 0)
            .fold(0, |a, f| a | bit(f));
        let pr = &mut w.procs[p];
        pr.m.delete = delete;
        pr.m.rescue = rescue;
        pr.m.naming = naming;
        st.note(|| {
            format!(
                "#{p} sweep: decides: delete {}, rescue {}, rewrite {}",
                id_names("P", delete),
                id_names("P", rescue),
                id_names("I", naming)
            )
        });
        if rescue != 0 && !sg.rescue_keeps_packs_marked {
            st.world.procs[p].pc = Pc::SweepRescue;
        } else if naming != 0 {
            st.world.procs[p].pc = Pc::SweepIndexLand;
        } else {
            self.enter_batch(st, p, BatchKind::SweepPacks);
        }
    }

    fn mark_decide(&self, st: &mut State, p: usize) {
        let sg = self.sg;
        let w = &mut st.world;
        let starts = self.live_writer_starts(p, w);
        let m = w.procs[p].m;
        let present = m.indexed & m.listing;
        let present_blobs = w.blobs_in(present);
        let unfound = m.referenced & !present_blobs;
        if unfound != 0 && sg.prune_refuses_missing {
            st.note(|| {
                format!(
                    "#{p} mark: snapshots need {} with no indexed existing copy: refuses",
                    blob_names(unfound)
                )
            });
            self.terminate(st, p, Status::RefusedMissing);
            return;
        }
        let missing = m.indexed & !m.listing;
        let unmarked = present & !m.marked;
        let mut used = 0;
        for b in 0..8 {
            if m.referenced & (1 << b) != 0 {
                if let Some(q) = bits(unmarked).find(|&q| w.packs[q].blobs & (1 << b) != 0) {
                    used |= bit(q);
                }
            }
        }
        let garbage = unmarked & !used;
        let orphans = m.listing & !m.indexed & !m.marked;
        let mut orphan_mark = 0;
        for q in bits(orphans) {
            let mtime = w.packs[q].mtime;
            if !sg.orphan_per_pack_rule || !starts.iter().any(|&s| s < mtime + SKEW) {
                orphan_mark |= bit(q);
            }
        }
        let to_mark = garbage | orphan_mark;
        let naming_missing = bits(m.icur)
            .filter(|&f| w.index[f].packs & missing != 0)
            .fold(0, |a, f| a | bit(f));
        let pr = &mut w.procs[p];
        pr.m.to_mark = to_mark;
        pr.m.missing_packs = missing;
        pr.m.naming_missing = naming_missing;
        pr.pc = if to_mark != 0 {
            Pc::MarkClock
        } else if naming_missing != 0 {
            Pc::MissingLand
        } else {
            Pc::Finish
        };
        let e = st.elapsed;
        st.note(|| {
            let starts: Vec<Time> = starts.iter().map(|s| s + e).collect();
            format!(
                "#{p} mark: lists sessions (live writer starts {starts:?}); to mark {} (orphans {}), missing {}",
                id_names("P", to_mark),
                id_names("P", orphan_mark),
                id_names("P", missing)
            )
        });
    }

    /// Sets up batch `kind` (skipping empty batches).
    fn enter_batch(&self, st: &mut State, p: usize, mut kind: BatchKind) {
        loop {
            let m = st.world.procs[p].m;
            // Batches in order; each is one DeleteObjects request.
            let batches: [Mask; 3] = match kind {
                BatchKind::SweepPacks => [m.delete, 0, 0],
                BatchKind::SweepIndex => [m.naming, 0, 0],
                BatchKind::SweepMarkers if self.sg.rescue_keeps_packs_marked => {
                    // Markers listing a rescued pack stay: the pack stays marked.
                    let done = bits(m.sweepable)
                        .filter(|&i| st.world.markers[i].packs & m.rescue == 0)
                        .fold(0, |a, i| a | bit(i));
                    let first = if self.sg.superseded_markers_deleted_first {
                        m.msup
                    } else {
                        0
                    };
                    [first, done & !first, 0]
                }
                BatchKind::SweepMarkers => {
                    let r = if m.rescue_marker == NOBODY {
                        0
                    } else {
                        bit(m.rescue_marker as usize)
                    };
                    let first = if self.sg.superseded_markers_deleted_first {
                        m.msup
                    } else {
                        0
                    };
                    if self.sg.rescue_marker_deleted_last {
                        [first, m.sweepable & !first, r]
                    } else {
                        [first, (m.sweepable | r) & !first, 0]
                    }
                }
                BatchKind::MissingIndex => [m.naming_missing, 0, 0],
            };
            let mut nonempty = batches.into_iter().filter(|&b| b != 0);
            if let Some(a) = nonempty.next() {
                let pr = &mut st.world.procs[p];
                pr.m.batch = a;
                pr.m.batch2 = nonempty.next().unwrap_or(0);
                pr.m.batch3 = nonempty.next().unwrap_or(0);
                pr.m.batch_checked = false;
                pr.pc = Pc::Batch(kind);
                return;
            }
            kind = match kind {
                BatchKind::SweepPacks => BatchKind::SweepIndex,
                BatchKind::SweepIndex => BatchKind::SweepMarkers,
                BatchKind::SweepMarkers => {
                    st.world.procs[p].pc = Pc::MarkRead;
                    return;
                }
                BatchKind::MissingIndex => {
                    st.world.procs[p].pc = Pc::Finish;
                    return;
                }
            };
        }
    }

    fn pick(&self, st: &mut State, p: usize, i: usize) {
        let Pc::Batch(kind) = st.world.procs[p].pc else {
            unreachable!()
        };
        if !st.world.procs[p].m.batch_checked {
            if self.sg.prune_lease && !self.check_lease(&mut st.world, p) {
                st.note(|| format!("#{p} prune: lease lost before deleting ({kind:?})"));
                self.terminate(st, p, Status::Failed);
                return;
            }
            st.world.procs[p].m.batch_checked = true;
        }
        let w = &mut st.world;
        match kind {
            BatchKind::SweepPacks => w.packs[i].exists = false,
            BatchKind::SweepIndex | BatchKind::MissingIndex => w.index[i].exists = false,
            BatchKind::SweepMarkers => w.markers[i].exists = false,
        }
        st.note(|| {
            let name = match kind {
                BatchKind::SweepPacks => format!("pack P{i}"),
                BatchKind::SweepMarkers => format!("marker M{i}"),
                _ => format!("index file I{i}"),
            };
            format!("#{p} prune: deletes {name}")
        });
        let pr = &mut st.world.procs[p];
        pr.m.batch &= !bit(i);
        if pr.m.batch == 0 {
            if pr.m.batch2 != 0 {
                pr.m.batch = pr.m.batch2;
                pr.m.batch2 = pr.m.batch3;
                pr.m.batch3 = 0;
                pr.m.batch_checked = false;
            } else {
                match kind {
                    BatchKind::SweepPacks => self.enter_batch(st, p, BatchKind::SweepIndex),
                    BatchKind::SweepIndex => self.enter_batch(st, p, BatchKind::SweepMarkers),
                    BatchKind::SweepMarkers => st.world.procs[p].pc = Pc::MarkRead,
                    BatchKind::MissingIndex => st.world.procs[p].pc = Pc::Finish,
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Invariants
    // -----------------------------------------------------------------------------------

    /// I1, checked after every step: every existing snapshot that is committed or was
    /// written under a valid lease references only blobs some existing pack holds.
    pub fn check(&self, st: &State) -> Result<(), Violation> {
        let w = &st.world;
        let have = w.blobs_in(w.existing_packs());
        for (i, s) in w.snaps.as_slice().iter().enumerate() {
            if s.exists && (s.committed || s.protected) && s.blobs & !have != 0 {
                return Err(Violation {
                    invariant: Invariant::I1NoLoss,
                    detail: format!(
                        "snapshot S{i} (by #{}, {}) references {} which no existing pack holds",
                        s.by,
                        if s.committed {
                            "committed"
                        } else {
                            "landed under a valid lease"
                        },
                        blob_names(s.blobs & !have)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The known residual: an uncommitted snapshot, written after its writer's lease
    /// expired by a writer that is gone, references a blob no existing pack holds. Not a
    /// violation (nobody was told the backup succeeded) but it must be detectable.
    pub fn residual(&self, w: &World) -> bool {
        let have = w.blobs_in(w.existing_packs());
        w.snaps.as_slice().iter().any(|s| {
            s.exists
                && !s.committed
                && !s.protected
                && (s.by == NOBODY || w.procs[s.by as usize].status.terminal())
                && s.blobs & !have != 0
        })
    }

    /// I3, in a quiescent state: after time passes (every session stale), a full prune at
    /// margin 0 either refuses because of a residual snapshot (detected: counted, fine),
    /// or completes, after which every current index entry names an existing pack and
    /// every existing snapshot is restorable. Then a second prune sweeps what the first
    /// marked, and the same must hold. I1 is checked after every step of both.
    pub fn check_quiescent(&self, st: &State) -> Result<QuiescentOutcome, Violation> {
        let mut s = st.clone();
        let fp = s.world.procs.len();
        assert!(fp < 7);
        s.world.procs.push(Proc::default());
        for run in 0..2 {
            s.world.shift(200);
            s.elapsed += 200;
            s.note(|| format!("time passes: +200 min; final prune #{fp} (run {})", run + 1));
            s.world.procs[fp] = Proc::default();
            while !s.world.procs[fp].status.terminal() {
                let a = match s.world.procs[fp].pc {
                    Pc::Batch(_) => Action::Pick(
                        fp as u8,
                        bits(s.world.procs[fp].m.batch).next().unwrap() as u8,
                    ),
                    _ => Action::Step(fp as u8),
                };
                self.step(&mut s, a)?;
            }
            let status = s.world.procs[fp].status;
            let w = &s.world;
            if status == Status::RefusedMissing {
                if self.residual(w) {
                    return Ok(QuiescentOutcome::ResidualDetected);
                }
                return Err(Violation {
                    invariant: Invariant::I3Quiescent,
                    detail: format!(
                        "final prune run {} refuses: a committed snapshot cannot be restored (its blobs are not indexed in existing packs)",
                        run + 1
                    ),
                });
            }
            if status != Status::Done {
                return Err(Violation {
                    invariant: Invariant::I3Quiescent,
                    detail: format!("final prune run {} ended {status:?}", run + 1),
                });
            }
            let (cur, _) = w.index_view();
            let dangling = w.packs_of_files(cur) & !w.existing_packs();
            if dangling != 0 {
                return Err(Violation {
                    invariant: Invariant::I3Quiescent,
                    detail: format!(
                        "after final prune run {}: current index entries name missing packs {}",
                        run + 1,
                        id_names("P", dangling)
                    ),
                });
            }
            let ok = w.restorable_blobs();
            if let Some((i, sn)) = w
                .snaps
                .as_slice()
                .iter()
                .enumerate()
                .find(|(_, sn)| sn.exists && sn.blobs & !ok != 0)
            {
                return Err(Violation {
                    invariant: Invariant::I3Quiescent,
                    detail: format!(
                        "after final prune run {}: snapshot S{i} ({}) cannot be restored: {} not indexed in an existing pack",
                        run + 1,
                        if sn.committed { "committed" } else { "uncommitted" },
                        blob_names(sn.blobs & !ok)
                    ),
                });
            }
        }
        Ok(QuiescentOutcome::Clean)
    }

    /// Replays `trace` from the initial state with logging on: a readable account of the
    /// steps, and the violation it ends in (including I3 if it ends quiescent).
    pub fn replay(&self, trace: &[Action]) -> (String, Option<Violation>) {
        let mut st = self.initial();
        st.log = Some(Vec::new());
        let mut out = String::new();
        let mut violation = None;
        for (n, &a) in trace.iter().enumerate() {
            let t = st.elapsed;
            let r = self.step(&mut st, a);
            let log = std::mem::take(st.log.as_mut().unwrap());
            let _ = writeln!(out, "{:>3}. t={t:<4} {a:?}: {}", n + 1, log.join("; "));
            if let Err(v) = r {
                violation = Some(v);
                break;
            }
        }
        if violation.is_none() && self.check_i3 && st.world.quiescent() {
            st.log = Some(Vec::new());
            let r = self.check_quiescent(&st);
            let _ = st.log.take().map(|l| {
                for line in l {
                    let _ = writeln!(out, "     (final) {line}");
                }
            });
            if let Err(v) = r {
                violation = Some(v);
            }
        }
        if let Some(v) = &violation {
            let _ = writeln!(out, "  => VIOLATION {v}");
        }
        (out, violation)
    }
}

fn ok_lost(ok: bool) -> &'static str {
    if ok {
        "valid"
    } else {
        "LOST"
    }
}

/// How a quiescent state fared under the final prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuiescentOutcome {
    /// The prune completed and the repository is fully consistent.
    Clean,
    /// The prune refused because of a residual uncommitted snapshot (detected).
    ResidualDetected,
}

// ---------------------------------------------------------------------------------------
// Exploration
// ---------------------------------------------------------------------------------------

/// A 128-bit state fingerprint hasher (two multiply-rotate lanes). States are
/// deduplicated by fingerprint; at the state counts used here (≤ 10^7) a collision is
/// practically impossible (~10^-24).
#[derive(Default)]
struct Fp(u64, u64);

impl Fp {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
        self.1 = (self.1 ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
            .wrapping_add(0x2545_f491_4f6c_dd1d);
    }
    fn finish128(&self) -> u128 {
        fn mix(mut x: u64) -> u64 {
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^ (x >> 33)
        }
        (u128::from(mix(self.0)) << 64) | u128::from(mix(self.1 ^ 0x6a09_e667_f3bc_c909))
    }
}

impl Hasher for Fp {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.finish128() as u64
    }
}

/// The fingerprint of a world.
pub fn fingerprint(w: &World) -> u128 {
    let mut h = Fp::default();
    w.hash(&mut h);
    h.finish128()
}

/// Passes a fingerprint through as its own hash (they are already uniformly mixed).
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn write(&mut self, _: &[u8]) {
        unreachable!()
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A violation found, with the trace that leads to it.
#[derive(Clone, Debug)]
pub struct Found {
    /// What was violated.
    pub violation: Violation,
    /// The moves from the initial state.
    pub trace: Vec<Action>,
    /// The trace replayed with descriptions.
    pub pretty: String,
}

/// What an exploration did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Distinct states reached.
    pub states: usize,
    /// Steps applied (edges).
    pub transitions: usize,
    /// Deepest level explored.
    pub depth: usize,
    /// Every state within the depth bound was explored (no state cap hit) and the search
    /// ended before the bound or exhausted the space.
    pub exhausted: bool,
    /// Quiescent states checked against I3.
    pub quiescent: usize,
    /// States in which the known residual is present (an uncommitted snapshot of a dead
    /// writer referencing a blob no pack holds).
    pub residual_states: usize,
    /// Quiescent states whose final prune refused because of a residual.
    pub residual_detected: usize,
    /// The first (shortest) violation, if any.
    pub violation: Option<Found>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} states, {} transitions, depth {}{}, {} quiescent, {} residual states ({} detected at quiescence)",
            self.states,
            self.transitions,
            self.depth,
            if self.exhausted { " (exhausted)" } else { "" },
            self.quiescent,
            self.residual_states,
            self.residual_detected
        )?;
        if let Some(v) = &self.violation {
            write!(
                f,
                "; VIOLATION after {} steps: {}",
                v.trace.len(),
                v.violation
            )?;
        }
        Ok(())
    }
}

/// Breadth-first exploration of every interleaving of `cfg` up to `max_depth` steps,
/// stopping at the first violation (whose trace is therefore a shortest one) or after
/// `max_states` states.
pub fn explore(cfg: &Config, max_depth: usize, max_states: usize) -> Report {
    let init = cfg.initial();
    let mut seen: HashSet<u128, BuildHasherDefault<Identity>> = HashSet::default();
    seen.insert(fingerprint(&init.world));
    // Parent links: (parent node, action).
    let mut nodes: Vec<(u32, Action)> = vec![(u32::MAX, Action::Advance(0))];
    let mut frontier: Vec<(u32, World)> = vec![(0, init.world)];
    let mut report = Report {
        states: 1,
        ..Report::default()
    };
    let trace_of = |nodes: &Vec<(u32, Action)>, mut n: u32| {
        let mut t = Vec::new();
        while n != 0 {
            let (parent, a) = nodes[n as usize];
            t.push(a);
            n = parent;
        }
        t.reverse();
        t
    };
    let found = |nodes: &Vec<(u32, Action)>, n: u32, extra: Option<Action>| {
        let mut trace = trace_of(nodes, n);
        trace.extend(extra);
        let (pretty, v) = cfg.replay(&trace);
        Found {
            violation: v.expect("replay reproduces the violation"),
            trace,
            pretty,
        }
    };
    let mut depth = 0;
    while !frontier.is_empty() {
        if depth == max_depth || report.states >= max_states {
            report.depth = depth;
            return report;
        }
        let mut next = Vec::new();
        for (n, w) in frontier.drain(..) {
            let st = State {
                world: w,
                elapsed: 0,
                log: None,
            };
            if st.world.quiescent() && cfg.check_i3 {
                report.quiescent += 1;
                match cfg.check_quiescent(&st) {
                    Ok(QuiescentOutcome::ResidualDetected) => report.residual_detected += 1,
                    Ok(QuiescentOutcome::Clean) => {}
                    Err(_) => {
                        report.violation = Some(found(&nodes, n, None));
                        report.depth = depth;
                        return report;
                    }
                }
            }
            for a in cfg.actions(&st) {
                let mut s2 = st.clone();
                report.transitions += 1;
                if cfg.step(&mut s2, a).is_err() {
                    report.violation = Some(found(&nodes, n, Some(a)));
                    report.depth = depth + 1;
                    return report;
                }
                if seen.insert(fingerprint(&s2.world)) {
                    report.states += 1;
                    if cfg.residual(&s2.world) {
                        report.residual_states += 1;
                    }
                    nodes.push((n, a));
                    next.push(((nodes.len() - 1) as u32, s2.world));
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    report.depth = depth;
    report.exhausted = true;
    report
}

/// Follows one schedule chosen by `choices`, one number per step, in bursts: a number
/// `c` picks, by `c % 16`, a time advance (2 in 16, while the budget lasts), a crash or
/// batch failure (1 in 16), a step of the process currently in focus (9 in 16), or a step
/// of any process, which then takes the focus (4 in 16); `c / 16` picks among those
/// moves. Bursts leave the processes out of focus stalled in the middle of what they were
/// doing, and the budgets for advances and crashes last the whole schedule. Stops when
/// nothing can move or the choices run out; checks I1/I2 after every step and I3 if it
/// ends quiescent. Returns the trace, the violation (if any), and whether the final state
/// holds the known residual.
pub fn simulate(cfg: &Config, choices: &[u32]) -> (Vec<Action>, Option<Violation>, bool) {
    let mut st = cfg.initial();
    let mut trace = Vec::new();
    let mut focus = 0u8;
    for &c in choices {
        let acts = cfg.actions(&st);
        if acts.is_empty() {
            break;
        }
        let (mut adv, mut fail, mut moves) = (Vec::new(), Vec::new(), Vec::new());
        for a in acts {
            match a {
                Action::Advance(_) => adv.push(a),
                Action::Crash(_) | Action::FailBatch(_) => fail.push(a),
                _ => moves.push(a),
            }
        }
        let pick = |v: &[Action]| v[(c / 16) as usize % v.len()];
        let proc_of = |a: &Action| match *a {
            Action::Step(p) | Action::Pick(p, _) | Action::Heartbeat(p) => p,
            _ => u8::MAX,
        };
        let a = match c % 16 {
            0 | 1 if !adv.is_empty() => pick(&adv),
            2 if !fail.is_empty() => pick(&fail),
            k if !moves.is_empty() => {
                let mine: Vec<Action> = moves
                    .iter()
                    .copied()
                    .filter(|a| proc_of(a) == focus)
                    .collect();
                if k < 12 && !mine.is_empty() {
                    pick(&mine)
                } else {
                    let a = pick(&moves);
                    focus = proc_of(&a);
                    a
                }
            }
            _ if !adv.is_empty() => pick(&adv),
            _ => pick(&fail),
        };
        trace.push(a);
        if let Err(v) = cfg.step(&mut st, a) {
            return (trace, Some(v), false);
        }
    }
    let residual = cfg.residual(&st.world);
    if cfg.check_i3 && st.world.quiescent() {
        if let Err(v) = cfg.check_quiescent(&st) {
            return (trace, Some(v), residual);
        }
    }
    (trace, None, residual)
}

/// Runs `script` step by step; [`Script::Run`] runs a process until it ends (or, with
/// [`Script::RunUntil`], until its program counter matches), choosing batch items in
/// ascending order. Returns the actions taken and the violation, if any.
pub fn run_script(cfg: &Config, script: &[Script]) -> (Vec<Action>, Option<Violation>) {
    let mut st = cfg.initial();
    let mut trace = Vec::new();
    let go = |st: &mut State, a: Action, trace: &mut Vec<Action>| {
        trace.push(a);
        cfg.step(st, a)
    };
    for s in script {
        let r = match *s {
            Script::Do(a) => go(&mut st, a, &mut trace),
            Script::Run(p) | Script::RunUntil(p, _) => {
                let stop = match *s {
                    Script::RunUntil(_, pc) => Some(pc),
                    _ => None,
                };
                let mut r = Ok(());
                loop {
                    let pr = st.world.procs[p as usize];
                    if (pr.status != Status::NotStarted && Some(pr.pc) == stop)
                        || pr.status.terminal()
                    {
                        break;
                    }
                    let a = match pr.pc {
                        Pc::Batch(_) if pr.status == Status::Running => {
                            Action::Pick(p, bits(pr.m.batch).next().unwrap() as u8)
                        }
                        Pc::End | Pc::Finish if pr.hb != Hb::Idle => Action::Heartbeat(p),
                        _ => Action::Step(p),
                    };
                    r = go(&mut st, a, &mut trace);
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
        };
        if let Err(v) = r {
            return (trace, Some(v));
        }
    }
    if cfg.check_i3 && st.world.quiescent() {
        if let Err(v) = cfg.check_quiescent(&st) {
            return (trace, Some(v));
        }
    }
    (trace, None)
}

/// One instruction of a scripted scenario ([`run_script`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Take exactly this action.
    Do(Action),
    /// Run process `p` until it ends.
    Run(u8),
    /// Run process `p` until its next step is this one (or it ends).
    RunUntil(u8, Pc),
}
