//! Which volumes are backed up, when, which folders, and how long kept: annotations on the
//! PVC, else on its namespace, else the agent's configuration (as backsnap and k8up users
//! know it). Every PVC is backed up unless opted out with an empty schedule.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use holdfast_engine::retention::{parse_count, CalDuration, Policy};

use crate::config::VolumeDefaults;
use crate::schedule::Schedule;

/// Annotation: cron expression or macro; the empty string opts out.
pub const SCHEDULE: &str = "holdfast.io/schedule";
/// Annotation: comma-separated subpaths inside the volume to back up.
pub const PATHS: &str = "holdfast.io/paths";
/// Annotation: comma-separated globs left out, as `backup --exclude`.
pub const EXCLUDE: &str = "holdfast.io/exclude";
/// Annotation: retention, e.g. `daily=14,weekly=8`.
pub const KEEP: &str = "holdfast.io/keep";
/// Annotation: where the data is read from ([`SnapshotSource`]).
pub const SNAPSHOT_SOURCE: &str = "holdfast.io/snapshot-source";
/// Annotation: the VolumeSnapshotClass to snapshot the volume with.
pub const SNAPSHOT_CLASS: &str = "holdfast.io/snapshot-class";

/// Where a volume's data is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotSource {
    /// A CSI VolumeSnapshot where the cluster has the snapshot API and a class for the
    /// volume's driver (point in time); else the live mount, with a warning once.
    #[default]
    Auto,
    /// A CSI VolumeSnapshot, or the backup fails (never a live read).
    Csi,
    /// The live mount of the pod that uses it (files may change while they are read).
    Live,
    /// The newest CephFS snapshot under the mount's `.snap` directory, if it is newer than
    /// the schedule's period (the user schedules CephFS snapshots); else as `auto`.
    CephfsSnapdir,
}

impl SnapshotSource {
    /// Parses an annotation value.
    pub fn parse(v: &str) -> Result<SnapshotSource, String> {
        match v.trim() {
            "" | "auto" => Ok(SnapshotSource::Auto),
            "csi" => Ok(SnapshotSource::Csi),
            "live" => Ok(SnapshotSource::Live),
            "cephfs-snapdir" => Ok(SnapshotSource::CephfsSnapdir),
            other => Err(format!(
                "{other:?} is not one of auto, csi, live, cephfs-snapdir"
            )),
        }
    }
}

/// Where a setting came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An annotation on the PVC.
    Pvc,
    /// An annotation on the PVC's namespace.
    Namespace,
    /// The agent's configuration.
    Config,
}

/// What the annotations and configuration say about one volume.
#[derive(Debug, Clone)]
pub struct Selection {
    /// When to back it up; `None`: opted out.
    pub schedule: Option<Schedule>,
    /// Where the schedule came from.
    pub schedule_origin: Origin,
    /// Subpaths inside the volume (relative, normalised); empty: the whole volume.
    pub paths: Vec<PathBuf>,
    /// Globs to leave out.
    pub exclude: Vec<String>,
    /// Retention; `None`: keep every snapshot.
    pub keep: Option<Policy>,
    /// Where the data is read from.
    pub source: SnapshotSource,
    /// The VolumeSnapshotClass asked for (else the driver's default).
    pub snapshot_class: Option<String>,
}

/// An annotation that could not be understood, named with its object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation} on {origin:?} {object}: {detail}")]
pub struct SelectionError {
    /// The annotation key.
    pub annotation: &'static str,
    /// Where it was found.
    pub origin: Origin,
    /// `namespace/pvc` or `namespace`.
    pub object: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Resolves one setting: PVC, then namespace, then the configuration.
fn pick<'a>(
    key: &str,
    pvc: &'a BTreeMap<String, String>,
    ns: &'a BTreeMap<String, String>,
    default: &'a str,
) -> (&'a str, Origin) {
    if let Some(v) = pvc.get(key) {
        (v, Origin::Pvc)
    } else if let Some(v) = ns.get(key) {
        (v, Origin::Namespace)
    } else {
        (default, Origin::Config)
    }
}

/// Splits a comma-separated list, dropping empty items.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A subpath must stay inside the volume: relative, no `..`.
pub(crate) fn subpath(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(format!("subpath {p:?} leaves the volume")),
        }
    }
    Ok(out)
}

/// Parses a retention like `daily=14,weekly=8,within=30d`; the keys are `backup forget`'s
/// `--keep-*` options without the prefix. Empty: keep everything.
pub fn parse_keep(v: &str) -> Result<Option<Policy>, String> {
    let mut p = Policy::default();
    let items = list(v);
    if items.is_empty() {
        return Ok(None);
    }
    for item in items {
        let (k, val) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value (e.g. daily=14)"))?;
        let (k, val) = (k.trim(), val.trim());
        let count = || parse_count(val).map_err(|e| e.to_string());
        let dur = || val.parse::<CalDuration>().map_err(|e| e.to_string());
        match k {
            "last" => p.last = count()?,
            "hourly" => p.hourly = count()?,
            "daily" => p.daily = count()?,
            "weekly" => p.weekly = count()?,
            "monthly" => p.monthly = count()?,
            "yearly" => p.yearly = count()?,
            "within" => p.within = dur()?,
            "within-hourly" => p.within_hourly = dur()?,
            "within-daily" => p.within_daily = dur()?,
            "within-weekly" => p.within_weekly = dur()?,
            "within-monthly" => p.within_monthly = dur()?,
            "within-yearly" => p.within_yearly = dur()?,
            "tag" => p.tags.push(vec![val.to_string()]),
            _ => {
                return Err(format!(
                    "unknown rule {k:?} (last, hourly, daily, weekly, monthly, yearly, within, \
                     within-daily, ..., tag)"
                ))
            }
        }
    }
    if p.is_empty() {
        // Every rule zero would remove every snapshot: refuse, as `forget` does.
        return Err("every rule is zero: that would remove every snapshot".into());
    }
    Ok(Some(p))
}

/// Resolves a volume's selection from its PVC's and namespace's annotations and the
/// configuration defaults; `key` is `namespace/pvc`.
pub fn resolve(
    key: &str,
    namespace: &str,
    pvc: &BTreeMap<String, String>,
    ns: &BTreeMap<String, String>,
    defaults: &VolumeDefaults,
) -> Result<Selection, SelectionError> {
    let err = |annotation, origin, detail: String| SelectionError {
        annotation,
        origin,
        object: if origin == Origin::Namespace {
            namespace.to_string()
        } else {
            key.to_string()
        },
        detail,
    };
    let (sched, schedule_origin) = pick(SCHEDULE, pvc, ns, &defaults.schedule);
    let schedule = if sched.trim().is_empty() {
        None
    } else {
        Some(
            Schedule::parse(sched, key)
                .map_err(|e| err(SCHEDULE, schedule_origin, e.to_string()))?,
        )
    };
    let (paths_v, o) = pick(PATHS, pvc, ns, "");
    let mut paths = Vec::new();
    for p in list(paths_v) {
        let sp = subpath(&p).map_err(|d| err(PATHS, o, d))?;
        if sp.as_os_str().is_empty() {
            paths.clear();
            break; // "/" or "." : the whole volume
        }
        paths.push(sp);
    }
    paths.sort();
    paths.dedup();
    let exclude = match pvc.get(EXCLUDE).or(ns.get(EXCLUDE)) {
        Some(v) => list(v),
        None => defaults.exclude.clone(),
    };
    let (keep_v, o) = pick(KEEP, pvc, ns, &defaults.keep);
    let keep = parse_keep(keep_v).map_err(|d| err(KEEP, o, d))?;
    let default_source = match defaults.snapshot_source {
        SnapshotSource::Auto => "auto",
        SnapshotSource::Csi => "csi",
        SnapshotSource::Live => "live",
        SnapshotSource::CephfsSnapdir => "cephfs-snapdir",
    };
    let (source_v, o) = pick(SNAPSHOT_SOURCE, pvc, ns, default_source);
    let source = SnapshotSource::parse(source_v).map_err(|d| err(SNAPSHOT_SOURCE, o, d))?;
    let (class_v, _) = pick(SNAPSHOT_CLASS, pvc, ns, "");
    let snapshot_class = Some(class_v.trim().to_string()).filter(|c| !c.is_empty());
    Ok(Selection {
        schedule,
        schedule_origin,
        paths,
        exclude,
        keep,
        source,
        snapshot_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pvc_beats_namespace_beats_config() {
        let d = VolumeDefaults::default();
        let s = resolve("a/b", "a", &ann(&[]), &ann(&[]), &d).unwrap();
        assert_eq!(s.schedule_origin, Origin::Config);
        assert!(s.schedule.is_some());
        assert_eq!(s.keep.as_ref().unwrap().daily, 14);

        let ns = ann(&[(SCHEDULE, ""), (KEEP, "daily=7")]);
        let s = resolve("a/b", "a", &ann(&[]), &ns, &d).unwrap();
        assert!(s.schedule.is_none(), "namespace opts out");
        assert_eq!(s.schedule_origin, Origin::Namespace);
        assert_eq!(s.keep.as_ref().unwrap().daily, 7);

        let pvc = ann(&[(SCHEDULE, "0 3 * * *")]);
        let s = resolve("a/b", "a", &pvc, &ns, &d).unwrap();
        assert!(s.schedule.is_some(), "the PVC opts back in");
        assert_eq!(s.schedule_origin, Origin::Pvc);
    }

    #[test]
    fn paths_are_relative_and_stay_inside() {
        let d = VolumeDefaults::default();
        let pvc = ann(&[(PATHS, "data/photos, /config ,data/photos,")]);
        let s = resolve("a/b", "a", &pvc, &ann(&[]), &d).unwrap();
        assert_eq!(
            s.paths,
            vec![PathBuf::from("config"), PathBuf::from("data/photos")]
        );
        let pvc = ann(&[(PATHS, "data,/")]);
        assert!(resolve("a/b", "a", &pvc, &ann(&[]), &d)
            .unwrap()
            .paths
            .is_empty());
        let pvc = ann(&[(PATHS, "../etc")]);
        let e = resolve("a/b", "a", &pvc, &ann(&[]), &d).unwrap_err();
        assert_eq!(e.annotation, PATHS);
        assert!(e.detail.contains("leaves the volume"), "{e}");
    }

    #[test]
    fn keep_rules_parse_and_zero_is_refused() {
        let p = parse_keep("daily=14, weekly=8,within=30d,last=unlimited")
            .unwrap()
            .unwrap();
        assert_eq!((p.daily, p.weekly, p.within.days), (14, 8, 30));
        assert_eq!(parse_keep("").unwrap(), None);
        assert!(parse_keep("daily=0").is_err());
        assert!(parse_keep("dailly=3").unwrap_err().contains("unknown rule"));
        assert!(parse_keep("daily").is_err());
        let d = VolumeDefaults::default();
        let e = resolve("a/b", "a", &ann(&[(KEEP, "daily=x")]), &ann(&[]), &d).unwrap_err();
        assert_eq!(e.origin, Origin::Pvc);
        assert_eq!(e.object, "a/b");
    }

    #[test]
    fn snapshot_source_and_class() {
        let d = VolumeDefaults::default();
        let s = resolve("a/b", "a", &ann(&[]), &ann(&[]), &d).unwrap();
        assert_eq!(s.source, SnapshotSource::Auto);
        assert_eq!(s.snapshot_class, None);
        let ns = ann(&[(SNAPSHOT_SOURCE, "live"), (SNAPSHOT_CLASS, "fast")]);
        let s = resolve(
            "a/b",
            "a",
            &ann(&[(SNAPSHOT_SOURCE, "cephfs-snapdir")]),
            &ns,
            &d,
        )
        .unwrap();
        assert_eq!(s.source, SnapshotSource::CephfsSnapdir);
        assert_eq!(s.snapshot_class.as_deref(), Some("fast"));
        let e = resolve(
            "a/b",
            "a",
            &ann(&[(SNAPSHOT_SOURCE, "snap")]),
            &ann(&[]),
            &d,
        )
        .unwrap_err();
        assert_eq!(e.annotation, SNAPSHOT_SOURCE);
        assert!(e.detail.contains("auto, csi, live, cephfs-snapdir"), "{e}");
    }

    #[test]
    fn a_bad_schedule_names_its_object() {
        let d = VolumeDefaults::default();
        let e = resolve("a/b", "a", &ann(&[]), &ann(&[(SCHEDULE, "daily")]), &d).unwrap_err();
        assert_eq!(
            (e.annotation, e.origin, e.object.as_str()),
            (SCHEDULE, Origin::Namespace, "a")
        );
    }
}
