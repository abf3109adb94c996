//! The agent's repository work: open once, find each volume's newest snapshot, back a
//! volume up, forget by its retention, prune, check. Every function here blocks (the
//! engine is synchronous); the async side calls them through `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_engine::backup::{self, BackupReport, BackupRequest, ParentChoice, Source};
use holdfast_engine::checker::{self, CheckOptions, CheckProgress, CheckReport, ReadData};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::forget::{self, ForgetReport, ForgetRequest, ForgetSelection};
use holdfast_engine::open::{CacheChoice, OpenOptions};
use holdfast_engine::prune::{self, PruneOptions, PruneReport};
use holdfast_engine::retention::{GroupBy, Policy};
use holdfast_repo::repository::KeyHint;
use holdfast_repo::repository::{Repository, SnapshotFilter};

use crate::error::{AgentError, Result};
use crate::kubelet::Located;

/// Where the repository is and how to reach it: the CLI's global options, handed over.
#[derive(Debug, Clone, Default)]
pub struct RepoSettings {
    /// `-r`/`HOLDFAST_REPOSITORY` (else the configuration's `repository`).
    pub location: Option<String>,
    /// `--password-file`/`HOLDFAST_PASSWORD_FILE` (a mounted Secret in the DaemonSet).
    pub password_file: Option<PathBuf>,
    /// `--password-command`.
    pub password_command: Option<String>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--s3-region`.
    pub s3_region: Option<String>,
    /// `--limit-upload`, KiB/s (else the configuration's `limitUploadKib`).
    pub limit_upload_kib: Option<u64>,
    /// `--limit-download`, KiB/s (else the configuration's `limitDownloadKib`).
    pub limit_download_kib: Option<u64>,
    /// `--key-hint`, and the node's name as the host label of per-node keys.
    pub key_hint: KeyHint,
    /// S3 keys that may delete, for the maintenance job's forget and prune
    /// ([`MAINTENANCE_KEY_VARS`], from the `holdfast-maintenance` Secret), where the
    /// agents' own keys are writer-only; `None`: maintenance uses the agent's keys.
    pub maintenance_keys: Option<holdfast_engine::open::S3Keys>,
}

/// The variables [`maintenance_keys_from_env`] reads: the maintenance job's access key and
/// secret (the DaemonSet sets them from the optional Secret `holdfast-maintenance`).
pub const MAINTENANCE_KEY_VARS: [&str; 2] = [
    "HOLDFAST_MAINTENANCE_AWS_ACCESS_KEY_ID",
    "HOLDFAST_MAINTENANCE_AWS_SECRET_ACCESS_KEY",
];

/// The maintenance job's S3 keys, when both [`MAINTENANCE_KEY_VARS`] are set and not empty.
pub fn maintenance_keys_from_env() -> Option<holdfast_engine::open::S3Keys> {
    let get = |v: &str| std::env::var(v).ok().filter(|x| !x.trim().is_empty());
    Some(holdfast_engine::open::S3Keys {
        access_key: get(MAINTENANCE_KEY_VARS[0])?,
        secret_key: get(MAINTENANCE_KEY_VARS[1])?,
    })
}

/// Tag keys of the agent's snapshots.
pub mod tags {
    /// `namespace=<ns>`.
    pub const NAMESPACE: &str = "namespace";
    /// `pvc=<name>`.
    pub const PVC: &str = "pvc";
    /// `pv=<name>`.
    pub const PV: &str = "pv";
    /// `storageclass=<name>`.
    pub const STORAGE_CLASS: &str = "storageclass";
    /// `method=live` (read from the running pod's mount) or `snapshot` (read from a
    /// point-in-time storage snapshot: a CSI VolumeSnapshot or a CephFS `.snap` directory).
    pub const METHOD: &str = "method";
    /// `volume-mode=block` for block volumes (one image file); absent for filesystems.
    pub const VOLUME_MODE: &str = "volume-mode";
    /// `snapshot-handle=<handle>`: the storage's snapshot the data was read from (the CSI
    /// snapshot handle, or `.snap/<name>` of a CephFS snapshot directory).
    pub const SNAPSHOT_HANDLE: &str = "snapshot-handle";
    /// `kind=dump` (a `holdfast.io/backup-command` dump) or `kind=objects` (the cluster's
    /// objects); absent on volume snapshots.
    pub const KIND: &str = "kind";
    /// `owner=<Kind>/<name>`: the owner of a dumped pod.
    pub const OWNER: &str = "owner";
}

/// The `kind` tag of dumps.
pub const KIND_DUMP: &str = "dump";
/// The `kind` tag of the objects backup.
pub const KIND_OBJECTS: &str = "objects";
/// The `method` tag of dumps: the output of a command.
pub const METHOD_COMMAND: &str = "command";
/// Where the objects backup is recorded.
pub const OBJECTS_ROOT: &str = "/objects";

/// The key of the objects backup in [`Repo::newest_by_job`].
pub const OBJECTS_KEY: &str = "objects";

/// Snapshots of one dump: the cluster's host, `kind=dump` and its namespace and owner.
pub fn dump_filter(cluster: &str, namespace: &str, owner: &str) -> SnapshotFilter {
    SnapshotFilter {
        hosts: vec![cluster.to_string()],
        tags: vec![format!(
            "{}={KIND_DUMP},{}={namespace},{}={owner}",
            tags::KIND,
            tags::NAMESPACE,
            tags::OWNER
        )],
        paths: Vec::new(),
    }
}

/// Snapshots of the cluster's objects.
pub fn objects_filter(cluster: &str) -> SnapshotFilter {
    SnapshotFilter {
        hosts: vec![cluster.to_string()],
        tags: vec![format!("{}={KIND_OBJECTS}", tags::KIND)],
        paths: Vec::new(),
    }
}

/// How a volume was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// From the live mount of a pod that uses it.
    Live,
    /// From a point-in-time snapshot.
    Snapshot,
}

impl Method {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Live => "live",
            Method::Snapshot => "snapshot",
        }
    }
}

/// The file a block volume is recorded as, inside `/<namespace>/<pvc>`.
pub const BLOCK_IMAGE_NAME: &str = "volume.img";

/// One volume's backup, as the repository sees it.
#[derive(Debug, Clone)]
pub struct VolumeJob {
    /// Recorded as the snapshot's host.
    pub cluster: String,
    /// The PVC's namespace.
    pub namespace: String,
    /// The PVC.
    pub pvc: String,
    /// Its PV.
    pub pv: String,
    /// Its StorageClass.
    pub storage_class: Option<String>,
    /// Where its files are (the kubelet's mount), or its block device.
    pub mount: Located,
    /// How it is read.
    pub method: Method,
    /// The time the data is from (a snapshot's creation), ns; `None`: the backup's start.
    pub time_ns: Option<i64>,
    /// The storage snapshot it is read from, recorded as a tag.
    pub snapshot_handle: Option<String>,
    /// Subpaths to back up (empty: all).
    pub paths: Vec<PathBuf>,
    /// Globs left out.
    pub exclude: Vec<String>,
    /// The backup's live counters (shown as the running job's progress in the metrics).
    pub progress: std::sync::Arc<holdfast_engine::archiver::BackupProgress>,
}

impl VolumeJob {
    /// The path the volume is recorded under: `/<namespace>/<pvc>`, whatever pod or node
    /// it was read on.
    pub fn logical_root(&self) -> PathBuf {
        Path::new("/").join(&self.namespace).join(&self.pvc)
    }

    /// The snapshot filter that finds this volume's snapshots.
    pub fn filter(&self) -> SnapshotFilter {
        volume_filter(&self.cluster, &self.namespace, &self.pvc)
    }
}

/// Snapshots of one volume: the cluster's host and its namespace and PVC tags.
pub fn volume_filter(cluster: &str, namespace: &str, pvc: &str) -> SnapshotFilter {
    SnapshotFilter {
        hosts: vec![cluster.to_string()],
        tags: vec![format!(
            "{}={namespace},{}={pvc}",
            tags::NAMESPACE,
            tags::PVC
        )],
        paths: Vec::new(),
    }
}

/// The tag value of `key` in a snapshot's tags.
pub(crate) fn tag<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    tags.iter()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// A snapshot that is the newest of its volume or job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Newest {
    /// Its time, ns since the epoch.
    pub time_ns: i64,
    /// Its short ID.
    pub id: String,
    /// Its `method` tag.
    pub method: Option<String>,
    /// Its counters.
    pub summary: holdfast_repo::snapshot::Summary,
}

/// What one listing of the repository says about a cluster's backups ([`Repo::view`]).
#[derive(Debug, Clone, Default)]
pub struct RepoView {
    /// The newest snapshot of each volume, by `namespace/pvc`.
    pub volumes: HashMap<String, Newest>,
    /// The newest snapshot of each other job, by `kind/name` (`dump/<ns>/<Kind>/<name>`,
    /// `objects/objects`, `etcd/<name>`, `bucket/<name>`).
    pub jobs: HashMap<String, Newest>,
    /// Every drill's newest records (whatever host they were written for).
    pub drills: std::collections::BTreeMap<String, crate::metrics::DrillState>,
    /// Snapshots in the repository.
    pub snapshots: u64,
    /// Bytes of pack files, when asked for.
    pub size_bytes: Option<u64>,
}

/// An open repository.
pub struct Repo {
    repo: Arc<Repository>,
}

impl Repo {
    /// Opens the repository at `location` with the password from the settings' sources.
    pub fn open(location: &str, s: &RepoSettings) -> Result<Repo> {
        Self::open_as(location, s, None)
    }

    /// [`Repo::open`] with other S3 keys than the standard AWS chain's (the maintenance
    /// job's, which may delete).
    pub fn open_as(
        location: &str,
        s: &RepoSettings,
        keys: Option<holdfast_engine::open::S3Keys>,
    ) -> Result<Repo> {
        let pw = holdfast_engine::password::non_interactive(
            s.password_file.as_deref(),
            s.password_command.as_deref(),
        )?
        .ok_or_else(|| {
            AgentError::Usage(
                "no repository password: mount the Secret and set HOLDFAST_PASSWORD_FILE \
                 (or --password-file, HOLDFAST_PASSWORD)"
                    .into(),
            )
        })?;
        let cache = if s.no_cache {
            CacheChoice::Off
        } else if let Some(d) = &s.cache_dir {
            CacheChoice::Dir(d.clone())
        } else {
            CacheChoice::Default
        };
        let opts = OpenOptions {
            location: location.to_string(),
            s3_region: s.s3_region.clone(),
            cache,
            limit_upload_kib: s.limit_upload_kib,
            limit_download_kib: s.limit_download_kib,
            key_hint: s.key_hint.clone(),
            s3_credentials: keys,
        };
        let repo = holdfast_engine::open::open(&opts, &pw)?;
        Ok(Repo {
            repo: Arc::new(repo),
        })
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The repository, shared (the web UI serves from the agent's open repository).
    pub fn shared(&self) -> Arc<Repository> {
        self.repo.clone()
    }

    /// The newest snapshot time (ns since the epoch) of each volume of `cluster`, by
    /// `namespace/pvc`.
    pub fn newest_by_volume(&self, cluster: &str) -> Result<HashMap<String, i64>> {
        let (all, bad) = self.repo.snapshots()?;
        for e in bad {
            tracing::warn!(error = %e, "unreadable snapshot file (left alone)");
        }
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (_, s) in all.iter().filter(|(_, s)| s.host == cluster) {
            let (Some(ns), Some(pvc)) = (tag(&s.tags, tags::NAMESPACE), tag(&s.tags, tags::PVC))
            else {
                continue;
            };
            let e = newest.entry(format!("{ns}/{pvc}")).or_insert(i64::MIN);
            *e = (*e).max(s.time_ns);
        }
        Ok(newest)
    }

    /// The newest snapshot time (ns) of each dump (by `namespace/Kind/name`) and of the
    /// objects backup ([`OBJECTS_KEY`]) of `cluster`.
    pub fn newest_by_job(&self, cluster: &str) -> Result<HashMap<String, i64>> {
        let (all, _) = self.repo.snapshots()?;
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (_, s) in all.iter().filter(|(_, s)| s.host == cluster) {
            let key = match tag(&s.tags, tags::KIND) {
                Some(KIND_OBJECTS) => OBJECTS_KEY.to_string(),
                Some(KIND_DUMP) => match (tag(&s.tags, tags::NAMESPACE), tag(&s.tags, tags::OWNER))
                {
                    (Some(ns), Some(owner)) => format!("{ns}/{owner}"),
                    _ => continue,
                },
                _ => continue,
            };
            let e = newest.entry(key).or_insert(i64::MIN);
            *e = (*e).max(s.time_ns);
        }
        Ok(newest)
    }

    /// Everything the metrics and the coverage audit need from one listing of the
    /// snapshots (the engine caches their contents, so this is one LIST of the backend):
    /// the newest snapshot of each volume and job of `cluster`, every drill's newest
    /// records, the snapshot count; with `size`, also the pack files' total size (one
    /// more listing).
    pub fn view(&self, cluster: &str, size: bool) -> Result<RepoView> {
        let (all, _) = self.repo.snapshots()?;
        let mut v = RepoView {
            snapshots: all.len() as u64,
            ..Default::default()
        };
        for (id, s) in &all {
            let newest = |m: &mut HashMap<String, Newest>, key: String| {
                let n = Newest {
                    time_ns: s.time_ns,
                    id: id.short(),
                    method: tag(&s.tags, tags::METHOD).map(str::to_string),
                    summary: s.summary.clone(),
                };
                match m.get(&key) {
                    Some(old) if old.time_ns > s.time_ns => {}
                    _ => {
                        m.insert(key, n);
                    }
                }
            };
            if tag(&s.tags, tags::KIND) == Some("drill") {
                let Some(name) = tag(&s.tags, "drill") else {
                    continue;
                };
                let d = v.drills.entry(name.to_string()).or_default();
                let pass = tag(&s.tags, "result") == Some("pass");
                let t = s.time_ns as f64 / 1e9;
                if d.last_run.is_none_or(|r| t >= r) {
                    d.last_run = Some(t);
                    d.last_ok = Some(pass);
                }
                if pass && d.last_success.is_none_or(|r| t >= r) {
                    d.last_success = Some(t);
                }
                continue;
            }
            if s.host != cluster {
                continue;
            }
            let first_path = s
                .paths
                .first()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            match tag(&s.tags, tags::KIND) {
                None => {
                    if let (Some(ns), Some(pvc)) =
                        (tag(&s.tags, tags::NAMESPACE), tag(&s.tags, tags::PVC))
                    {
                        newest(&mut v.volumes, format!("{ns}/{pvc}"));
                    }
                }
                Some(KIND_OBJECTS) => newest(&mut v.jobs, format!("objects/{OBJECTS_KEY}")),
                Some(KIND_DUMP) => {
                    if let (Some(ns), Some(owner)) =
                        (tag(&s.tags, tags::NAMESPACE), tag(&s.tags, tags::OWNER))
                    {
                        newest(&mut v.jobs, format!("dump/{ns}/{owner}"));
                    }
                }
                Some("etcd") => {
                    let name = first_path
                        .strip_prefix("/etcd/")
                        .and_then(|r| r.split('/').next())
                        .unwrap_or("etcd");
                    newest(&mut v.jobs, format!("etcd/{name}"));
                }
                Some("bucket") => {
                    let name = tag(&s.tags, "bucket").unwrap_or("bucket");
                    newest(&mut v.jobs, format!("bucket/{name}"));
                }
                Some(_) => {}
            }
        }
        if size {
            let packs = self
                .repo
                .backend()
                .list(holdfast_repo::backend::FileKind::Pack)?;
            v.size_bytes = Some(packs.iter().map(|(_, n)| n).sum());
        }
        Ok(v)
    }

    /// Backs up a dump's output, read from `reader` to its end, as the file
    /// `t.recorded_path()`. A read error (the dump failed) writes no snapshot.
    pub fn backup_dump(
        &self,
        cluster: &str,
        t: &crate::dump::DumpTarget,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<BackupReport> {
        let mut req = BackupRequest::new(vec![Source::feed(t.recorded_path())]);
        req.host = cluster.to_string();
        req.parent = ParentChoice::Matching(dump_filter(cluster, &t.namespace, &t.owner()));
        req.tags = vec![
            format!("{}={KIND_DUMP}", tags::KIND),
            format!("{}={}", tags::NAMESPACE, t.namespace),
            format!("{}={}", tags::OWNER, t.owner()),
            format!("{}={METHOD_COMMAND}", tags::METHOD),
        ];
        let feed = holdfast_engine::feed::single_file(holdfast_engine::feed::Entry::reader(
            Vec::new(),
            holdfast_engine::backup::now_ns(),
            reader,
        ));
        let progress = holdfast_engine::archiver::BackupProgress::default();
        Ok(backup::run_feed(
            &self.repo,
            &req,
            Some(Box::new(feed)),
            &progress,
        )?)
    }

    /// Backs up the cluster's objects (files below [`OBJECTS_ROOT`]).
    pub fn backup_objects(
        &self,
        cluster: &str,
        entries: Vec<holdfast_engine::feed::Entry>,
    ) -> Result<BackupReport> {
        let mut req = BackupRequest::new(vec![Source::feed(OBJECTS_ROOT)]);
        req.host = cluster.to_string();
        req.parent = ParentChoice::Matching(objects_filter(cluster));
        req.tags = vec![format!("{}={KIND_OBJECTS}", tags::KIND)];
        let feed = holdfast_engine::feed::sorted(entries);
        let progress = holdfast_engine::archiver::BackupProgress::default();
        Ok(backup::run_feed(
            &self.repo,
            &req,
            Some(Box::new(feed)),
            &progress,
        )?)
    }

    /// Backs up one volume. A missing subpath fails the volume: an empty backup would
    /// look like success.
    pub fn backup_volume(&self, job: &VolumeJob) -> Result<BackupReport> {
        let root = job.logical_root();
        let sources = match &job.mount {
            Located::Device(dev) => {
                if !job.paths.is_empty() {
                    return Err(AgentError::Volume(
                        "holdfast.io/paths does not apply to a block volume (it is backed up \
                         whole, as one image)"
                            .into(),
                    ));
                }
                vec![Source::image(dev, root.join(BLOCK_IMAGE_NAME))]
            }
            Located::Dir(mount) => {
                if !mount.is_dir() {
                    return Err(AgentError::Volume(format!(
                        "{} is not a directory (unmounted while listed?)",
                        mount.display()
                    )));
                }
                if job.paths.is_empty() {
                    vec![Source::recorded_as(mount, &root)]
                } else {
                    let mut v = Vec::new();
                    for p in &job.paths {
                        let real = mount.join(p);
                        if std::fs::symlink_metadata(&real).is_err() {
                            return Err(AgentError::Volume(format!(
                                "subpath {:?} (holdfast.io/paths) does not exist in the volume",
                                p.display().to_string()
                            )));
                        }
                        v.push(Source::recorded_as(real, root.join(p)));
                    }
                    v
                }
            }
        };
        let mut req = BackupRequest::new(sources);
        req.host = job.cluster.clone();
        req.excludes = PathFilter::new(&job.exclude)?;
        req.parent = ParentChoice::Matching(job.filter());
        req.tags = vec![
            format!("{}={}", tags::NAMESPACE, job.namespace),
            format!("{}={}", tags::PVC, job.pvc),
            format!("{}={}", tags::PV, job.pv),
            format!("{}={}", tags::METHOD, job.method.as_str()),
        ];
        if let Some(sc) = &job.storage_class {
            req.tags.push(format!("{}={sc}", tags::STORAGE_CLASS));
        }
        if matches!(job.mount, Located::Device(_)) {
            req.tags.push(format!("{}=block", tags::VOLUME_MODE));
        }
        if let Some(h) = &job.snapshot_handle {
            // Tags are comma-separated lists in filters: keep the handle one tag.
            req.tags
                .push(format!("{}={}", tags::SNAPSHOT_HANDLE, h.replace(',', "_")));
        }
        if let Some(t) = job.time_ns {
            req.time_ns = t;
        }
        Ok(backup::run(&self.repo, &req, &job.progress)?)
    }

    /// Forgets one volume's snapshots that its retention does not keep.
    pub fn forget_volume(
        &self,
        cluster: &str,
        namespace: &str,
        pvc: &str,
        policy: &Policy,
    ) -> Result<ForgetReport> {
        // One group: the filter already holds only this volume, and its snapshots stay one
        // series when its subpaths or its PV change.
        let req = ForgetRequest {
            selection: ForgetSelection::Policy(
                policy.clone(),
                GroupBy {
                    host: false,
                    paths: false,
                    tags: false,
                },
            ),
            filter: volume_filter(cluster, namespace, pvc),
            dry_run: false,
        };
        Ok(forget::forget(
            &self.repo,
            &req,
            holdfast_engine::backup::now_ns(),
        )?)
    }

    /// Prunes with the CLI's defaults (2 h safety margin, 10 % unused space).
    pub fn prune(&self, host: &str) -> Result<PruneReport> {
        let opts = PruneOptions {
            dry_run: false,
            margin_ns: 2 * 3600 * 1_000_000_000,
            max_unused: 0.10,
            host: host.to_string(),
            index_file_entries: holdfast_repo::index::INDEX_FILE_ENTRIES,
        };
        Ok(prune::prune(&self.repo, &opts)?)
    }

    /// Checks the repository's structure and reads `subset` of its packs.
    pub fn check(&self, subset: &str) -> Result<CheckReport> {
        let read_data = ReadData::parse_subset(subset).map_err(AgentError::Usage)?;
        let opts = CheckOptions {
            read_data,
            read_threads: 0,
        };
        Ok(checker::check(
            &self.repo,
            &opts,
            &CheckProgress::default(),
        )?)
    }
}
