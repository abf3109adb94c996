//! Names of the virtual directories: snapshot times, escaped host and tag names.
//!
//! A name shown in the mount must be one path component: never empty, `.` or `..`, and
//! without `/` or NUL. Host names and tags are free text (a tag may be
//! `owner=Deployment/web`), so they are escaped the way bucket keys are (SPEC.md §9.3).

use holdfast_repo::Id;

/// A snapshot's time as a directory name: RFC 3339 in UTC to the second,
/// `2026-12-03T18:06:15Z`.
pub fn time_name(time_ns: i64) -> String {
    holdfast_engine::listing::format_time(time_ns, 0)
}

/// Directory names for snapshots listed together, in the order given: each its
/// [`time_name`], and where two or more share one, each of those followed by `-` and its
/// short ID (the full ID if even the short IDs collide), so every name is unique.
pub fn time_names(snaps: &[(Id, i64)]) -> Vec<String> {
    let base: Vec<String> = snaps.iter().map(|(_, t)| time_name(*t)).collect();
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for b in &base {
        *count.entry(b.as_str()).or_default() += 1;
    }
    let with_short: Vec<String> = snaps
        .iter()
        .zip(&base)
        .map(|((id, _), b)| {
            if count[b.as_str()] > 1 {
                format!("{b}-{}", id.short())
            } else {
                b.clone()
            }
        })
        .collect();
    let mut count2 = std::collections::HashMap::<&str, usize>::new();
    for n in &with_short {
        *count2.entry(n.as_str()).or_default() += 1;
    }
    snaps
        .iter()
        .zip(&base)
        .zip(&with_short)
        .map(|(((id, _), b), n)| {
            if count2[n.as_str()] > 1 {
                format!("{b}-{}", id.to_hex())
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Free text (a host name, a tag) as one path component: `%` becomes `%25`, `/` `%2F`,
/// NUL `%00`; `.` and `..` have their dots escaped as `%2E`, and the empty text is `%`.
pub fn escape(text: &str) -> Vec<u8> {
    match text {
        "" => return b"%".to_vec(),
        "." => return b"%2E".to_vec(),
        ".." => return b"%2E%2E".to_vec(),
        _ => {}
    }
    let mut out = Vec::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'/' => out.extend_from_slice(b"%2F"),
            0 => out.extend_from_slice(b"%00"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> Id {
        Id([b; 32])
    }

    #[test]
    fn time_names_are_utc_seconds() {
        // 2026-12-03T18:06:15Z
        let t = 1_796_321_175_123_456_789;
        assert_eq!(time_name(t), "2026-12-03T18:06:15Z");
        assert_eq!(time_names(&[(id(1), t)]), vec!["2026-12-03T18:06:15Z"]);
    }

    #[test]
    fn colliding_times_get_the_short_id() {
        let t = 1_796_321_175_000_000_000;
        let names = time_names(&[
            (id(0xab), t),
            (id(0xcd), t + 5),
            (id(0xef), t + 2_000_000_000),
        ]);
        assert_eq!(
            names,
            vec![
                "2026-12-03T18:06:15Z-abababab",
                "2026-12-03T18:06:15Z-cdcdcdcd",
                "2026-12-03T18:06:17Z",
            ]
        );
    }

    #[test]
    fn colliding_short_ids_get_the_full_id() {
        let t = 1_796_321_175_000_000_000;
        let mut a = [7u8; 32];
        a[31] = 1;
        let names = time_names(&[(Id(a), t), (id(7), t)]);
        assert_eq!(names[0], format!("2026-12-03T18:06:15Z-{}", Id(a).to_hex()));
        assert_eq!(names[1], format!("2026-12-03T18:06:15Z-{}", id(7).to_hex()));
    }

    #[test]
    fn escape_examples() {
        assert_eq!(escape("web-1"), b"web-1");
        assert_eq!(escape("namespace=ns"), b"namespace=ns");
        assert_eq!(escape("owner=Deployment/web"), b"owner=Deployment%2Fweb");
        assert_eq!(escape("100%"), b"100%25");
        assert_eq!(escape(""), b"%");
        assert_eq!(escape("."), b"%2E");
        assert_eq!(escape(".."), b"%2E%2E");
        assert_eq!(escape("a\0b"), b"a%00b");
    }

    proptest! {
        #[test]
        fn escaped_names_are_safe_and_distinct(a in ".{0,12}", b in ".{0,12}") {
            for n in [escape(&a), escape(&b)] {
                prop_assert!(!n.is_empty() && n != b"." && n != b"..");
                prop_assert!(!n.contains(&b'/') && !n.contains(&0));
            }
            prop_assert_eq!(a == b, escape(&a) == escape(&b));
        }
    }
}
