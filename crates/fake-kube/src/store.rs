//! Object storage: JSON objects keyed by resource, namespace and name; one global
//! resourceVersion counter; a bounded history of changes for watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::resources::ResourceType;

/// `(group, version, plural)` of a resource type.
pub(crate) type ResKey = (String, String, String);

/// The key of a resource type.
pub(crate) fn res_key(res: &ResourceType) -> ResKey {
    (res.group.clone(), res.version.clone(), res.plural.clone())
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One write, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: ResKey,
    pub kind: ChangeType,
    /// The object after the write (for DELETED: the object as deleted, with the new RV).
    pub object: Value,
    /// The object before the write (MODIFIED only), so selectors can turn a change into
    /// ADDED/DELETED for watchers whose selector it enters or leaves.
    pub old: Option<Value>,
}

/// The mutable state behind one lock.
pub(crate) struct StoreState {
    /// The last resourceVersion handed out.
    pub rv: u64,
    objects: HashMap<ResKey, BTreeMap<(String, String), Value>>,
    pub history: VecDeque<Arc<Change>>,
    pub history_limit: usize,
    /// Changes with `rv <= compacted` are no longer in the history.
    pub compacted: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
}

/// `metadata.namespace` (empty when absent).
pub(crate) fn namespace_of(obj: &Value) -> String {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `metadata.name` (empty when absent).
pub(crate) fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `metadata.resourceVersion` (empty when absent).
pub(crate) fn rv_of(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The object's `metadata`, created when missing.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// A random UUID (version 4 layout), as the server sets `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now as `metav1.Time` writes it (seconds, UTC).
pub(crate) fn now_time() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl StoreState {
    pub(crate) fn new(history_limit: usize) -> StoreState {
        let (tx, _) = broadcast::channel(8192);
        StoreState {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            tx,
        }
    }

    /// The stored object, if any.
    pub(crate) fn get(&self, res: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&res_key(res))
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// Stored objects of a type, in a namespace or in all (`None`), sorted by namespace and name.
    pub(crate) fn list(&self, res: &ResourceType, ns: Option<&str>) -> Vec<&Value> {
        match self.objects.get(&res_key(res)) {
            None => Vec::new(),
            Some(m) => m
                .iter()
                .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                .map(|(_, v)| v)
                .collect(),
        }
    }

    /// Whether namespace `ns` exists.
    pub(crate) fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "v1".into(), "namespaces".into()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    /// Stores `obj` (ADDED or MODIFIED) with a new resourceVersion; returns the stored object.
    pub(crate) fn put(&mut self, res: &ResourceType, mut obj: Value, kind: ChangeType) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (namespace_of(&obj), name_of(&obj));
        let old = self
            .objects
            .entry(res_key(res))
            .or_default()
            .insert(key, obj.clone());
        let kind = if old.is_some() && kind == ChangeType::Added {
            ChangeType::Modified
        } else {
            kind
        };
        self.record(Change {
            rv,
            key: res_key(res),
            kind,
            object: obj.clone(),
            old,
        });
        obj
    }

    /// Removes an object; the DELETED event carries a new resourceVersion, as the real server's
    /// does. Returns the removed object (with that resourceVersion).
    pub(crate) fn remove(&mut self, res: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        self.remove_key(&res_key(res), ns, name)
    }

    /// Like [`StoreState::remove`], by resource key.
    pub(crate) fn remove_key(&mut self, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(Change {
            rv,
            key: key.clone(),
            kind: ChangeType::Deleted,
            object: obj.clone(),
            old: None,
        });
        Some(obj)
    }

    /// Every stored object in namespace `ns`, as (resource key, name).
    pub(crate) fn keys_in_namespace(&self, ns: &str) -> Vec<(ResKey, String)> {
        let mut out = Vec::new();
        for (key, m) in &self.objects {
            for (n, name) in m.keys() {
                if n == ns {
                    out.push((key.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Forgets the whole history (as etcd compaction would) and advances the resourceVersion
    /// by one (as unrelated writes in a real cluster do): any watch or continue token from
    /// before now answers 410 Expired.
    pub(crate) fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
    }
}
