//! Opening, creating and reading a repository: keys, config, snapshots, index, blobs.
//!
//! Every whole stored file read here is checked against its name (BLAKE3 of its bytes)
//! before it is decrypted, so corruption is reported as corruption of that named file.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use rayon::prelude::*;

use crate::backend::{Backend, FileKind};
use crate::blob::{open_blob_in_place, open_blob_owned, BlobType};
use crate::cache::Cache;
use crate::config::{Config, ConfigFile, ConfigSet, Feature, SNAPSHOT_V2};
use crate::crypto::MasterKey;
use crate::envelope::{self, ObjectKind};
use crate::error::{Error, Result};
use crate::gc::{GcMarker, Role, Session};
use crate::id::Id;
use crate::index::{IndexBuilder, IndexFile, IndexFileSummary, IndexSurvey, MasterIndex};
use crate::keyfile::{KdfParams, KeyFile};
use crate::pack::PackEntry;
use crate::session::{BadSession, ListedSession, SessionGuard};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// The gc markers in force.
#[derive(Debug, Default)]
pub struct GcState {
    /// Markers not superseded by another.
    pub current: Vec<(Id, GcMarker)>,
    /// Markers named in another marker's `supersedes` (still to be deleted).
    pub superseded: std::collections::HashSet<Id>,
    /// Packs listed by a current marker.
    pub marked: std::collections::HashSet<Id>,
    /// Each marker's time of landing by the storage's clock, where the backend reports it.
    pub landed_ns: std::collections::HashMap<Id, i64>,
}

impl GcState {
    /// The time from which a marker could be seen: its `mark_ns`, or when it landed on
    /// the storage if that was later (a write delayed after its time was read; SPEC.md
    /// §12.3 sweep step 1).
    pub fn marked_since(&self, id: &Id, m: &GcMarker) -> i64 {
        self.landed_ns
            .get(id)
            .map_or(m.mark_ns, |&t| t.max(m.mark_ns))
    }
}

/// How often loading the index lists `index/` again when a listed file vanished before it
/// was read (superseded and deleted by a prune meanwhile).
const RELIST_ATTEMPTS: u32 = 14;

/// Sessions that loaded, and those that did not.
pub type SessionList = (Vec<ListedSession>, Vec<BadSession>);

/// Snapshots that loaded (oldest first), and the errors of those that did not.
pub type SnapshotList = (Vec<(Id, Snapshot)>, Vec<Error>);

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunk size bounds (min, avg, max).
    pub chunk: (u32, u32, u32),
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Password hashing cost.
    pub kdf: KdfParams,
    /// Host name recorded in the first key file.
    pub host: String,
    /// User name recorded in the first key file.
    pub user: String,
    /// Creation time, ns since the epoch.
    pub now_ns: i64,
}

/// Default target pack size: 16 MiB, large enough for few S3 requests per GB (writers
/// stream packs to storage, so the size costs no memory).
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Adds the pack to a damaged blob's message.
fn in_pack(err: Error, pack: &Id) -> Error {
    match err {
        Error::Corrupt { name, detail, .. } => Error::Corrupt {
            kind: "blob",
            name,
            detail: format!("{detail} (in pack {pack})"),
        },
        other => other,
    }
}

/// An open repository: the backend plus the unlocked master key and config.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    /// The current config when the repository was opened (its parameters never change).
    config: Config,
    /// Every config file as last read: at open, and again at the start of each session, so
    /// a writer sees the features turned on before it started (SPEC.md §13).
    configs: RwLock<Arc<ConfigSet>>,
    key_id: Id,
    /// How many key files were unlocked (each one Argon2 run) to open it.
    keys_tried: usize,
    /// Local copies of index files, snapshots and tree packs, if enabled.
    cache: Option<Cache>,
    /// Serialises the first read of a tree pack into the cache, per stripe of pack IDs, so
    /// threads that need the same pack download it once.
    cache_fill: [Mutex<()>; 16],
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .finish()
    }
}

/// How a snapshot is chosen from the list.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots from these hosts (any, if empty).
    pub hosts: Vec<String>,
    /// Only snapshots having all tags of at least one entry (each entry may hold several
    /// comma-separated tags); any, if empty.
    pub tags: Vec<String>,
    /// Only snapshots whose paths include all these.
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// Whether a snapshot passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty()
                || self.tags.iter().any(|group| {
                    group
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .all(|t| s.tags.iter().any(|x| x == t))
                }))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// Which key files to try first when opening a repository (restic's `--key-hint`): those
/// whose ID starts with `id_prefix`, then those labelled with `host`, then the rest.
/// A hint never excludes a key file, it only orders them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHint {
    /// A key file ID or unique prefix (lowercase hex).
    pub id_prefix: Option<String>,
    /// The host label of the key files to try next (`key add --host`), usually this
    /// machine's host name.
    pub host: Option<String>,
}

impl KeyHint {
    /// 0 for an ID match, 1 for a host match, 2 for the rest.
    fn rank(&self, id: &Id, kf: &KeyFile) -> u8 {
        if self
            .id_prefix
            .as_deref()
            .is_some_and(|p| !p.is_empty() && id.has_hex_prefix(p))
        {
            0
        } else if self.host.as_deref().is_some_and(|h| h == kf.host) {
            1
        } else {
            2
        }
    }
}

impl Repository {
    /// Creates a new repository in an empty location.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        Self::init_with_key(backend, password, opts, MasterKey::generate())
    }

    /// [`Repository::init`] with a given master key instead of a fresh random one:
    /// `init --copy-chunker-params` gives the new repository the chunker key and blob-ID
    /// key of another repository (and a new encryption key), so copied data needs no ID
    /// translation and deduplicates with its own backups (SPEC.md §4.1).
    pub fn init_with_key(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        key: MasterKey,
    ) -> Result<Repository> {
        let not_found = |e: &Error| matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        let configs = match backend.list(FileKind::Config) {
            Ok(c) => c,
            Err(e) if not_found(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        if !configs.is_empty() {
            return Err(Error::RepositoryExists {
                location: backend.location(),
            });
        }
        let config = Config::new(
            Id(crate::crypto::random_array()),
            opts.chunk,
            opts.pack_size,
            opts.now_ns,
        );
        // The decoder's checks are the rules: never create what could not be opened.
        Config::decode(&config.encode()).map_err(|e| Error::Encode {
            what: "config",
            detail: e.to_string(),
        })?;
        backend.create()?;
        // Key files without a config are left by an `init` that was interrupted before its
        // last write: no repository was ever usable with them, so they are removed.
        for (orphan, _) in backend.list(FileKind::Key)? {
            backend.remove(FileKind::Key, &orphan)?;
        }
        let kf = KeyFile::create(
            &key,
            password,
            opts.kdf,
            opts.now_ns,
            &opts.host,
            &opts.user,
        )?;
        let key_id = Id::of_stored_bytes(kf.encoded());
        // The config is written last: a repository is only "there" once it can be opened.
        backend.write(FileKind::Key, &key_id, kf.encoded())?;
        let cfg_bytes = envelope::seal(&key, ObjectKind::Config, &config.encode(), false);
        let cfg_id = Id::of_stored_bytes(&cfg_bytes);
        backend.write(FileKind::Config, &cfg_id, &cfg_bytes)?;
        let set = ConfigSet::select(vec![ConfigFile {
            id: cfg_id,
            config: config.clone(),
            landed_ns: None,
        }])?;
        Ok(Repository {
            backend,
            key,
            config,
            configs: RwLock::new(Arc::new(set)),
            key_id,
            keys_tried: 0,
            cache: None,
            cache_fill: Default::default(),
        })
    }

    /// Opens an existing repository with a password, trying the key files in name order.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        Repository::open_hinted(backend, password, &KeyHint::default())
    }

    /// Opens an existing repository with a password, trying first the key files `hint`
    /// points at, so that a repository with one password per node costs one Argon2 run
    /// to open instead of one per key file (SPEC.md §4.2).
    pub fn open_hinted(
        backend: Arc<dyn Backend>,
        password: &[u8],
        hint: &KeyHint,
    ) -> Result<Repository> {
        let configs = backend
            .list_modified(FileKind::Config)
            .map_err(|e| match e {
                Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    Error::RepositoryNotFound {
                        location: backend.location(),
                        // An OS error ("No such file or directory") says less than the default.
                        detail: source.raw_os_error().is_none().then(|| source.to_string()),
                    }
                }
                e => e,
            })?;
        let keys = backend.list(FileKind::Key)?;
        if configs.is_empty() && keys.is_empty() {
            return Err(Error::RepositoryNotFound {
                location: backend.location(),
                detail: None,
            });
        }
        let mut found = None;
        let mut tried = 0;
        let mut last_damage = None;
        // Reading and decoding a key file is cheap; only unlocking runs Argon2. So all are
        // decoded first, and the hinted ones unlocked first.
        let mut decoded = Vec::with_capacity(keys.len());
        for (kid, _) in &keys {
            let decoded_file = read_checked(&*backend, FileKind::Key, kid)
                .and_then(|b| KeyFile::decode(&b).map_err(|e| Error::decode("key", kid, e)));
            match decoded_file {
                Ok(kf) => decoded.push((*kid, kf)),
                Err(e) => last_damage = Some(e),
            }
        }
        decoded.sort_by_key(|(kid, kf)| (hint.rank(kid, kf), *kid));
        for (kid, kf) in &decoded {
            tried += 1;
            if let Some(k) = kf.unlock(password)? {
                found = Some((*kid, k));
                break;
            }
        }
        let Some((key_id, key)) = found else {
            if tried == 0 {
                return Err(last_damage.unwrap_or(Error::Missing {
                    kind: "key",
                    name: "(none in keys/)".into(),
                }));
            }
            return Err(Error::WrongPassword { tried });
        };
        let set = load_configs(&*backend, &key, &configs, None)?;
        let config = set.current().config.clone();
        Ok(Repository {
            backend,
            key,
            config,
            configs: RwLock::new(Arc::new(set)),
            key_id,
            keys_tried: tried,
            cache: None,
            cache_fill: Default::default(),
        })
    }

    /// How many key files were unlocked to open the repository (one Argon2 run each;
    /// 1 when the key hint pointed at the right one, 0 for a repository just created).
    pub fn keys_tried(&self) -> usize {
        self.keys_tried
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    /// The unlocked master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }
    /// The repository config current when it was opened. Its parameters never change;
    /// features may have been turned on since: ask [`Repository::has_feature`] for those.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every config file as last read (at open, or at the start of the newest session).
    pub fn config_set(&self) -> Arc<ConfigSet> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `feature` is on in the config as last read. A writer reads the config again
    /// when its session starts ([`Repository::start_session`]), so after `begin_write` this
    /// says what the writer must write.
    pub fn has_feature(&self, feature: Feature) -> bool {
        self.config_set().current().config.has(feature)
    }

    /// Lists `config/` again and reads the config files not seen before. Fails if the
    /// current config now uses a feature this build cannot read, or the files conflict.
    pub fn refresh_config(&self) -> Result<Arc<ConfigSet>> {
        let listed = self.backend.list_modified(FileKind::Config)?;
        let set = Arc::new(load_configs(
            &*self.backend,
            &self.key,
            &listed,
            Some(&self.config_set()),
        )?);
        *self.configs.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        Ok(set)
    }

    /// Writes a config of a new generation under a pruner's session lease (like a gc
    /// marker), then reads the configs again: another config of the same generation that
    /// landed meanwhile is reported as damage naming both files.
    pub fn write_config(&self, session: &SessionGuard, c: &Config) -> Result<Id> {
        let plain = c.encode();
        Config::decode(&plain).map_err(|e| Error::Encode {
            what: "config",
            detail: e.to_string(),
        })?;
        let current = self.config_set();
        if c.generation <= current.current().config.generation {
            return Err(Error::Refused(format!(
                "a config of generation {} exists already (config {})",
                current.current().config.generation,
                current.current().id
            )));
        }
        let bytes = envelope::seal(&self.key, ObjectKind::Config, &plain, false);
        let id = Id::of_stored_bytes(&bytes);
        session.guarded_write(FileKind::Config, || {
            self.backend.write(FileKind::Config, &id, &bytes)?;
            Ok(id)
        })?;
        self.refresh_config()?;
        Ok(id)
    }
    /// The key file this session was opened with.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// Uses `cache` for index files, snapshots and tree packs from now on (see
    /// [`crate::cache`]); `None` reads everything from the backend. Tools that verify the
    /// repository (check, repair) must not use a cache.
    pub fn set_cache(&mut self, cache: Option<Cache>) {
        self.cache = cache;
    }

    /// The cache in use, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// A whole index file or snapshot, from the cache when it has an intact copy.
    fn fetch(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let cache = match &self.cache {
            Some(c) if matches!(kind, FileKind::Index | FileKind::Snapshot) => c,
            _ => return self.read_checked(kind, id),
        };
        if let Some(bytes) = cache.get(kind, id) {
            return Ok(bytes);
        }
        let bytes = self.read_checked(kind, id)?;
        cache.put(kind, id, &bytes);
        Ok(bytes)
    }

    /// Reads a whole file and checks its bytes hash to its name.
    pub fn read_checked(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        read_checked(&*self.backend, kind, id)
    }

    /// Seals and stores an object; returns its name. Index files, snapshots and gc markers
    /// are written through a session instead ([`Repository::save_index`], ...), never
    /// with this.
    pub(crate) fn save_object(
        &self,
        kind: ObjectKind,
        file_kind: FileKind,
        plaintext: &[u8],
    ) -> Result<Id> {
        let bytes = envelope::seal(&self.key, kind, plaintext, true);
        let id = Id::of_stored_bytes(&bytes);
        self.backend.write(file_kind, &id, &bytes)?;
        if let Some(cache) = &self.cache {
            if matches!(file_kind, FileKind::Index | FileKind::Snapshot) {
                // This process wrote it: the next one need not download it.
                cache.put(file_kind, &id, &bytes);
            }
        }
        Ok(id)
    }

    /// Reads, checks and opens an object.
    pub fn load_object(&self, kind: ObjectKind, file_kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.fetch(file_kind, id)?;
        envelope::open(&self.key, kind, id, &bytes)
    }

    /// Stores a snapshot under `session`'s lease (SPEC.md §12.2): if the lease is lost
    /// before the write completes, the snapshot is deleted again and the error returned.
    /// A snapshot with version-2 fields (`ext`) needs the feature `snapshot-v2`
    /// (SPEC.md §13): without it [`Error::FeatureOff`] is returned and nothing written.
    pub fn save_snapshot(&self, session: &SessionGuard, s: &Snapshot) -> Result<Id> {
        if !s.ext.is_empty() && !self.has_feature(SNAPSHOT_V2) {
            return Err(Error::FeatureOff {
                feature: SNAPSHOT_V2.name,
                what: "a snapshot with a host sequence number or a copy origin (version 2)".into(),
            });
        }
        s.validate().map_err(|e| Error::Encode {
            what: "snapshot",
            detail: e.to_string(),
        })?;
        let plain = s.encode();
        session.guarded_write(FileKind::Snapshot, || {
            self.save_object(ObjectKind::Snapshot, FileKind::Snapshot, &plain)
        })
    }

    /// Starts a session of `role` for this repository (SPEC.md §12.2), then reads the
    /// config again (SPEC.md §13): a config written before the session started is
    /// followed by everything the session writes. Fails, ending the session, if the
    /// repository now uses a feature this build may not write.
    pub fn start_session(&self, role: Role, host: &str) -> Result<SessionGuard> {
        let guard = SessionGuard::start(self.backend.clone(), &self.key, role, host)?;
        let set = self.refresh_config()?;
        set.current().config.check_writable()?;
        Ok(guard)
    }

    /// Fails unless this build may write to the repository (no unknown read-only
    /// compatible or incompatible feature), by the config as last read: for writes that
    /// need no session (`forget`, key changes).
    pub fn check_writable(&self) -> Result<()> {
        self.config_set().current().config.check_writable()
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let plain = self.load_object(ObjectKind::Snapshot, FileKind::Snapshot, id)?;
        Snapshot::decode(&plain).map_err(|e| Error::decode("snapshot", id, e))
    }

    /// All snapshots, oldest first. Damaged snapshots are returned as errors beside the
    /// good ones so one bad file does not hide the rest.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let ids = self.backend.list(FileKind::Snapshot)?;
        if let Some(cache) = &self.cache {
            cache.retain(FileKind::Snapshot, &ids.iter().map(|(id, _)| *id).collect());
        }
        let loaded: Vec<Result<(Id, Snapshot)>> = ids
            .par_iter()
            .map(|(id, _)| self.load_snapshot(id).map(|s| (*id, s)))
            .collect();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in loaded {
            match r {
                Ok(x) => good.push(x),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolves `latest`, a full ID or a unique ID prefix to one snapshot.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let (all, _) = self.snapshots()?;
            return all
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s))
                .ok_or_else(|| Error::SnapshotRef("no snapshot matches (the repository has none, or none passes --host/--tag/--path)".into()));
        }
        if spec.len() == 64 {
            let id = Id::from_hex(spec)?;
            return self.load_snapshot(&id).map(|s| (id, s));
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotRef(format!(
                "{spec:?} is not a snapshot ID, ID prefix or \"latest\""
            )));
        }
        let ids = self.backend.list(FileKind::Snapshot)?;
        let matches: Vec<Id> = ids
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.has_hex_prefix(spec))
            .collect();
        match matches.as_slice() {
            [id] => self.load_snapshot(id).map(|s| (*id, s)),
            [] => Err(Error::SnapshotRef(format!(
                "no snapshot ID starts with {spec:?}: run `holdfast snapshots` to list them"
            ))),
            many => Err(Error::SnapshotRef(format!(
                "{} snapshot IDs start with {spec:?}: give more digits",
                many.len()
            ))),
        }
    }

    /// Stores an index file under `session`'s lease, like [`Repository::save_snapshot`]:
    /// an index file that lands after the lease was lost may name packs a prune has
    /// deleted, and is deleted again.
    pub fn save_index(&self, session: &SessionGuard, f: &IndexFile) -> Result<Id> {
        let plain = f.encode();
        session.guarded_write(FileKind::Index, || {
            self.save_object(ObjectKind::Index, FileKind::Index, &plain)
        })
    }

    /// Loads one index file.
    pub fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let plain = self.load_object(ObjectKind::Index, FileKind::Index, id)?;
        IndexFile::decode(&plain).map_err(|e| Error::decode("index", id, e))
    }

    /// Loads and merges every index file into the compact in-memory index (see
    /// [`crate::index`]). A damaged index file is an error: silently ignoring it would
    /// make blobs look missing (and get written again) or be deleted. Entries of packs that
    /// do not exist are left out (with a warning), so a blob with another copy is read from
    /// that copy (SPEC.md §7.2).
    pub fn load_index(&self) -> Result<MasterIndex> {
        // Marked packs are read only where a blob has no other copy (SPEC.md §12.3): they
        // are the ones a sweep may delete next.
        let marked = self.gc_markers()?.marked;
        self.load_index_of_existing_packs(HashSet::new(), &marked)
    }

    /// Loads every index file (superseded ones included), for tools that rewrite them.
    pub fn index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.relisting_index(|ids| {
            ids.par_iter()
                .map(|(id, _)| self.load_index_file(id).map(|f| (*id, f)))
                .collect()
        })
    }

    /// Every index file in brief (what it supersedes, the packs it lists), streamed: for
    /// housekeeping that must not hold the whole index.
    pub fn index_summaries(&self) -> Result<Vec<IndexFileSummary>> {
        self.relisting_index(|ids| {
            let none = HashSet::new();
            let builder = IndexBuilder::new(&none);
            let conv = builder.converter();
            ids.par_iter()
                .map(|(id, _)| {
                    let plain = self.load_object(ObjectKind::Index, FileKind::Index, id)?;
                    let compact = conv
                        .decode(&plain)
                        .map_err(|e| Error::decode("index", id, e))?;
                    Ok(compact.summary(*id))
                })
                .collect()
        })
    }

    /// The index a writer deduplicates against: without packs marked for deletion, and
    /// without packs that do not exist (lost, or deleted by a sweep that a writer which had
    /// lost its lease raced with), so one missing pack cannot make every later backup
    /// refer to it. The packs are listed after the markers are read: a pack deleted by a
    /// sweep was deleted before its marker, so a writer that no longer sees the marker
    /// sees the pack gone (SPEC.md §12.2). Use [`Repository::begin_write`], which also
    /// starts the session this must come after.
    pub(crate) fn load_index_for_writing(&self) -> Result<MasterIndex> {
        self.load_index_of_existing_packs(self.gc_markers()?.marked, &HashSet::new())
    }

    /// The compact index without the `excluded` packs and without packs that do not exist,
    /// locating blobs in `last_resort` packs only where they have no other copy.
    fn load_index_of_existing_packs(
        &self,
        mut excluded: HashSet<Id>,
        last_resort: &HashSet<Id>,
    ) -> Result<MasterIndex> {
        let index = self.load_compact_index(&excluded, last_resort)?;
        // Listed after the index: every pack an index file names was durable before it.
        let present: HashSet<Id> = self
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let missing: Vec<Id> = index
            .packs()
            .into_iter()
            .filter(|p| !present.contains(p))
            .collect();
        if missing.is_empty() {
            return Ok(index);
        }
        tracing::warn!(
            "{} packs named by the index do not exist (first: {}); data only they held is lost, and a backup stores it again. Run `holdfast check` to see which snapshots are affected.",
            missing.len(),
            missing[0]
        );
        excluded.extend(missing);
        self.load_compact_index(&excluded, last_resort)
    }

    /// Lists `index/` and runs `load` on the listing. A file that vanishes between listing
    /// and reading was superseded and deleted by a prune meanwhile (its superseder exists
    /// by then, SPEC.md §7.2): the listing is taken again, up to [`RELIST_ATTEMPTS`]
    /// times, before that counts as an error.
    fn relisting_index<T>(&self, load: impl Fn(&[(Id, u64)]) -> Result<T>) -> Result<T> {
        let mut relisted: u32 = 0;
        loop {
            let ids = self.backend.list(FileKind::Index)?;
            match load(&ids) {
                // Prunes that compact back to back can supersede a file between every
                // listing and read of a slow loader: back off, up to about 10 s in all.
                Err(Error::Missing { .. }) if relisted < RELIST_ATTEMPTS => {
                    relisted += 1;
                    std::thread::sleep(std::time::Duration::from_millis(
                        10 * u64::from(relisted * relisted),
                    ));
                }
                other => return other,
            }
        }
    }

    /// Every index file as prune needs it: the compact index locating each blob outside
    /// the `marked` packs whenever it can, a summary of every file, and the full entries of
    /// the marked packs (see [`IndexSurvey`]). Memory: the compact index plus O(packs).
    pub fn survey_index(&self, marked: &HashSet<Id>) -> Result<IndexSurvey> {
        self.relisting_index(|ids| {
            let none = HashSet::new();
            let mut builder = IndexBuilder::new(&none);
            builder.last_resort(marked);
            let conv = builder.converter();
            let state = Mutex::new((builder, Vec::new(), Vec::new()));
            ids.par_iter()
                .enumerate()
                .try_for_each(|(n, (id, _))| -> Result<()> {
                    let plain = self.load_object(ObjectKind::Index, FileKind::Index, id)?;
                    let (compact, kept) = conv
                        .decode_keeping(&plain, marked)
                        .map_err(|e| Error::decode("index", id, e))?;
                    drop(plain);
                    let summary = compact.summary(*id);
                    let mut st = state.lock().expect("lock");
                    st.0.add(n, *id, compact);
                    st.1.push(summary);
                    st.2.extend(kept.into_iter().map(|p| (*id, p)));
                    Ok(())
                })?;
            let (builder, files, marked) = state.into_inner().expect("lock");
            let index = builder.finish(|n| self.load_index_file(&ids[n].0).map(Cow::Owned))?;
            Ok(IndexSurvey {
                index,
                files,
                marked,
            })
        })
    }

    /// Streams every index file into the compact index, leaving out `excluded` packs.
    ///
    /// Files are read, checked, decrypted and decoded in parallel; each is converted to
    /// compact records as soon as it is decoded and its plaintext dropped, so the decoded
    /// index never exists in full beside the compact one. A (type, ID prefix) claimed more
    /// than once is resolved by reading the files involved again (normally none).
    fn load_compact_index(
        &self,
        excluded: &HashSet<Id>,
        last_resort: &HashSet<Id>,
    ) -> Result<MasterIndex> {
        self.relisting_index(|ids| {
            let mut builder = IndexBuilder::new(excluded);
            builder.last_resort(last_resort);
            let conv = builder.converter();
            let builder = Mutex::new(builder);
            ids.par_iter()
                .enumerate()
                .try_for_each(|(n, (id, _))| -> Result<()> {
                    let plain = self.load_object(ObjectKind::Index, FileKind::Index, id)?;
                    let compact = conv
                        .decode(&plain)
                        .map_err(|e| Error::decode("index", id, e))?;
                    drop(plain);
                    builder.lock().expect("lock").add(n, *id, compact);
                    Ok(())
                })?;
            let builder = builder.into_inner().expect("lock");
            let index = builder.finish(|n| self.load_index_file(&ids[n].0).map(Cow::Owned))?;
            if let Some(cache) = &self.cache {
                // What a prune deleted goes from the cache too.
                cache.retain(FileKind::Index, &ids.iter().map(|(id, _)| *id).collect());
                cache.retain(FileKind::Pack, &index.packs().into_iter().collect());
            }
            Ok(index)
        })
    }

    /// Every session file with its server time; unreadable ones are returned apart (a
    /// pruner must treat them as unknown writers until they expire by their time).
    pub fn sessions(&self) -> Result<SessionList> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (id, _, modified_ns) in self.backend.list_modified(FileKind::Session)? {
            let r = self
                .load_object(ObjectKind::Session, FileKind::Session, &id)
                .and_then(|p| Session::decode(&p).map_err(|e| Error::decode("session", id, e)));
            match r {
                Ok(session) => good.push(ListedSession {
                    id,
                    session,
                    modified_ns,
                }),
                // Gone between list and read: the session ended.
                Err(Error::Missing { .. }) => {}
                Err(error) => bad.push(BadSession {
                    id,
                    modified_ns,
                    error,
                }),
            }
        }
        Ok((good, bad))
    }

    /// Stores a gc marker under a prune's session lease.
    pub fn save_gc_marker(&self, session: &SessionGuard, m: &GcMarker) -> Result<Id> {
        let plain = m.encode();
        session.guarded_write(FileKind::GcMarker, || {
            self.save_object(ObjectKind::GcMarker, FileKind::GcMarker, &plain)
        })
    }

    /// The current gc markers (superseded ones dropped) and the set of marked packs.
    pub fn gc_markers(&self) -> Result<GcState> {
        let mut all = Vec::new();
        let mut landed_ns = std::collections::HashMap::new();
        for (id, _, landed) in self.backend.list_modified(FileKind::GcMarker)? {
            if let Some(t) = landed {
                landed_ns.insert(id, t);
            }
            match self.load_object(ObjectKind::GcMarker, FileKind::GcMarker, &id) {
                Ok(p) => all.push((
                    id,
                    GcMarker::decode(&p).map_err(|e| Error::decode("gc marker", id, e))?,
                )),
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let superseded: std::collections::HashSet<Id> = all
            .iter()
            .flat_map(|(_, m)| m.supersedes.iter().copied())
            .collect();
        let current: Vec<(Id, GcMarker)> = all
            .into_iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect();
        let marked = current
            .iter()
            .flat_map(|(_, m)| m.packs.iter().copied())
            .collect();
        Ok(GcState {
            current,
            superseded,
            marked,
            landed_ns,
        })
    }

    /// Reads and decrypts one blob.
    pub fn read_blob(&self, index: &MasterIndex, ty: BlobType, id: &Id) -> Result<Vec<u8>> {
        let loc = index.get(ty, id).ok_or(Error::BlobNotIndexed(*id))?;
        let (pack, e) = (&loc.pack, &loc.entry);
        let (offset, len) = (e.offset as u64, e.stored_len as u64);
        if let (Some(cache), BlobType::Tree) = (&self.cache, ty) {
            // A blob from the cached pack; a damaged copy is dropped (and read again).
            let cached = || {
                let stored = cache.read_range(FileKind::Pack, pack, offset, len)?;
                let plain = self.open_stored_blob(pack, e, stored).ok();
                if plain.is_none() {
                    cache.remove(FileKind::Pack, pack);
                }
                plain
            };
            if let Some(plain) = cached() {
                return Ok(plain);
            }
            // A tree pack is read whole once and kept: the next backup walks the same trees.
            let _fill = self.cache_fill[pack.0[0] as usize % 16]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !cache.contains(FileKind::Pack, pack) {
                let bytes = self.read_checked(FileKind::Pack, pack)?;
                cache.put(FileKind::Pack, pack, &bytes);
                let stored = usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get(o..o + len as usize))
                    .ok_or_else(|| {
                        Error::corrupt(
                            "pack",
                            pack,
                            format!("blob {} lies beyond the end", id.short()),
                        )
                    })?;
                return self.open_stored_blob(pack, e, stored.to_vec());
            }
            // Another thread cached it meanwhile.
            if let Some(plain) = cached() {
                return Ok(plain);
            }
        }
        let stored = self.backend.read_range(FileKind::Pack, pack, offset, len)?;
        self.open_stored_blob(pack, e, stored)
    }

    /// Decrypts a blob's sealed bytes read from `pack` at its entry (in the buffer given);
    /// damage is reported on the blob, naming the pack.
    pub fn open_stored_blob(&self, pack: &Id, e: &PackEntry, stored: Vec<u8>) -> Result<Vec<u8>> {
        open_blob_owned(&self.key, e.ty, e.compression, &e.id, e.raw_len, stored)
            .map_err(|err| in_pack(err, pack))
    }

    /// [`Repository::open_stored_blob`] decrypting `stored` where it lies and
    /// decompressing into `scratch` (see [`crate::blob::open_blob_in_place`]).
    pub fn open_stored_blob_in_place<'b>(
        &self,
        pack: &Id,
        e: &PackEntry,
        stored: &'b mut [u8],
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        open_blob_in_place(
            &self.key,
            e.ty,
            e.compression,
            &e.id,
            e.raw_len,
            stored,
            scratch,
        )
        .map_err(|err| in_pack(err, pack))
    }

    /// Loads and decodes a tree.
    pub fn load_tree(&self, index: &MasterIndex, id: &Id) -> Result<Tree> {
        let plain = self.read_blob(index, BlobType::Tree, id)?;
        Tree::decode(&plain).map_err(|e| Error::decode("tree", id, e))
    }

    /// Every key file, decoded (undecodable ones are returned as errors).
    pub fn keys(&self) -> Result<Vec<(Id, Result<KeyFile>)>> {
        let ids = self.backend.list(FileKind::Key)?;
        Ok(ids
            .into_iter()
            .map(|(id, _)| {
                let kf = self
                    .read_checked(FileKind::Key, &id)
                    .and_then(|b| KeyFile::decode(&b).map_err(|e| Error::decode("key", id, e)));
                (id, kf)
            })
            .collect())
    }

    /// Adds a key file for another password.
    pub fn add_key(
        &self,
        password: &[u8],
        kdf: KdfParams,
        now_ns: i64,
        host: &str,
        user: &str,
    ) -> Result<Id> {
        let kf = KeyFile::create(&self.key, password, kdf, now_ns, host, user)?;
        let id = Id::of_stored_bytes(kf.encoded());
        self.backend.write(FileKind::Key, &id, kf.encoded())?;
        Ok(id)
    }

    /// Removes a key file. Refuses the key in use and the last key (either would lock
    /// the user out).
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::Refused("refusing to remove the key this command was opened with: open with another password to remove it, or use `key passwd`".into()));
        }
        let keys = self.backend.list(FileKind::Key)?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::Missing {
                kind: "key",
                name: id.to_string(),
            });
        }
        if keys.len() <= 1 {
            return Err(Error::Refused("refusing to remove the last key: a repository without keys can never be opened again".into()));
        }
        self.backend.remove(FileKind::Key, id)
    }

    /// Replaces the current key file with one for a new password. The new key is written
    /// (durably) before the old one is removed.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: KdfParams,
        now_ns: i64,
        host: &str,
        user: &str,
    ) -> Result<Id> {
        let new_id = self.add_key(new_password, kdf, now_ns, host, user)?;
        let old = self.key_id;
        self.key_id = new_id;
        self.backend.remove(FileKind::Key, &old)?;
        Ok(new_id)
    }
}

/// Reads the config files `listed` (name, size, landing time), reusing those of `known`,
/// and selects the current one (SPEC.md §3.3). Refuses a repository whose current config
/// uses an incompatible feature this build does not know.
fn load_configs(
    backend: &dyn Backend,
    key: &MasterKey,
    listed: &[(Id, u64, Option<i64>)],
    known: Option<&ConfigSet>,
) -> Result<ConfigSet> {
    let mut files = Vec::with_capacity(listed.len());
    for (id, _, landed_ns) in listed {
        if let Some(f) = known.and_then(|k| k.files().iter().find(|f| f.id == *id)) {
            files.push(ConfigFile {
                landed_ns: *landed_ns,
                ..f.clone()
            });
            continue;
        }
        let bytes = read_checked(backend, FileKind::Config, id)?;
        let plain = envelope::open(key, ObjectKind::Config, id, &bytes)?;
        let config = Config::decode(&plain).map_err(|e| Error::decode("config", id, e))?;
        files.push(ConfigFile {
            id: *id,
            config,
            landed_ns: *landed_ns,
        });
    }
    let set = ConfigSet::select(files)?;
    set.current().config.check_readable()?;
    Ok(set)
}

/// Reads a whole file and checks that its bytes hash to its name.
pub fn read_checked(backend: &dyn Backend, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
    let bytes = backend.read(kind, id)?;
    let actual = Id::of_stored_bytes(&bytes);
    if actual != *id {
        return Err(Error::corrupt(
            kind.name(),
            id,
            format!(
                "content hash is {} ({} bytes): the file is damaged or truncated",
                actual.short(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
