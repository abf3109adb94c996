//! Retention policies: which snapshots `forget` keeps, and why.
//!
//! The rules are restic's `forget` rules, applied the same way (restic's
//! `ApplyPolicy`), so people who know restic get what they expect:
//!
//! * Snapshots are first split into groups ([`group`], by host and paths unless told
//!   otherwise); the policy applies to each group on its own.
//! * Within a group, snapshots are visited newest first. `--keep-last N` keeps the N newest.
//!   `--keep-hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each of the
//!   N most recent hours/days/ISO weeks/months/years **that have snapshots** (buckets with
//!   no snapshot do not count). Buckets follow the **local** calendar of the host that made
//!   the snapshot (its stored UTC offset), so a snapshot taken at 00:30 local time belongs
//!   to that local day whatever the offset or a DST change did to its UTC time.
//! * If a counted rule still has counts left when the oldest snapshot of the group is
//!   reached, that oldest snapshot is kept too ("oldest daily snapshot"): with fewer days
//!   of history than asked for, the whole history span is kept (restic ≥ 0.16).
//! * A count of [`UNLIMITED`] keeps the newest snapshot of every bucket.
//! * `--keep-within D` keeps every snapshot made after (newest − D); the
//!   `--keep-within-daily D` family keeps the newest snapshot of each bucket inside that
//!   window. "Newest" is the newest snapshot of the group (not now), so a repository whose
//!   backups stopped does not expire its last snapshots; snapshots dated in the future
//!   are not used as the reference when a clock is given ([`apply_at`]).
//! * `--keep-tag T` keeps every snapshot having all tags of T (comma-separated list).
//! * A snapshot is kept if any rule keeps it; every rule that kept it is listed.
//!
//! An empty policy keeps everything: it never means "delete all".
//!
//! Everything here is pure (no I/O, no clock), so it is tested over generated timelines.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;

/// A count that keeps every bucket (`--keep-daily unlimited`).
pub const UNLIMITED: u32 = u32::MAX;

const NS: i64 = 1_000_000_000;

/// A calendar duration: years, months, days and hours (`2y5mo7d3h`), as restic has them
/// (restic writes months `m`; here that letter is refused as ambiguous with minutes).
/// Years, months and days are calendar steps (a month before March 31 is "February 31",
/// which normalises to March 2 or 3, as Go's `AddDate` does); hours are 3600 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CalDuration {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl CalDuration {
    /// Whether every part is zero (the rule is off).
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }
}

impl fmt::Display for CalDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (v, u) in [
            (self.years, "y"),
            (self.months, "mo"),
            (self.days, "d"),
            (self.hours, "h"),
        ] {
            if v != 0 {
                write!(f, "{v}{u}")?;
            }
        }
        Ok(())
    }
}

/// Why a duration or count could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl FromStr for CalDuration {
    type Err = ParseError;

    /// Parses `2y5mo7d3h`: numbers each followed by a unit `y`, `mo`, `d` or `h`, each
    /// unit at most once, in any order. Negative numbers are refused, and so is `m` (months
    /// to restic, minutes to most other tools).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |why: &str| {
            ParseError(format!(
                "invalid duration {s:?}: {why} (expected e.g. 2y5mo7d3h: years, months, days, hours)"
            ))
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let mut d = CalDuration::default();
        let mut seen = [false; 4];
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err(if rest.starts_with('-') {
                    "negative values are not allowed"
                } else {
                    "expected a number"
                }));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..letters];
            let slot = match unit {
                "" => return Err(err("a number without a unit")),
                "y" => 0,
                "mo" => 1,
                "d" => 2,
                "h" => 3,
                "m" => return Err(err("\"m\" is ambiguous: write \"mo\" for months")),
                _ => return Err(err(&format!("unknown unit {unit:?}"))),
            };
            if seen[slot] {
                return Err(err(&format!("unit {unit:?} given twice")));
            }
            seen[slot] = true;
            match slot {
                0 => d.years = n,
                1 => d.months = n,
                2 => d.days = n,
                _ => d.hours = n,
            }
            rest = &rest[letters..];
        }
        Ok(d)
    }
}

/// Parses a `--keep-*` count: a non-negative integer, or `unlimited` (also `-1`, as
/// restic accepts) for [`UNLIMITED`].
pub fn parse_count(s: &str) -> Result<u32, ParseError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t == "-1" {
        return Ok(UNLIMITED);
    }
    match t.parse::<u32>() {
        Ok(n) if n != UNLIMITED => Ok(n),
        _ => Err(ParseError(format!(
            "invalid count {s:?}: expected a number of snapshots (0 or more) or \"unlimited\""
        ))),
    }
}

/// Which snapshots to keep. All rules default to off; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest snapshots.
    pub last: u32,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … ISO weeks.
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Keep every snapshot newer than the group's newest minus this.
    pub within: CalDuration,
    /// Keep the newest snapshot of each hour within this duration of the newest.
    pub within_hourly: CalDuration,
    /// … of each day.
    pub within_daily: CalDuration,
    /// … of each ISO week.
    pub within_weekly: CalDuration,
    /// … of each month.
    pub within_monthly: CalDuration,
    /// … of each year.
    pub within_yearly: CalDuration,
    /// Keep snapshots having all tags of at least one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no rule is set. An empty policy keeps every snapshot.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(c, _, _)| *c == 0)
            && self.within.is_zero()
            && self.withins().iter().all(|(d, _, _)| d.is_zero())
            && self.tags.is_empty()
    }

    fn counts(&self) -> [(u32, Bucket, &'static str); 6] {
        [
            (self.last, Bucket::Each, "last"),
            (self.hourly, Bucket::Hour, "hourly"),
            (self.daily, Bucket::Day, "daily"),
            (self.weekly, Bucket::Week, "weekly"),
            (self.monthly, Bucket::Month, "monthly"),
            (self.yearly, Bucket::Year, "yearly"),
        ]
    }

    fn withins(&self) -> [(CalDuration, Bucket, &'static str); 5] {
        [
            (self.within_hourly, Bucket::Hour, "hourly"),
            (self.within_daily, Bucket::Day, "daily"),
            (self.within_weekly, Bucket::Week, "weekly"),
            (self.within_monthly, Bucket::Month, "monthly"),
            (self.within_yearly, Bucket::Year, "yearly"),
        ]
    }
}

impl fmt::Display for Policy {
    /// A sentence such as "keep 14 daily snapshots, 4 weekly snapshots".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (c, _, name) in self.counts() {
            let name = if name == "last" { "latest" } else { name };
            match c {
                0 => {}
                UNLIMITED => parts.push(format!("all {name} snapshots")),
                n => parts.push(format!("{n} {name} snapshots")),
            }
        }
        for (d, _, name) in self.withins() {
            if !d.is_zero() {
                parts.push(format!("{name} snapshots within {d}"));
            }
        }
        if !self.within.is_zero() {
            parts.push(format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        for t in &self.tags {
            parts.push(format!("all snapshots with tags {}", t.join(",")));
        }
        if parts.is_empty() {
            f.write_str("keep everything (no policy)")
        } else {
            write!(f, "keep {}", parts.join(", "))
        }
    }
}

/// What the policy decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: Id,
    /// Whether it is kept.
    pub keep: bool,
    /// Every rule that kept it (empty when removed), e.g. "daily snapshot",
    /// "last snapshot", "within 7d", "tag foo".
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// Every snapshot is its own bucket (`--keep-last`).
    Each,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// The local wall-clock time of a snapshot: UTC time plus its stored offset.
fn local_time(s: &Snapshot) -> Option<NaiveDateTime> {
    let secs = s
        .time_ns
        .div_euclid(NS)
        .checked_add(i64::from(s.utc_offset_s))?;
    let nsec = s.time_ns.rem_euclid(NS) as u32;
    chrono::DateTime::from_timestamp(secs, nsec).map(|t| t.naive_utc())
}

/// The bucket value of a snapshot, restic's `ymdh`, `ymd`, `yw`, `ym`, `y`, or the
/// position for `Each`. A time outside the calendar gets a bucket of its own.
fn bucket_of(b: Bucket, local: Option<NaiveDateTime>, nr: usize) -> i64 {
    let unique = i64::MIN + nr as i64;
    let Some(t) = local else { return unique };
    let (y, m, d, h) = (
        i64::from(t.year()),
        i64::from(t.month()),
        i64::from(t.day()),
        i64::from(t.hour()),
    );
    match b {
        Bucket::Each => unique,
        Bucket::Hour => y * 1_000_000 + m * 10_000 + d * 100 + h,
        Bucket::Day => y * 10_000 + m * 100 + d,
        Bucket::Week => {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        Bucket::Month => y * 100 + m,
        Bucket::Year => y,
    }
}

/// `t` moved back by `d` the way Go's `AddDate(-y, -m, -d).Add(-h hours)` does: months
/// are normalised into years first, then day overflow rolls into the next month.
fn sub_calendar(t: NaiveDateTime, d: &CalDuration) -> Option<NaiveDateTime> {
    let months = i64::from(t.year()) * 12 + i64::from(t.month0())
        - (i64::from(d.years) * 12 + i64::from(d.months));
    let year = i32::try_from(months.div_euclid(12)).ok()?;
    let first = NaiveDate::from_ymd_opt(year, months.rem_euclid(12) as u32 + 1, 1)?;
    let day_offset = i64::from(t.day()) - 1 - i64::from(d.days);
    let date = first.checked_add_signed(chrono::TimeDelta::try_days(day_offset)?)?;
    date.and_time(t.time())
        .checked_sub_signed(chrono::TimeDelta::try_hours(i64::from(d.hours))?)
}

/// The instant (ns since the epoch) after which a snapshot is "within" `d` of `latest`,
/// computed on `latest`'s local calendar. `i64::MIN` when it falls before the calendar.
fn within_threshold(latest: &Snapshot, d: &CalDuration) -> i64 {
    let Some(local) = local_time(latest) else {
        return i64::MIN;
    };
    let Some(t) = sub_calendar(local, d) else {
        return i64::MIN;
    };
    let utc = t.and_utc();
    utc.timestamp()
        .checked_sub(i64::from(latest.utc_offset_s))
        .and_then(|s| s.checked_mul(NS))
        .and_then(|s| s.checked_add(i64::from(utc.timestamp_subsec_nanos())))
        .unwrap_or(i64::MIN)
}

fn has_tags(s: &Snapshot, want: &[String]) -> bool {
    want.iter().all(|t| s.tags.iter().any(|x| x == t))
}

fn tag_reason(want: &[String]) -> String {
    if want.len() == 1 {
        format!("tag {}", want[0])
    } else {
        format!("tags {}", want.join(","))
    }
}

/// Orders snapshots newest first; equal times by ID, descending (deterministic whatever
/// the input order).
fn newest_first(snaps: &[(Id, Snapshot)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by(|&a, &b| {
        snaps[b]
            .1
            .time_ns
            .cmp(&snaps[a].1.time_ns)
            .then(snaps[b].0.cmp(&snaps[a].0))
    });
    order
}

/// Applies a policy to one group of snapshots. Returns one decision per snapshot, newest
/// first. Durations count back from the newest snapshot of the group.
pub fn apply(policy: &Policy, snaps: &[(Id, Snapshot)]) -> Vec<Decision> {
    apply_at(policy, snaps, None)
}

/// [`apply`], with the current time: snapshots dated after `now_ns` (a host with a clock
/// set in the future) are not used as the reference for durations, as restic does. If
/// every snapshot is in the future, every snapshot counts as "within".
pub fn apply_at(policy: &Policy, snaps: &[(Id, Snapshot)], now_ns: Option<i64>) -> Vec<Decision> {
    let order = newest_first(snaps);
    if policy.is_empty() {
        return order
            .iter()
            .map(|&i| Decision {
                id: snaps[i].0,
                keep: true,
                reasons: vec!["no policy: nothing is removed".into()],
            })
            .collect();
    }
    let latest = order
        .iter()
        .map(|&i| &snaps[i].1)
        .find(|s| now_ns.is_none_or(|now| s.time_ns < now));
    let threshold = |d: &CalDuration| latest.map_or(i64::MIN, |l| within_threshold(l, d));
    let within_at = (!policy.within.is_zero()).then(|| threshold(&policy.within));

    struct Counter {
        left: u32,
        bucket: Bucket,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut counters: Vec<Counter> = policy
        .counts()
        .iter()
        .filter(|(c, _, _)| *c > 0)
        .map(|&(left, bucket, name)| Counter {
            left,
            bucket,
            last: None,
            reason: name,
        })
        .collect();
    struct WithinBucket {
        after: i64,
        bucket: Bucket,
        last: Option<i64>,
        reason: &'static str,
        dur: CalDuration,
    }
    let mut within_buckets: Vec<WithinBucket> = policy
        .withins()
        .iter()
        .filter(|(d, _, _)| !d.is_zero())
        .map(|&(dur, bucket, name)| WithinBucket {
            after: threshold(&dur),
            bucket,
            last: None,
            reason: name,
            dur,
        })
        .collect();

    let n = order.len();
    let mut out = Vec::with_capacity(n);
    for (nr, &i) in order.iter().enumerate() {
        let (id, s) = (&snaps[i].0, &snaps[i].1);
        let oldest = nr + 1 == n;
        let local = local_time(s);
        let mut reasons = Vec::new();
        for t in &policy.tags {
            if has_tags(s, t) {
                reasons.push(tag_reason(t));
            }
        }
        if let Some(after) = within_at {
            if s.time_ns > after {
                reasons.push(format!("within {}", policy.within));
            }
        }
        for c in counters.iter_mut() {
            if c.left == 0 {
                continue;
            }
            let val = bucket_of(c.bucket, local, nr);
            let new_bucket = c.last != Some(val);
            if new_bucket || oldest {
                let name = if c.reason == "last" {
                    "last snapshot".to_string()
                } else {
                    format!("{} snapshot", c.reason)
                };
                reasons.push(if new_bucket {
                    name
                } else {
                    format!("oldest {name}")
                });
                c.last = Some(val);
                if c.left != UNLIMITED {
                    c.left -= 1;
                }
            }
        }
        for w in within_buckets.iter_mut() {
            if s.time_ns <= w.after {
                continue;
            }
            let val = bucket_of(w.bucket, local, nr);
            let new_bucket = w.last != Some(val);
            if new_bucket || oldest {
                let name = format!("{} within {}", w.reason, w.dur);
                reasons.push(if new_bucket {
                    name
                } else {
                    format!("oldest {name}")
                });
                w.last = Some(val);
            }
        }
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

/// What snapshots are grouped by before a policy is applied (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Same host.
    pub host: bool,
    /// Same set of backed-up paths.
    pub paths: bool,
    /// Same set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// `host,paths`, as restic does.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = ParseError;

    /// Parses a comma-separated list of `host`, `paths`, `tags` (singular forms too); the
    /// empty string groups nothing (all snapshots in one group).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                other => {
                    return Err(ParseError(format!(
                        "unknown grouping {other:?}: use host, paths and/or tags, separated by commas (or \"\" for no grouping)"
                    )))
                }
            }
        }
        Ok(g)
    }
}

/// What the snapshots of one group share. Fields not grouped by are `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The host, when grouping by host.
    pub host: Option<String>,
    /// The sorted paths, when grouping by paths.
    pub paths: Option<Vec<Vec<u8>>>,
    /// The sorted tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            let p: Vec<String> = p
                .iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect();
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The key of a snapshot's group.
pub fn group_key(s: &Snapshot, by: GroupBy) -> GroupKey {
    GroupKey {
        host: by.host.then(|| s.host.clone()),
        paths: by.paths.then(|| {
            let mut p = s.paths.clone();
            p.sort();
            p.dedup();
            p
        }),
        tags: by.tags.then(|| {
            let mut t = s.tags.clone();
            t.sort();
            t.dedup();
            t
        }),
    }
}

/// Splits snapshots into groups, ordered by key; each group keeps the input order.
pub fn group(snaps: &[(Id, Snapshot)], by: GroupBy) -> Vec<(GroupKey, Vec<(Id, Snapshot)>)> {
    let mut m: BTreeMap<GroupKey, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        m.entry(group_key(s, by))
            .or_default()
            .push((*id, s.clone()));
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_repo::snapshot::Summary;
    use proptest::prelude::*;

    const CET: i32 = 3600;
    const CEST: i32 = 7200;

    /// A snapshot taken at local time `local` ("YYYY-MM-DD HH:MM") with UTC offset `off`;
    /// its ID spells its label so that decisions can be read back.
    fn snap_full(
        label: &str,
        local: &str,
        off: i32,
        host: &str,
        paths: &[&str],
        tags: &[&str],
    ) -> (Id, Snapshot) {
        let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M").expect("test time");
        let utc_s = t.and_utc().timestamp() - i64::from(off);
        let mut id = [0u8; 32];
        assert!(label.len() <= 32, "label too long: {label}");
        id[..label.len()].copy_from_slice(label.as_bytes());
        (
            Id(id),
            Snapshot {
                time_ns: utc_s * NS,
                utc_offset_s: off,
                host: host.into(),
                user: "u".into(),
                uid: 0,
                gid: 0,
                paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree: Id::default(),
                parent: None,
                program_version: "test".into(),
                summary: Summary::default(),
                ext: Default::default(),
            },
        )
    }

    /// A snapshot labelled by its local time.
    fn snap(local: &str, off: i32) -> (Id, Snapshot) {
        snap_full(local, local, off, "h", &["/data"], &[])
    }

    fn label(id: &Id) -> String {
        let end = id.0.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8(id.0[..end].to_vec()).expect("label")
    }

    /// The kept labels, newest first.
    fn kept(policy: &Policy, snaps: &[(Id, Snapshot)]) -> Vec<String> {
        apply(policy, snaps)
            .iter()
            .filter(|d| d.keep)
            .map(|d| label(&d.id))
            .collect()
    }

    /// Kept labels with their reasons, newest first.
    fn kept_why(policy: &Policy, snaps: &[(Id, Snapshot)]) -> Vec<(String, Vec<String>)> {
        apply(policy, snaps)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| (label(&d.id), d.reasons))
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Every day from `first` for `days` days, at each of `times` (local, offset `off`).
    fn timeline(
        first: &str,
        days: i64,
        times: &[&str],
        off: impl Fn(&str) -> i32,
    ) -> Vec<(Id, Snapshot)> {
        let d0 = NaiveDate::parse_from_str(first, "%Y-%m-%d").expect("date");
        let mut v = Vec::new();
        for i in 0..days {
            let d = d0 + chrono::TimeDelta::try_days(i).expect("days");
            for t in times {
                let local = format!("{} {t}", d.format("%Y-%m-%d"));
                let o = off(&local);
                v.push(snap(&local, o));
            }
        }
        v
    }

    fn daily(n: u32) -> Policy {
        Policy {
            daily: n,
            ..Policy::default()
        }
    }

    #[test]
    fn several_snapshots_per_day_keep_the_last_of_each_day() {
        let snaps = timeline("2024-05-01", 5, &["08:00", "12:00", "20:00"], |_| CEST);
        assert_eq!(
            kept(&daily(3), &snaps),
            strs(&["2024-05-05 20:00", "2024-05-04 20:00", "2024-05-03 20:00"])
        );
        for (_, why) in kept_why(&daily(3), &snaps) {
            assert_eq!(why, strs(&["daily snapshot"]));
        }
    }

    /// The homelab default over 40 days that cross a month end and a year end, two
    /// snapshots a day (02:00 and 23:30): exactly the 23:30 snapshot of each of the 14 most
    /// recent days.
    #[test]
    fn homelab_keep_daily_14_across_month_and_year_end() {
        let snaps = timeline("2023-12-15", 40, &["02:00", "23:30"], |_| CET);
        assert_eq!(snaps.len(), 80);
        assert_eq!(label(&snaps[79].0), "2024-01-23 23:30");
        let want = strs(&[
            "2024-01-23 23:30",
            "2024-01-22 23:30",
            "2024-01-21 23:30",
            "2024-01-20 23:30",
            "2024-01-19 23:30",
            "2024-01-18 23:30",
            "2024-01-17 23:30",
            "2024-01-16 23:30",
            "2024-01-15 23:30",
            "2024-01-14 23:30",
            "2024-01-13 23:30",
            "2024-01-12 23:30",
            "2024-01-11 23:30",
            "2024-01-10 23:30",
        ]);
        assert_eq!(kept(&daily(14), &snaps), want);
        // Input order does not matter.
        let mut rev = snaps.clone();
        rev.reverse();
        assert_eq!(kept(&daily(14), &rev), want);
        // Only 12 days in January: 14 days reach back into December.
        let jan12: Vec<_> = snaps
            .iter()
            .filter(|(id, _)| label(id).as_str() >= "2024-01-12")
            .cloned()
            .collect();
        assert_eq!(jan12.len(), 24);
        let days: Vec<String> = kept(&daily(14), &jan12);
        assert_eq!(days.len(), 13, "12 days plus the oldest snapshot: {days:?}");
        assert_eq!(days[11], "2024-01-12 23:30");
        assert_eq!(days[12], "2024-01-12 02:00");
    }

    #[test]
    fn weekly_monthly_yearly_across_year_end() {
        let snaps = timeline("2023-12-15", 40, &["02:00", "23:30"], |_| CET);
        // ISO weeks: 2024-W04 (Jan 22-28), W03, W02, W01 (Jan 1-7), 2023-W52 (Dec 25-31),
        // 2023-W51 (Dec 18-24).
        let weekly = Policy {
            weekly: 6,
            ..Policy::default()
        };
        assert_eq!(
            kept(&weekly, &snaps),
            strs(&[
                "2024-01-23 23:30",
                "2024-01-21 23:30",
                "2024-01-14 23:30",
                "2024-01-07 23:30",
                "2023-12-31 23:30",
                "2023-12-24 23:30",
            ])
        );
        // Two months of history, three asked for: the oldest snapshot is kept as well.
        let monthly = Policy {
            monthly: 3,
            ..Policy::default()
        };
        assert_eq!(
            kept_why(&monthly, &snaps),
            vec![
                ("2024-01-23 23:30".into(), strs(&["monthly snapshot"])),
                ("2023-12-31 23:30".into(), strs(&["monthly snapshot"])),
                (
                    "2023-12-15 02:00".into(),
                    strs(&["oldest monthly snapshot"])
                ),
            ]
        );
        let yearly = Policy {
            yearly: 1,
            ..Policy::default()
        };
        assert_eq!(kept(&yearly, &snaps), strs(&["2024-01-23 23:30"]));
        let yearly2 = Policy {
            yearly: 2,
            ..Policy::default()
        };
        assert_eq!(
            kept(&yearly2, &snaps),
            strs(&["2024-01-23 23:30", "2023-12-31 23:30"])
        );
    }

    /// Europe/Berlin: CET (+1h) until 2024-03-31 02:00 local, CEST (+2h) after. At +2h a
    /// snapshot at 00:30 local is 22:30 UTC the day before, and one at 23:30 local is 21:30
    /// UTC the same day; buckets follow the local date regardless.
    #[test]
    fn dst_spring_forward_buckets_follow_the_local_date() {
        let off = |local: &str| {
            if local < "2024-03-31 02:00" {
                CET
            } else {
                CEST
            }
        };
        let snaps = timeline("2024-03-28", 7, &["00:30", "23:30"], off);
        assert_eq!(label(&snaps[7].0), "2024-03-31 23:30");
        assert_eq!(snaps[7].1.utc_offset_s, CEST);
        assert_eq!(snaps[6].1.utc_offset_s, CET); // 2024-03-31 00:30
        assert_eq!(
            kept(&daily(7), &snaps),
            strs(&[
                "2024-04-03 23:30",
                "2024-04-02 23:30",
                "2024-04-01 23:30",
                "2024-03-31 23:30",
                "2024-03-30 23:30",
                "2024-03-29 23:30",
                "2024-03-28 23:30",
            ])
        );
        assert_eq!(
            kept(&daily(2), &snaps),
            strs(&["2024-04-03 23:30", "2024-04-02 23:30"])
        );
        // Only the 00:30 snapshots: one per local day, each kept.
        let early = timeline("2024-03-28", 7, &["00:30"], off);
        assert_eq!(kept(&daily(7), &early).len(), 7);
    }

    /// Autumn: 2024-10-27 03:00 CEST becomes 02:00 CET, so 02:30 happens twice. Both are
    /// the same local hour; the later one represents it.
    #[test]
    fn dst_fall_back_repeated_hour_is_one_bucket() {
        let snaps = vec![
            snap_full("01:30+2", "2024-10-27 01:30", CEST, "h", &["/d"], &[]),
            snap_full("02:30+2", "2024-10-27 02:30", CEST, "h", &["/d"], &[]),
            snap_full("02:30+1", "2024-10-27 02:30", CET, "h", &["/d"], &[]),
            snap_full("03:30+1", "2024-10-27 03:30", CET, "h", &["/d"], &[]),
        ];
        let hourly = Policy {
            hourly: 10,
            ..Policy::default()
        };
        assert_eq!(
            kept(&hourly, &snaps),
            strs(&["03:30+1", "02:30+1", "01:30+2"])
        );
        let days = timeline("2024-10-25", 5, &["00:30", "23:30"], |l| {
            if l < "2024-10-27 03:00" {
                CEST
            } else {
                CET
            }
        });
        assert_eq!(
            kept(&daily(3), &days),
            strs(&["2024-10-29 23:30", "2024-10-28 23:30", "2024-10-27 23:30"])
        );
    }

    #[test]
    fn keep_last_and_daily_overlap() {
        let snaps = timeline("2024-05-01", 3, &["08:00", "12:00", "20:00"], |_| CEST);
        let p = Policy {
            last: 2,
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(
            kept_why(&p, &snaps),
            vec![
                (
                    "2024-05-03 20:00".into(),
                    strs(&["last snapshot", "daily snapshot"])
                ),
                ("2024-05-03 12:00".into(), strs(&["last snapshot"])),
                ("2024-05-02 20:00".into(), strs(&["daily snapshot"])),
            ]
        );
    }

    #[test]
    fn keep_daily_with_fewer_days_than_asked_keeps_the_oldest_too() {
        let snaps = timeline("2024-05-01", 3, &["08:00", "12:00", "20:00"], |_| CEST);
        assert_eq!(
            kept_why(&daily(14), &snaps),
            vec![
                ("2024-05-03 20:00".into(), strs(&["daily snapshot"])),
                ("2024-05-02 20:00".into(), strs(&["daily snapshot"])),
                ("2024-05-01 20:00".into(), strs(&["daily snapshot"])),
                ("2024-05-01 08:00".into(), strs(&["oldest daily snapshot"])),
            ]
        );
        // Exactly as many days as asked: no extra snapshot.
        assert_eq!(
            kept(&daily(3), &snaps),
            strs(&["2024-05-03 20:00", "2024-05-02 20:00", "2024-05-01 20:00"])
        );
        // Unlimited: the last snapshot of every day, and the oldest.
        assert_eq!(
            kept(&daily(UNLIMITED), &snaps),
            strs(&[
                "2024-05-03 20:00",
                "2024-05-02 20:00",
                "2024-05-01 20:00",
                "2024-05-01 08:00"
            ])
        );
    }

    #[test]
    fn keep_tag_keeps_tagged_snapshots_whatever_else() {
        let snaps = vec![
            snap_full("new", "2024-05-05 10:00", 0, "h", &["/d"], &[]),
            snap_full("a", "2024-05-04 10:00", 0, "h", &["/d"], &["a"]),
            snap_full("ab", "2024-05-03 10:00", 0, "h", &["/d"], &["a", "b"]),
            snap_full("b", "2024-05-02 10:00", 0, "h", &["/d"], &["b"]),
            snap_full("keep", "2024-05-01 10:00", 0, "h", &["/d"], &["keep", "x"]),
            snap_full("none", "2024-04-30 10:00", 0, "h", &["/d"], &["x"]),
        ];
        let p = Policy {
            last: 1,
            tags: vec![strs(&["keep"]), strs(&["a", "b"])],
            ..Policy::default()
        };
        assert_eq!(
            kept_why(&p, &snaps),
            vec![
                ("new".into(), strs(&["last snapshot"])),
                ("ab".into(), strs(&["tags a,b"])),
                ("keep".into(), strs(&["tag keep"])),
            ]
        );
        // keep-tag alone keeps only tagged snapshots (the newest is not special).
        let p = Policy {
            tags: vec![strs(&["b"])],
            ..Policy::default()
        };
        assert_eq!(kept(&p, &snaps), strs(&["ab", "b"]));
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_snapshot() {
        let snaps = timeline("2024-05-01", 5, &["08:00", "12:00", "20:00"], |_| CEST);
        let p = Policy {
            within: "2d".parse().unwrap(),
            ..Policy::default()
        };
        // Newest: 05-05 20:00; strictly after 05-03 20:00.
        assert_eq!(
            kept(&p, &snaps),
            strs(&[
                "2024-05-05 20:00",
                "2024-05-05 12:00",
                "2024-05-05 08:00",
                "2024-05-04 20:00",
                "2024-05-04 12:00",
                "2024-05-04 08:00",
            ])
        );
        assert!(kept_why(&p, &snaps)
            .iter()
            .all(|(_, w)| w == &strs(&["within 2d"])));
        // 1d12h before 05-05 20:00 is 05-04 08:00.
        let p = Policy {
            within: "1d12h".parse().unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &snaps),
            strs(&[
                "2024-05-05 20:00",
                "2024-05-05 12:00",
                "2024-05-05 08:00",
                "2024-05-04 20:00",
                "2024-05-04 12:00",
            ])
        );
    }

    /// Months are calendar months, normalised like Go's AddDate: one month before March 31
    /// is "February 31" = March 2 (2024 is a leap year).
    #[test]
    fn keep_within_month_arithmetic() {
        let snaps = vec![
            snap("2024-03-31 12:00", 0),
            snap("2024-03-02 13:00", 0),
            snap("2024-03-02 12:00", 0),
            snap("2024-02-29 12:00", 0),
        ];
        let p = Policy {
            within: "1mo".parse().unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &snaps),
            strs(&["2024-03-31 12:00", "2024-03-02 13:00"])
        );
        let p = Policy {
            within: "1y".parse().unwrap(),
            ..Policy::default()
        };
        let year = vec![
            snap("2024-02-29 12:00", 0),
            snap("2023-03-01 12:01", 0),
            snap("2023-03-01 12:00", 0),
        ];
        // 2023-02-29 normalises to 2023-03-01.
        assert_eq!(
            kept(&p, &year),
            strs(&["2024-02-29 12:00", "2023-03-01 12:01"])
        );
    }

    #[test]
    fn keep_within_daily_keeps_one_per_day_inside_the_window() {
        let snaps = timeline("2024-05-01", 5, &["08:00", "12:00", "20:00"], |_| CEST);
        let p = Policy {
            within_daily: "2d".parse().unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept_why(&p, &snaps),
            vec![
                ("2024-05-05 20:00".into(), strs(&["daily within 2d"])),
                ("2024-05-04 20:00".into(), strs(&["daily within 2d"])),
            ]
        );
        let p = Policy {
            within_daily: "1mo".parse().unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept_why(&p, &snaps),
            vec![
                ("2024-05-05 20:00".into(), strs(&["daily within 1mo"])),
                ("2024-05-04 20:00".into(), strs(&["daily within 1mo"])),
                ("2024-05-03 20:00".into(), strs(&["daily within 1mo"])),
                ("2024-05-02 20:00".into(), strs(&["daily within 1mo"])),
                ("2024-05-01 20:00".into(), strs(&["daily within 1mo"])),
                (
                    "2024-05-01 08:00".into(),
                    strs(&["oldest daily within 1mo"])
                ),
            ]
        );
    }

    #[test]
    fn groups_by_host_and_paths() {
        let snaps = vec![
            snap_full("a1-old", "2024-05-01 10:00", 0, "a", &["/x"], &[]),
            snap_full("a1-new", "2024-05-02 10:00", 0, "a", &["/x"], &["t"]),
            snap_full("a2-old", "2024-05-01 11:00", 0, "a", &["/y", "/x"], &[]),
            snap_full("a2-new", "2024-05-02 11:00", 0, "a", &["/x", "/y"], &[]),
            snap_full("b1-old", "2024-05-01 12:00", 0, "b", &["/x"], &[]),
            snap_full("b1-new", "2024-05-02 12:00", 0, "b", &["/x"], &[]),
        ];
        let groups = group(&snaps, GroupBy::default());
        assert_eq!(groups.len(), 3, "{groups:?}");
        let last1 = Policy {
            last: 1,
            ..Policy::default()
        };
        let mut all_kept: Vec<String> = groups.iter().flat_map(|(_, g)| kept(&last1, g)).collect();
        all_kept.sort();
        assert_eq!(all_kept, strs(&["a1-new", "a2-new", "b1-new"]));
        assert_eq!(
            groups[0].0.to_string(),
            "host a, paths [/x]",
            "{:?}",
            groups[0].0
        );
        assert_eq!(groups[1].0.to_string(), "host a, paths [/x, /y]");

        let by_host: GroupBy = "host".parse().unwrap();
        assert_eq!(group(&snaps, by_host).len(), 2);
        let none: GroupBy = "".parse().unwrap();
        let g = group(&snaps, none);
        assert_eq!(g.len(), 1);
        assert_eq!(kept(&last1, &g[0].1), strs(&["b1-new"]));
        let by_tags: GroupBy = "host,tags".parse().unwrap();
        assert_eq!(group(&snaps, by_tags).len(), 3);
        assert!("host,bogus".parse::<GroupBy>().is_err());
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let snaps = timeline("2024-05-01", 3, &["08:00"], |_| 0);
        let p = Policy::default();
        assert!(p.is_empty());
        let d = apply(&p, &snaps);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| d.keep));
        assert!(!daily(1).is_empty());
        assert!(!Policy {
            tags: vec![strs(&["x"])],
            ..Policy::default()
        }
        .is_empty());
        assert!(apply(&daily(3), &[]).is_empty());
    }

    #[test]
    fn future_snapshots_are_not_the_reference_for_durations() {
        let snaps = vec![
            snap("2030-01-01 00:00", 0),
            snap("2024-05-05 12:00", 0),
            snap("2024-05-04 12:00", 0),
            snap("2024-04-01 12:00", 0),
        ];
        let p = Policy {
            within: "7d".parse().unwrap(),
            ..Policy::default()
        };
        let now = NaiveDateTime::parse_from_str("2024-05-06 00:00", "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp()
            * NS;
        let kept_at: Vec<String> = apply_at(&p, &snaps, Some(now))
            .iter()
            .filter(|d| d.keep)
            .map(|d| label(&d.id))
            .collect();
        assert_eq!(
            kept_at,
            strs(&["2030-01-01 00:00", "2024-05-05 12:00", "2024-05-04 12:00"])
        );
        // Without a clock the newest snapshot is the reference.
        assert_eq!(kept(&p, &snaps), strs(&["2030-01-01 00:00"]));
    }

    #[test]
    fn parsing() {
        let d: CalDuration = "2y5mo7d3h".parse().unwrap();
        assert_eq!(
            d,
            CalDuration {
                years: 2,
                months: 5,
                days: 7,
                hours: 3
            }
        );
        assert_eq!(d.to_string(), "2y5mo7d3h");
        assert_eq!("7d".parse::<CalDuration>().unwrap().to_string(), "7d");
        assert_eq!(
            "3h1y".parse::<CalDuration>().unwrap(),
            CalDuration {
                years: 1,
                hours: 3,
                ..CalDuration::default()
            }
        );
        for bad in [
            "",
            "7",
            "d",
            "-1d",
            "1w",
            "1d1d",
            "1.5d",
            "99999999999d",
            "2y5m",
            "1mo1mo",
        ] {
            assert!(bad.parse::<CalDuration>().is_err(), "{bad:?}");
        }
        assert_eq!(parse_count("14"), Ok(14));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("unlimited"), Ok(UNLIMITED));
        assert_eq!(parse_count("-1"), Ok(UNLIMITED));
        for bad in ["-2", "x", "", "1.5"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Policy {
                daily: 14,
                weekly: UNLIMITED,
                within: "7d".parse().unwrap(),
                ..Policy::default()
            }
            .to_string(),
            "keep 14 daily snapshots, all weekly snapshots, all snapshots within 7d of the newest"
        );
    }

    fn arb_snaps() -> impl Strategy<Value = Vec<(Id, Snapshot)>> {
        let one = (
            0i64..(120 * 24 * 60),
            prop::sample::select(vec![-18000, 0, 3600, 7200, 19800]),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        );
        prop::collection::vec(one, 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (minute, off, tags))| {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                    tags.sort();
                    tags.dedup();
                    (
                        Id(id),
                        Snapshot {
                            // From 2023-11-01, minute resolution, so ties happen.
                            time_ns: (1_698_796_800 + minute * 60) * NS,
                            utc_offset_s: off,
                            host: "h".into(),
                            user: "u".into(),
                            uid: 0,
                            gid: 0,
                            paths: vec![b"/d".to_vec()],
                            tags,
                            tree: Id::default(),
                            parent: None,
                            program_version: "t".into(),
                            summary: Summary::default(),
                            ext: Default::default(),
                        },
                    )
                })
                .collect()
        })
    }

    fn arb_count() -> impl Strategy<Value = u32> {
        prop_oneof![4 => Just(0u32), 4 => 1u32..6, 1 => Just(UNLIMITED)]
    }

    fn arb_dur() -> impl Strategy<Value = CalDuration> {
        prop_oneof![
            3 => Just(CalDuration::default()),
            1 => (0u32..2, 0u32..3, 0u32..20, 0u32..30).prop_map(|(years, months, days, hours)| CalDuration { years, months, days, hours }),
        ]
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            prop::collection::vec(arb_count(), 6),
            prop::collection::vec(arb_dur(), 6),
            prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..3),
                0..2,
            ),
        )
            .prop_map(|(c, d, tags)| Policy {
                last: c[0],
                hourly: c[1],
                daily: c[2],
                weekly: c[3],
                monthly: c[4],
                yearly: c[5],
                within: d[0],
                within_hourly: d[1],
                within_daily: d[2],
                within_weekly: d[3],
                within_monthly: d[4],
                within_yearly: d[5],
                tags: tags
                    .into_iter()
                    .map(|t| t.into_iter().map(String::from).collect())
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn policy_properties(snaps in arb_snaps(), policy in arb_policy()) {
            let d = apply(&policy, &snaps);
            // One decision per input snapshot, no more: kept ⊆ input.
            prop_assert_eq!(d.len(), snaps.len());
            let mut ids: Vec<Id> = d.iter().map(|x| x.id).collect();
            ids.sort();
            let mut input: Vec<Id> = snaps.iter().map(|x| x.0).collect();
            input.sort();
            prop_assert_eq!(ids, input);
            let keep: std::collections::HashSet<Id> =
                d.iter().filter(|x| x.keep).map(|x| x.id).collect();
            for x in &d {
                prop_assert_eq!(x.keep, !x.reasons.is_empty());
            }
            if policy.is_empty() {
                prop_assert_eq!(keep.len(), snaps.len());
            }
            // Every snapshot with all tags of a keep-tag list is kept.
            for (id, s) in &snaps {
                if policy.tags.iter().any(|t| t.iter().all(|x| s.tags.contains(x))) {
                    prop_assert!(keep.contains(id));
                }
            }
            // keep-last N keeps the N newest.
            let mut by_age: Vec<&(Id, Snapshot)> = snaps.iter().collect();
            by_age.sort_by(|a, b| b.1.time_ns.cmp(&a.1.time_ns).then(b.0.cmp(&a.0)));
            let n = (policy.last as usize).min(by_age.len());
            for (id, _) in &by_age[..n] {
                prop_assert!(keep.contains(id));
            }
            // Any counted or duration rule keeps the newest snapshot.
            let counted = [policy.last, policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly]
                .iter().any(|&c| c > 0);
            let timed = [policy.within, policy.within_hourly, policy.within_daily, policy.within_weekly, policy.within_monthly, policy.within_yearly]
                .iter().any(|d| !d.is_zero());
            if (counted || timed) && !by_age.is_empty() {
                prop_assert!(keep.contains(&by_age[0].0));
            }
            // Idempotence: the kept set, run through the policy again, is kept whole.
            let kept_snaps: Vec<(Id, Snapshot)> =
                snaps.iter().filter(|(id, _)| keep.contains(id)).cloned().collect();
            let again = apply(&policy, &kept_snaps);
            for x in &again {
                prop_assert!(x.keep, "{:?} dropped on the second run of {:?}", x.id, policy);
            }
        }
    }
}
