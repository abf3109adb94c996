//! What the pages read from the repository, cached: the snapshot list and the master index
//! (reloaded when older than [`REFRESH`]; the index only when the snapshots changed), and
//! decoded trees in an LRU bounded by their total entries (trees are immutable, keyed by
//! ID), so paging through a 100,000-entry directory decodes it once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_engine::diff::Change;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::{Node, Tree};
use holdfast_repo::Id;

/// How long a loaded snapshot list is used before it is listed again.
const REFRESH: Duration = Duration::from_secs(30);
/// Tree entries kept decoded in memory at most (about 200 bytes each).
const TREE_CACHE_NODES: usize = 1_000_000;

/// A loaded snapshot list with the index that resolves its trees.
pub(crate) struct Loaded {
    /// Snapshots, oldest first.
    pub snapshots: Vec<(Id, Snapshot)>,
    /// Snapshot files that could not be read.
    pub unreadable: Vec<String>,
    /// The master index.
    pub index: Arc<MasterIndex>,
    at: Instant,
}

impl Loaded {
    /// The snapshot with this full hex ID.
    pub fn find(&self, hex: &str) -> Option<&(Id, Snapshot)> {
        self.snapshots.iter().find(|(id, _)| id.to_hex() == hex)
    }
}

/// Cached trees and their total entries.
struct Trees {
    lru: lru::LruCache<Id, Arc<Tree>>,
    nodes: usize,
}

/// Diffs by (old tree, new tree).
type DiffCache = lru::LruCache<(Id, Id), Arc<Vec<Change>>>;

/// The cache.
pub(crate) struct Catalog {
    repo: Arc<Repository>,
    loaded: tokio::sync::Mutex<Option<Arc<Loaded>>>,
    trees: Mutex<Trees>,
    /// Recent diffs by (old tree, new tree), so paging through one computes it once.
    diffs: Mutex<DiffCache>,
}

impl Catalog {
    pub fn new(repo: Arc<Repository>) -> Catalog {
        Catalog {
            repo,
            loaded: tokio::sync::Mutex::new(None),
            trees: Mutex::new(Trees {
                lru: lru::LruCache::unbounded(),
                nodes: 0,
            }),
            diffs: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(8).expect("non-zero"),
            )),
        }
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The snapshot list and index, reloaded if stale (or if `force`).
    pub async fn get(&self, force: bool) -> Result<Arc<Loaded>, String> {
        let mut slot = self.loaded.lock().await;
        if let Some(l) = slot.as_ref() {
            if !force && l.at.elapsed() < REFRESH {
                return Ok(l.clone());
            }
        }
        let repo = self.repo.clone();
        let old_index = slot.as_ref().map(|l| (l.index.clone(), ids(&l.snapshots)));
        let fresh = tokio::task::spawn_blocking(move || -> Result<Loaded, String> {
            let (snapshots, bad) = repo.snapshots().map_err(|e| e.to_string())?;
            let index = match old_index {
                Some((ix, old)) if old == ids(&snapshots) => ix,
                _ => Arc::new(repo.load_index().map_err(|e| e.to_string())?),
            };
            Ok(Loaded {
                snapshots,
                unreadable: bad.iter().map(ToString::to_string).collect(),
                index,
                at: Instant::now(),
            })
        })
        .await
        .map_err(|e| format!("listing snapshots: {e}"))??;
        let fresh = Arc::new(fresh);
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// The snapshot `hex`, reloading the list once if it is not known yet.
    pub async fn snapshot(&self, hex: &str) -> Result<(Arc<Loaded>, Id, Snapshot), String> {
        for force in [false, true] {
            let l = self.get(force).await?;
            if let Some((id, s)) = l.find(hex) {
                let (id, s) = (*id, s.clone());
                return Ok((l, id, s));
            }
        }
        Err(format!("there is no snapshot {hex} in the repository"))
    }

    /// Tree `id`, from the cache or decoded now (blocking: call from a blocking thread).
    pub fn tree(&self, index: &MasterIndex, id: &Id) -> Result<Arc<Tree>, String> {
        if let Some(t) = self.trees.lock().expect("tree cache").lru.get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(
            self.repo
                .load_tree(index, id)
                .map_err(|e| format!("reading tree {}: {e}", id.short()))?,
        );
        let mut c = self.trees.lock().expect("tree cache");
        if c.lru.put(*id, t.clone()).is_none() {
            c.nodes += t.nodes.len();
        }
        while c.nodes > TREE_CACHE_NODES && c.lru.len() > 1 {
            if let Some((_, old)) = c.lru.pop_lru() {
                c.nodes -= old.nodes.len();
            }
        }
        Ok(t)
    }

    /// The changes from tree `old` to tree `new` ([`holdfast_engine::diff::diff`]),
    /// cached.
    pub async fn diff(
        &self,
        index: &Arc<MasterIndex>,
        old: &Id,
        new: &Id,
    ) -> Result<Arc<Vec<Change>>, String> {
        let key = (*old, *new);
        if let Some(d) = self.diffs.lock().expect("diff cache").get(&key) {
            return Ok(d.clone());
        }
        let (repo, index) = (self.repo.clone(), index.clone());
        let d = tokio::task::spawn_blocking(move || {
            holdfast_engine::diff::diff(&repo, &index, &key.0, &key.1)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("comparing the snapshots: {e}"))?;
        let d = Arc::new(d);
        self.diffs.lock().expect("diff cache").put(key, d.clone());
        Ok(d)
    }

    /// What `path` (normalised, see [`crate::paths::normalize`]) is in the snapshot tree
    /// `root`: `None` for the root itself, else the entry. Each level is found by binary
    /// search (entries are sorted by name).
    pub fn lookup(
        &self,
        index: &MasterIndex,
        root: &Id,
        path: &[u8],
    ) -> Result<Option<Node>, String> {
        let mut tree = self.tree(index, root)?;
        let mut found = None;
        let comps: Vec<&[u8]> = crate::paths::components(path).collect();
        for (i, c) in comps.iter().enumerate() {
            let node = match tree.nodes.binary_search_by(|n| n.name.as_slice().cmp(c)) {
                Ok(k) => tree.nodes[k].clone(),
                Err(_) => {
                    return Err(format!(
                        "{} is not in the snapshot",
                        crate::paths::show(path)
                    ))
                }
            };
            if i + 1 < comps.len() {
                let Some(sub) = node.subtree else {
                    return Err(format!(
                        "{} is not a directory",
                        crate::paths::show(&comps[..=i].join(&b'/'))
                    ));
                };
                tree = self.tree(index, &sub)?;
            }
            found = Some(node);
        }
        Ok(found)
    }
}

fn ids(s: &[(Id, Snapshot)]) -> Vec<Id> {
    s.iter().map(|(id, _)| *id).collect()
}
