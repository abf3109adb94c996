//! Durations on the command line: one grammar for every option that takes one.
//!
//! A duration is one or more whole numbers, each followed by its unit, written together
//! without spaces: `90s`, `30min`, `2h`, `1d12h`, `2w`, `6mo`, `1y6mo`. The units are
//! `s` (seconds), `min` (minutes), `h` (hours), `d` (days), `w` (weeks), `mo` (months) and
//! `y` (years); each may appear once, in any order. `0` alone is zero.
//!
//! `m` is refused everywhere: restic reads it as months, most other tools (and holdfast's
//! own prune before) as minutes, and a script that meant one must not silently get the
//! other. The message says to write `min` or `mo`. Empty strings, negative or fractional
//! numbers, unknown units, a unit given twice and durations longer than about 290 years
//! are refused too: a value that is not understood is never taken as zero.
//!
//! Not every option takes every unit: an exact span (`prune --safety-margin`) takes no
//! months or years, whose length varies ([`exact`]); a retention window (`forget
//! --keep-within*`) counts whole hours on the calendar, as restic's do, and takes no
//! minutes or seconds ([`retention`]).

use std::fmt;
use std::str::FromStr;

use holdfast_engine::retention::CalDuration;

/// The units, longest span first: the order [`Duration`]'s parts and its text follow.
const UNITS: [&str; 7] = ["y", "mo", "w", "d", "h", "min", "s"];
const Y: usize = 0;
const MO: usize = 1;
const W: usize = 2;
const D: usize = 3;
const H: usize = 4;
const MIN: usize = 5;
const S: usize = 6;

/// Seconds per unit. Months and years count as their longest (31 and 366 days) only to
/// bound the length of a duration; they are never converted to seconds.
const BOUND_SECS: [u64; 7] = [366 * 86400, 31 * 86400, 7 * 86400, 86400, 3600, 60, 1];

/// The longest duration: what fits in an i64 of nanoseconds (about 292 years).
const MAX_SECS: u64 = i64::MAX as u64 / 1_000_000_000;

/// The grammar in one line, for messages.
const GRAMMAR: &str = "whole numbers with units s, min, h, d, w, mo (months) or y (years), \
                       e.g. 2h, 90min, 1d12h";

/// A duration as written on the command line: how many of each unit (see the module
/// documentation). Keeps the units given, so it shows as written (in canonical order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Duration {
    parts: [u32; 7],
}

/// Why a duration was refused. The message names the problem and the fix; clap adds the
/// option and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration(String);

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidDuration {}

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration { parts: [0; 7] };

    /// Whether every part is zero.
    pub fn is_zero(&self) -> bool {
        self.parts.iter().all(|&n| n == 0)
    }

    /// Whether it has months or years (whose length depends on the calendar).
    pub fn has_calendar_units(&self) -> bool {
        self.parts[Y] != 0 || self.parts[MO] != 0
    }

    /// The length in nanoseconds, `None` with months or years. Always fits: parsing
    /// refuses longer durations.
    pub fn exact_nanos(&self) -> Option<i64> {
        if self.has_calendar_units() {
            return None;
        }
        let secs: u64 = self.parts[W..]
            .iter()
            .zip(&BOUND_SECS[W..])
            .map(|(&n, &s)| u64::from(n) * s)
            .sum();
        i64::try_from(secs).ok()?.checked_mul(1_000_000_000)
    }

    /// As a calendar duration for the retention rules: weeks become 7 days each. `None`
    /// with minutes or seconds (the rules count whole hours).
    pub fn to_calendar(self) -> Option<CalDuration> {
        if self.parts[MIN] != 0 || self.parts[S] != 0 {
            return None;
        }
        Some(CalDuration {
            years: self.parts[Y],
            months: self.parts[MO],
            days: self.parts[W].checked_mul(7)?.checked_add(self.parts[D])?,
            hours: self.parts[H],
        })
    }
}

impl fmt::Display for Duration {
    /// Canonical text: the non-zero parts, longest unit first (`1y6mo`, `1d12h`); `0s`
    /// for zero. Parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0s");
        }
        for (n, unit) in self.parts.iter().zip(UNITS) {
            if *n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, InvalidDuration> {
        let err = |why: String| Err(InvalidDuration(why));
        let t = s.trim();
        if t.is_empty() {
            return err(format!(
                "an empty duration is not zero: give {GRAMMAR} (0s for none)"
            ));
        }
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        let mut d = Duration::ZERO;
        let mut seen = [false; 7];
        let mut rest = t;
        while let Some(first) = rest.chars().next() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return err(match first {
                    '-' => "negative durations are not allowed".to_string(),
                    c if c.is_ascii_alphabetic() => format!("expected a number before {rest:?}"),
                    c => format!("unexpected {c:?}: give {GRAMMAR}"),
                });
            }
            let Ok(n) = rest[..digits].parse::<u32>() else {
                return err(format!("the number {} is too large", &rest[..digits]));
            };
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..letters];
            let slot = match unit {
                "" => {
                    return err(match rest.chars().next() {
                        None => format!("the number {n} needs a unit: {GRAMMAR}"),
                        Some('.' | ',') => {
                            "whole numbers only: write 90min rather than 1.5h".to_string()
                        }
                        Some(c) => format!("unexpected {c:?} after {n}: give {GRAMMAR}"),
                    })
                }
                "m" | "M" => {
                    return err(format!(
                        "the unit {unit:?} is ambiguous: write {n}min for minutes or {n}mo \
                         for months (restic's 2y5m is 2y5mo here)"
                    ))
                }
                u => match UNITS.iter().position(|x| *x == u) {
                    Some(i) => i,
                    None => {
                        return err(format!(
                            "unknown unit {u:?}: use s, min, h, d, w, mo (months) or y (years)"
                        ))
                    }
                },
            };
            if seen[slot] {
                return err(format!("the unit {unit:?} is given twice"));
            }
            seen[slot] = true;
            d.parts[slot] = n;
            rest = &rest[letters..];
        }
        let bound: u64 = d
            .parts
            .iter()
            .zip(BOUND_SECS)
            .map(|(&n, s)| u64::from(n) * s)
            .sum();
        if bound > MAX_SECS {
            return err("too long: a duration may span at most about 290 years".to_string());
        }
        Ok(d)
    }
}

/// clap value parser for an exact span (`prune --safety-margin`): any duration without
/// months or years.
pub fn exact(s: &str) -> Result<Duration, InvalidDuration> {
    let d: Duration = s.parse()?;
    if d.has_calendar_units() {
        return Err(InvalidDuration(
            "months and years have no fixed length: give the span in s, min, h, d or w \
             (e.g. 30d)"
                .to_string(),
        ));
    }
    Ok(d)
}

/// clap value parser for a retention window (`forget --keep-within*`): any duration
/// without minutes or seconds.
pub fn retention(s: &str) -> Result<Duration, InvalidDuration> {
    let d: Duration = s.parse()?;
    if d.to_calendar().is_none() {
        return Err(InvalidDuration(
            "retention windows count whole hours: use h, d, w, mo (months) or y (years), \
             e.g. 7d, 1y6mo, 2d12h"
                .to_string(),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Duration, String> {
        s.parse::<Duration>().map_err(|e| e.to_string())
    }

    fn secs(s: &str) -> i64 {
        parse(s).unwrap().exact_nanos().unwrap() / 1_000_000_000
    }

    #[test]
    fn exact_spans() {
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("90min"), 5400);
        assert_eq!(secs("1h30min"), 5400);
        assert_eq!(secs("30min1h"), 5400);
        assert_eq!(secs("1d12h"), 36 * 3600);
        assert_eq!(secs("2w"), 14 * 86400);
        assert_eq!(secs("45s"), 45);
        assert_eq!(secs("1w2d3h4min5s"), 9 * 86400 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("0s"), 0);
        assert_eq!(secs(" 2h "), 7200);
        assert_eq!(parse("1y").unwrap().exact_nanos(), None);
        assert_eq!(parse("1mo").unwrap().exact_nanos(), None);
    }

    #[test]
    fn calendar_spans() {
        let cal = |s: &str| parse(s).unwrap().to_calendar();
        assert_eq!(
            cal("2y5mo7d3h"),
            Some(CalDuration {
                years: 2,
                months: 5,
                days: 7,
                hours: 3
            })
        );
        assert_eq!(
            cal("1w1d"),
            Some(CalDuration {
                days: 8,
                ..CalDuration::default()
            })
        );
        assert_eq!(cal("1h30min"), None);
        assert_eq!(cal("10s"), None);
    }

    #[test]
    fn refused() {
        for (bad, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("5", "needs a unit"),
            ("1d12", "needs a unit"),
            ("-1h", "negative"),
            ("h", "expected a number"),
            ("1.5h", "whole numbers"),
            ("1,5h", "whole numbers"),
            ("2x", "unknown unit"),
            ("2hours", "unknown unit"),
            ("2H", "unknown unit"),
            ("30m", "ambiguous"),
            ("30M", "ambiguous"),
            ("2y5m7d3h", "ambiguous"),
            ("1h1h", "twice"),
            ("1d 12h", "unexpected ' '"),
            ("+1h", "unexpected '+'"),
            ("99999999999s", "too large"),
            ("4294967295w", "too long"),
            ("292y", "too long"),
            ("2h\u{e9}", "unexpected"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e:?} does not say {says:?}");
        }
        let e = parse("30m").unwrap_err();
        assert!(e.contains("30min") && e.contains("30mo"), "{e}");
        assert!(parse("291y").is_ok());
        assert!(parse("15250w").is_ok());
    }

    #[test]
    fn option_parsers() {
        assert!(exact("2h").is_ok());
        assert!(exact("1mo")
            .unwrap_err()
            .to_string()
            .contains("no fixed length"));
        assert!(exact("").is_err());
        assert!(retention("1y6mo").is_ok());
        assert!(retention("1d12h").is_ok());
        assert!(retention("90min")
            .unwrap_err()
            .to_string()
            .contains("whole hours"));
        assert!(retention("1m")
            .unwrap_err()
            .to_string()
            .contains("ambiguous"));
    }

    #[test]
    fn display() {
        assert_eq!(parse("12h1d").unwrap().to_string(), "1d12h");
        assert_eq!(parse("0h").unwrap().to_string(), "0s");
        assert_eq!(parse("0").unwrap().to_string(), "0s");
        assert_eq!(parse("6mo1y").unwrap().to_string(), "1y6mo");
        assert_eq!(parse("5s4min3h2d1w").unwrap().to_string(), "1w2d3h4min5s");
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        // Bounds that keep the total under the 290-year limit.
        (
            0u32..=100,
            0u32..=600,
            0u32..=1000,
            0u32..=10_000,
            0u32..=100_000,
            0u32..=1_000_000,
            0u32..=10_000_000,
        )
            .prop_map(|(y, mo, w, d, h, min, s)| Duration {
                parts: [y, mo, w, d, h, min, s],
            })
    }

    proptest! {
        /// Display then FromStr gives the same duration.
        #[test]
        fn display_round_trips(d in any_duration()) {
            let text = d.to_string();
            prop_assert_eq!(text.parse::<Duration>(), Ok(d), "{}", text);
        }

        /// The parts may come in any order and give the same duration.
        #[test]
        fn order_does_not_matter(d in any_duration(), seed in any::<u64>()) {
            let mut pieces: Vec<String> = d
                .parts
                .iter()
                .zip(UNITS)
                .filter(|(n, _)| **n != 0)
                .map(|(n, u)| format!("{n}{u}"))
                .collect();
            // A deterministic shuffle from the seed.
            for i in (1..pieces.len()).rev() {
                let j = (seed.rotate_left(i as u32) % (i as u64 + 1)) as usize;
                pieces.swap(i, j);
            }
            let text = if pieces.is_empty() { "0s".to_string() } else { pieces.concat() };
            prop_assert_eq!(text.parse::<Duration>(), Ok(d), "{}", text);
        }

        /// Any text either parses to a duration that shows and parses back to itself, or
        /// is refused with a message; it never panics.
        #[test]
        fn arbitrary_text(s in "[0-9a-z .,+-]{0,16}") {
            if let Ok(d) = s.parse::<Duration>() {
                prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
            }
        }

        /// The exact length is the sum of the parts.
        #[test]
        fn exact_length(
            w in 0u32..1000,
            d in 0u32..1000,
            h in 0u32..1000,
            min in 0u32..1000,
            s in 0u32..1000,
        ) {
            let text = format!("{w}w{d}d{h}h{min}min{s}s");
            let want = ((((u64::from(w) * 7 + u64::from(d)) * 24 + u64::from(h)) * 60
                + u64::from(min)) * 60 + u64::from(s)) as i64 * 1_000_000_000;
            prop_assert_eq!(exact(&text).unwrap().exact_nanos(), Some(want));
        }
    }
}
