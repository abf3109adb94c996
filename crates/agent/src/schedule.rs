//! When a volume is due: schedules need no state of their own.
//!
//! A volume is due when its schedule fired (at least once) after its newest snapshot in the
//! repository was taken, or when it has no snapshot at all. So a run missed while the node
//! was down happens as soon as the agent is back, a restarted agent does not back up again
//! what it just did, and an agent on another node sees the same answer.
//!
//! Macros (`@daily`, `@hourly`, ...) are shifted by a per-volume jitter that is stable (a
//! hash of the volume's key), so a cluster's volumes don't all start at midnight; the
//! jitter is below a quarter of the period and at most 6 hours. A 5-field cron expression
//! runs exactly when it says. Times are UTC.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule with its jitter for one volume.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    jitter: Duration,
}

/// Why a schedule is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule {text:?}: {detail} (expected 5 cron fields like \"30 2 * * *\", or @hourly, @daily, @weekly, @monthly, @yearly)")]
pub struct ScheduleError {
    /// The schedule as written.
    pub text: String,
    /// What is wrong.
    pub detail: String,
}

/// The period of a macro, for its jitter.
fn macro_period(text: &str) -> Option<Duration> {
    match text.to_ascii_lowercase().as_str() {
        "@hourly" => Some(Duration::hours(1)),
        "@daily" | "@midnight" => Some(Duration::days(1)),
        "@weekly" => Some(Duration::weeks(1)),
        "@monthly" => Some(Duration::days(28)),
        "@yearly" | "@annually" => Some(Duration::days(365)),
        _ => None,
    }
}

impl Schedule {
    /// Parses `text` for the volume whose stable key is `key` (`namespace/pvc`).
    pub fn parse(text: &str, key: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let err = |detail: String| ScheduleError {
            text: text.to_string(),
            detail,
        };
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(err(format!("{} fields", text.split_whitespace().count())));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|e| err(e.to_string()))?;
        let jitter = match macro_period(text) {
            Some(period) => {
                let span = (period / 4).min(Duration::hours(6));
                let h = blake3::hash(key.as_bytes());
                let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
                let span_s = span.num_seconds().max(1) as u64;
                Duration::seconds((n % span_s) as i64)
            }
            None => Duration::zero(),
        };
        Ok(Schedule {
            text: text.to_string(),
            cron,
            jitter,
        })
    }

    /// The volume's shift from the macro's nominal times.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The newest time the schedule fired at or before `now`.
    pub fn last_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&(now - self.jitter), true)
            .ok()
            .map(|t| t + self.jitter)
    }

    /// The first time the schedule fires after `now`.
    pub fn next_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&(now - self.jitter), false)
            .ok()
            .map(|t| t + self.jitter)
    }

    /// The time between the schedule's last firing and its next one around `now` (a day
    /// for `@daily`): how old a snapshot may be and still count as this period's.
    pub fn period(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        Some(self.next_fire(now)? - self.last_fire(now)?)
    }

    /// Whether a volume whose newest snapshot was taken at `newest` is due at `now`.
    pub fn is_due(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match (newest, self.last_fire(now)) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(n), Some(fired)) => n < fired,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.jitter.is_zero() {
            f.write_str(&self.text)
        } else {
            write!(f, "{} (+{}s)", self.text, self.jitter.num_seconds())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn cron_fields_run_exactly_when_they_say() {
        let s = Schedule::parse("30 2 * * *", "app/data").unwrap();
        assert!(s.jitter().is_zero());
        let now = t(2026, 12, 3, 9, 0);
        assert_eq!(s.last_fire(now), Some(t(2026, 12, 3, 2, 30)));
        assert_eq!(s.next_fire(now), Some(t(2026, 12, 4, 2, 30)));
        // Yesterday's backup: due (the 02:30 run was missed while the node was down).
        assert!(s.is_due(Some(t(2026, 12, 2, 2, 31)), now));
        // Today's: not due.
        assert!(!s.is_due(Some(t(2026, 12, 3, 2, 31)), now));
        // Never backed up: due.
        assert!(s.is_due(None, now));
    }

    #[test]
    fn macros_are_jittered_stably_per_volume() {
        let a = Schedule::parse("@daily", "app/data").unwrap();
        let a2 = Schedule::parse("@daily", "app/data").unwrap();
        assert_eq!(a.jitter(), a2.jitter(), "stable for one volume");
        assert!(a.jitter() < Duration::hours(6));
        let jitters: std::collections::HashSet<i64> = (0..50)
            .map(|i| {
                Schedule::parse("@daily", &format!("ns/pvc-{i}"))
                    .unwrap()
                    .jitter()
                    .num_seconds()
            })
            .collect();
        assert!(jitters.len() > 40, "volumes spread out: {jitters:?}");
        let h = Schedule::parse("@hourly", "app/data").unwrap();
        assert!(h.jitter() < Duration::minutes(15));
        // The fire time is midnight plus the jitter.
        let fired = a.last_fire(t(2026, 12, 3, 12, 0)).unwrap();
        assert_eq!(fired, t(2026, 12, 3, 0, 0) + a.jitter());
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "@sometimes",
            "daily",
        ] {
            let e = Schedule::parse(bad, "k").unwrap_err();
            assert!(e.to_string().contains("expected 5 cron fields"), "{e}");
        }
    }
}
