//! CephFS snapshot directories: a CephFS mount shows the snapshots of its directory (and,
//! as `_<name>_<inode>`, of its ancestors) under `.snap/`. Where the user already schedules
//! CephFS snapshots (`ceph fs snap-schedule`), reading the newest one gives a point-in-time
//! backup without any API object (`holdfast.io/snapshot-source: cephfs-snapdir`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

/// One snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapDir {
    /// Its name under `.snap/`.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// When it was taken (CephFS's `ceph.snap.btime`; else the directory's mtime).
    pub time: DateTime<Utc>,
}

/// When a snapshot directory was taken: the `ceph.snap.btime` virtual xattr
/// (`<seconds>.<nanoseconds>`), else its modification time.
fn snap_time(p: &Path) -> Option<DateTime<Utc>> {
    if let Ok(Some(v)) = xattr::get(p, "ceph.snap.btime") {
        let text = String::from_utf8_lossy(&v);
        let text = text.trim_end_matches('\0');
        let (s, ns) = text.split_once('.').unwrap_or((text, "0"));
        if let (Ok(s), Ok(ns)) = (s.parse::<i64>(), ns.parse::<u32>()) {
            return DateTime::from_timestamp(s, ns);
        }
    }
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    Some(m.into())
}

/// The newest snapshot under `<mount>/.snap/` taken within `period` before `now` (any age
/// when `period` is `None`); an error says why none qualifies.
pub fn newest(
    mount: &Path,
    now: DateTime<Utc>,
    period: Option<Duration>,
) -> Result<SnapDir, String> {
    let dir = mount.join(".snap");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "{} cannot be read ({e}): not a CephFS mount?",
            dir.display()
        )
    })?;
    let mut best: Option<SnapDir> = None;
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let Some(time) = snap_time(&path) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if best
            .as_ref()
            .is_none_or(|b| (time, &name) > (b.time, &b.name))
        {
            best = Some(SnapDir { name, path, time });
        }
    }
    let best = best.ok_or_else(|| format!("{} holds no snapshot", dir.display()))?;
    if let Some(p) = period {
        if best.time < now - p {
            return Err(format!(
                "the newest snapshot {} is from {}, older than the schedule's period ({} s): \
                 is the CephFS snapshot schedule running?",
                best.name,
                best.time.to_rfc3339(),
                p.num_seconds()
            ));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(p: &Path, t: DateTime<Utc>) {
        let ft = std::time::SystemTime::from(t);
        std::fs::File::open(p).unwrap().set_modified(ft).unwrap();
    }

    #[test]
    fn newest_within_the_period() {
        let d = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let snap = d.path().join(".snap");
        for (name, age_h) in [
            ("scheduled-old", 30),
            ("scheduled-new", 2),
            ("_parent_1099", 5),
        ] {
            std::fs::create_dir_all(snap.join(name)).unwrap();
            set_mtime(&snap.join(name), now - Duration::hours(age_h));
        }
        std::fs::write(snap.join("not-a-dir"), b"").unwrap();
        let s = newest(d.path(), now, Some(Duration::hours(24))).unwrap();
        assert_eq!(s.name, "scheduled-new");
        assert_eq!(s.path, snap.join("scheduled-new"));
        let e = newest(d.path(), now, Some(Duration::hours(1))).unwrap_err();
        assert!(e.contains("older than the schedule's period"), "{e}");
        let e = newest(&d.path().join("nothing"), now, None).unwrap_err();
        assert!(e.contains("not a CephFS mount"), "{e}");
    }
}
