//! `holdfast migrate`: turns on a repository format feature by writing the config of the
//! next generation, then waits until the feature is **in force** (SPEC.md §13).
//!
//! A writer reads the config when its session starts. One that started before the new
//! config landed may still write the old way until it ends, exactly as a writer that
//! started before a gc marker may still use the marked packs (§12.3). So a feature counts
//! as in force only once no session that started before the config (plus the skew
//! allowance) is live; unreadable session files count as such sessions until they are
//! stale. Turning a feature off is not supported: objects written with it stay in the
//! repository, and readers that do not know it would meet them.

use std::time::{Duration, Instant};

use holdfast_repo::config::{Feature, FeatureClass, KNOWN_FEATURES};
use holdfast_repo::gc::Role;
use holdfast_repo::repository::Repository;
use holdfast_repo::session::{bad_is_stale, is_live, now_ns, BadSession, ListedSession, SKEW_NS};
use holdfast_repo::Id;

use crate::error::{EngineError, Result};

/// How `migrate` runs.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Host name for the migration's session.
    pub host: String,
    /// How long to wait for the feature to come in force; `None` returns at once.
    pub wait: Option<Duration>,
    /// How often to look at the sessions again while waiting.
    pub poll: Duration,
}

/// What `migrate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateReport {
    /// The feature turned on.
    pub feature: String,
    /// The generation of the config written.
    pub generation: u64,
    /// The config file written.
    pub config: Id,
    /// Whether the feature is in force: no session from before the config is live.
    pub in_force: bool,
    /// Sessions from before the config that were still live when `migrate` returned.
    pub pending_sessions: usize,
    /// How long it waited for them, ms.
    pub waited_ms: u64,
}

/// Whether a feature is on, and in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureState {
    /// On and in force.
    On,
    /// On, but sessions that started before it still run and may write the old way.
    Pending,
    /// Off: `holdfast migrate NAME` turns it on (known features only).
    Off,
}

/// One feature as `migrate --list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureStatus {
    /// Its name.
    pub name: String,
    /// Its class.
    pub class: FeatureClass,
    /// The holdfast version that introduced it.
    pub since: String,
    /// What it changes (`None` for a feature this build does not know).
    pub what: Option<&'static str>,
    /// Whether this build knows it.
    pub known: bool,
    /// On, pending or off.
    pub state: FeatureState,
    /// Live sessions from before it (while pending).
    pub pending_sessions: usize,
    /// When it was turned on.
    pub enabled_ns: Option<i64>,
}

/// What `migrate --list` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureList {
    /// Encoding version of the current config (1: a repository no migration touched).
    pub config_version: u8,
    /// Its generation.
    pub generation: u64,
    /// Its name.
    pub config: Id,
    /// How many config files the repository holds (one per generation).
    pub config_files: usize,
    /// Every known feature, then those on that this build does not know.
    pub features: Vec<FeatureStatus>,
}

/// Live sessions (other than `own`) that started before `since` plus the skew allowance,
/// and unreadable session files not yet stale (their start is unknown), at server time
/// `now`: the writers that may still write as before a config that landed at `since`.
pub fn sessions_before(
    sessions: &[ListedSession],
    bad: &[BadSession],
    since: i64,
    now: i64,
    own: Option<[u8; 16]>,
) -> usize {
    sessions
        .iter()
        .filter(|s| {
            Some(s.session.session_id) != own
                && is_live(s, now)
                && s.session.start_ns < since.saturating_add(SKEW_NS)
        })
        .count()
        + bad.iter().filter(|b| !bad_is_stale(b, now)).count()
}

/// Every feature of the repository and this build, with its state; reads the config files
/// and the sessions afresh.
pub fn list(repo: &Repository) -> Result<FeatureList> {
    let set = repo.refresh_config()?;
    let (sessions, bad) = repo.sessions()?;
    let now = now_ns();
    let current = &set.current().config;
    let state_of = |name: &str| match set.feature_since(name) {
        None => (FeatureState::Off, 0),
        Some(since) => match sessions_before(&sessions, &bad, since, now, None) {
            0 => (FeatureState::On, 0),
            n => (FeatureState::Pending, n),
        },
    };
    let enabled = |name: &str| {
        current
            .features
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.enabled_ns)
    };
    let mut features: Vec<FeatureStatus> = KNOWN_FEATURES
        .iter()
        .map(|f| {
            let (state, pending_sessions) = state_of(f.name);
            FeatureStatus {
                name: f.name.into(),
                class: f.class,
                since: f.since.into(),
                what: Some(f.what),
                known: true,
                state,
                pending_sessions,
                enabled_ns: enabled(f.name),
            }
        })
        .collect();
    features.extend(current.unknown_features().map(|e| {
        let (state, pending_sessions) = state_of(&e.name);
        FeatureStatus {
            name: e.name.clone(),
            class: e.class,
            since: e.since.clone(),
            what: None,
            known: false,
            state,
            pending_sessions,
            enabled_ns: Some(e.enabled_ns),
        }
    }));
    Ok(FeatureList {
        config_version: current.version,
        generation: current.generation,
        config: set.current().id,
        config_files: set.files().len(),
        features,
    })
}

/// Turns on the feature `name`: under a session of the pruner's role (so that no prune or
/// other migration runs at the same time, SPEC.md §12.3), writes the config of the next
/// generation with the feature on; then, with `opts.wait`, waits until no session from
/// before it is live. Refuses unknown features and features already on.
pub fn migrate(repo: &Repository, name: &str, opts: &MigrateOptions) -> Result<MigrateReport> {
    let feature = Feature::by_name(name).ok_or_else(|| {
        EngineError::Usage(format!(
            "unknown feature `{name}`: this holdfast knows {}; `holdfast migrate --list` describes them",
            KNOWN_FEATURES
                .iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    // The session comes first; starting it reads the config files again.
    let session = repo.start_session(Role::Prune, &opts.host)?;
    let own = session.session.session_id;
    let (sessions, _) = repo.sessions()?;
    let now = session.server_now_ns();
    if let Some(other) = sessions
        .iter()
        .find(|s| s.session.role == Role::Prune && s.session.session_id != own && is_live(s, now))
    {
        return Err(EngineError::PruneRunning {
            host: other.session.host.clone(),
            pid: other.session.pid,
        });
    }
    let current = repo.config_set().current().clone();
    if current.config.has(feature) {
        return Err(holdfast_repo::Error::Refused(format!(
            "feature `{}` is already on (config generation {}); features cannot be turned off",
            feature.name, current.config.generation
        ))
        .into());
    }
    let next = current
        .config
        .with_feature(feature, session.server_now_ns());
    let config = repo.write_config(&session, &next)?;
    let offset = session.server_offset_ns;
    // Waiting writes nothing: the session ends now, so prunes are not held back.
    drop(session);
    let since = repo
        .config_set()
        .feature_since(feature.name)
        .unwrap_or(next.written_ns);
    let started = Instant::now();
    let pending = loop {
        let (sessions, bad) = repo.sessions()?;
        let n = sessions_before(&sessions, &bad, since, now_ns() + offset, Some(own));
        let left = opts
            .wait
            .and_then(|w| w.checked_sub(started.elapsed()))
            .filter(|d| !d.is_zero());
        match (n, left) {
            (0, _) | (_, None) => break n,
            (_, Some(left)) => std::thread::sleep(opts.poll.min(left)),
        }
    };
    Ok(MigrateReport {
        feature: feature.name.into(),
        generation: next.generation,
        config,
        in_force: pending == 0,
        pending_sessions: pending,
        waited_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::BackupProgress;
    use crate::backup::{run, BackupRequest, ParentChoice, Source};
    use crate::testing::{repo, repo_v1};
    use holdfast_repo::config::{SESSION_V2, SNAPSHOT_V2};

    fn opts(wait_ms: Option<u64>) -> MigrateOptions {
        MigrateOptions {
            host: "m".into(),
            wait: wait_ms.map(Duration::from_millis),
            poll: Duration::from_millis(20),
        }
    }

    fn request(src: &std::path::Path) -> BackupRequest {
        let mut req = BackupRequest::new(vec![Source::new(src)]);
        req.host = "h".into();
        req.parent = ParentChoice::None;
        req
    }

    fn state(r: &Repository, name: &str) -> (FeatureState, usize) {
        let l = list(r).unwrap();
        let f = l.features.iter().find(|f| f.name == name).unwrap();
        (f.state, f.pending_sessions)
    }

    #[test]
    fn a_format_1_repository_writes_version_1_snapshots_until_migrated() {
        let d = tempfile::tempdir().unwrap();
        let r = repo_v1(&d.path().join("repo"));
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        assert_eq!(state(&r, "snapshot-v2").0, FeatureState::Off);
        let out = run(&r, &request(&src), &BackupProgress::default()).unwrap();
        assert_eq!(out.snapshot.ext.host_seq, None);
        let rep = migrate(&r, "snapshot-v2", &opts(Some(1000))).unwrap();
        assert!(rep.in_force && rep.generation == 2, "{rep:?}");
        let l = list(&r).unwrap();
        assert_eq!((l.config_version, l.generation, l.config_files), (2, 2, 2));
        // The first version-2 config records session-v2 too.
        assert_eq!(state(&r, "session-v2").0, FeatureState::On);
        let out = run(&r, &request(&src), &BackupProgress::default()).unwrap();
        assert_eq!(out.snapshot.ext.host_seq, Some(1));
        // Again: refused, nothing written.
        let e = migrate(&r, "snapshot-v2", &opts(None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already on"), "{e}");
        let e = migrate(&r, "no-such-thing", &opts(None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown feature `no-such-thing`") && e.contains("`snapshot-v2`"),
            "{e}"
        );
        assert_eq!(list(&r).unwrap().config_files, 2);
        // Another process opening the repository sees generation 2.
        let again = Repository::open(r.backend().clone(), b"pw").unwrap();
        assert!(again.config().has(SNAPSHOT_V2) && again.config().has(SESSION_V2));
    }

    #[test]
    fn a_writer_from_before_keeps_the_feature_pending_until_it_ends() {
        let d = tempfile::tempdir().unwrap();
        let r = repo_v1(&d.path().join("repo"));
        // A backup that started before the migration (its session is live).
        let writer = r.begin_write("old").unwrap();
        let rep = migrate(&r, "snapshot-v2", &opts(Some(150))).unwrap();
        assert!(!rep.in_force, "{rep:?}");
        assert_eq!(rep.pending_sessions, 1);
        assert!(rep.waited_ms >= 150, "{rep:?}");
        assert_eq!(state(&r, "snapshot-v2"), (FeatureState::Pending, 1));
        // Without waiting: returns at once, saying it is pending.
        let other = repo_v1(&d.path().join("repo2"));
        let w2 = other.begin_write("old").unwrap();
        let rep = migrate(&other, "session-v2", &opts(None)).unwrap();
        assert!(!rep.in_force && rep.waited_ms < 150, "{rep:?}");
        drop(w2);
        // The old writer ends: in force.
        drop(writer);
        assert_eq!(state(&r, "snapshot-v2"), (FeatureState::On, 0));
        // A migration that waits sees it end.
        let r3 = repo_v1(&d.path().join("repo3"));
        let w3 = r3.begin_write("old").unwrap();
        let rep = std::thread::scope(|sc| {
            sc.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                drop(w3);
            });
            migrate(&r3, "snapshot-v2", &opts(Some(20_000))).unwrap()
        });
        assert!(rep.in_force && rep.waited_ms >= 150, "{rep:?}");
    }

    #[test]
    fn a_snapshot_with_ext_needs_the_feature() {
        let d = tempfile::tempdir().unwrap();
        let r = repo_v1(&d.path().join("repo"));
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let out = run(&r, &request(&src), &BackupProgress::default()).unwrap();
        let mut s = out.snapshot;
        s.ext.host_seq = Some(9);
        let w = r.begin_write("h").unwrap();
        let e = w.save_snapshot(&s).unwrap_err();
        assert!(
            matches!(
                e,
                holdfast_repo::Error::FeatureOff {
                    feature: "snapshot-v2",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("holdfast migrate snapshot-v2"),
            "{e}"
        );
        drop(w);
        // A repository made today has it.
        let r2 = repo(&d.path().join("repo2"));
        assert!(r2.has_feature(SNAPSHOT_V2) && r2.has_feature(SESSION_V2));
        let w = r2.begin_write("h").unwrap();
        // (the tree is not in r2, which the snapshot write does not check)
        w.save_snapshot(&s).unwrap();
    }
}
