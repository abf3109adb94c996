//! Snapshots: one backup run, pointing at the root tree (SPEC.md §9).

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;

/// Counters describing what a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent.
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories that changed.
    pub dirs_changed: u64,
    /// Directories unchanged.
    pub dirs_unchanged: u64,
    /// Data blobs written.
    pub data_blobs_added: u64,
    /// Tree blobs written.
    pub tree_blobs_added: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Total size of the files in the snapshot.
    pub bytes_total: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added_raw: u64,
    /// Stored bytes of new blobs (after compression and encryption).
    pub bytes_added_stored: u64,
    /// Entries that could not be read.
    pub errors: u64,
    /// Wall time of the backup, ns.
    pub duration_ns: u64,
}

impl Summary {
    fn fields(&self) -> [u64; 14] {
        [
            self.files_new,
            self.files_changed,
            self.files_unchanged,
            self.dirs_new,
            self.dirs_changed,
            self.dirs_unchanged,
            self.data_blobs_added,
            self.tree_blobs_added,
            self.bytes_read,
            self.bytes_total,
            self.bytes_added_raw,
            self.bytes_added_stored,
            self.errors,
            self.duration_ns,
        ]
    }
    fn from_fields(f: [u64; 14]) -> Summary {
        Summary {
            files_new: f[0],
            files_changed: f[1],
            files_unchanged: f[2],
            dirs_new: f[3],
            dirs_changed: f[4],
            dirs_unchanged: f[5],
            data_blobs_added: f[6],
            tree_blobs_added: f[7],
            bytes_read: f[8],
            bytes_total: f[9],
            bytes_added_raw: f[10],
            bytes_added_stored: f[11],
            errors: f[12],
            duration_ns: f[13],
        }
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Start time, ns since the epoch (UTC).
    pub time_ns: i64,
    /// Offset of the backup host's local time from UTC, seconds (for calendar retention).
    pub utc_offset_s: i32,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// User ID of the backup process.
    pub uid: u32,
    /// Group ID of the backup process.
    pub gid: u32,
    /// Absolute paths that were backed up, as bytes.
    #[serde(serialize_with = "ser_paths")]
    pub paths: Vec<Vec<u8>>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Root tree: one entry per backed-up path component chain (see SPEC.md §9).
    pub tree: Id,
    /// The snapshot this one was made incrementally from.
    pub parent: Option<Id>,
    /// Version of the program that wrote it.
    pub program_version: String,
    /// Counters.
    pub summary: Summary,
    /// Version-2 fields: host sequence number, origin of a copy, extensions (§9.1).
    pub ext: SnapshotExt,
}

/// Where a copied snapshot came from: the repository it was first written to and its ID
/// there. Copies of copies keep the first origin, so every copy of one backup is
/// recognised as the same snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Origin {
    /// `repo_id` of the repository the snapshot was written to by a backup.
    pub repo_id: Id,
    /// The snapshot's ID in that repository.
    pub snapshot: Id,
}

/// The fields a version-2 snapshot adds. A snapshot whose `ext` is empty is encoded as
/// version 1, which every holdfast reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotExt {
    /// 1 for the first snapshot a host writes into a repository, then one more for each
    /// next one: a gap at the top shows that newer snapshots were removed (rollback).
    pub host_seq: Option<u64>,
    /// Set on snapshots written by `copy`.
    pub origin: Option<Origin>,
    /// Extensions this build does not know but that a reader may ignore (type < 0x8000),
    /// kept so that re-encoding (a copy) does not drop them.
    pub unknown: Vec<(u16, Vec<u8>)>,
}

impl SnapshotExt {
    /// Whether the snapshot needs version 2.
    pub fn is_empty(&self) -> bool {
        self.host_seq.is_none() && self.origin.is_none() && self.unknown.is_empty()
    }

    /// The (type, value) records in encoding order: ascending type, each at most once.
    fn records(&self) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(seq) = self.host_seq {
            out.push((EXT_HOST_SEQ, seq.to_le_bytes().to_vec()));
        }
        if let Some(o) = &self.origin {
            let mut v = o.repo_id.0.to_vec();
            v.extend_from_slice(&o.snapshot.0);
            out.push((EXT_ORIGIN, v));
        }
        out.extend(self.unknown.iter().cloned());
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

/// Extension type: host sequence number, `u64`.
pub const EXT_HOST_SEQ: u16 = 1;
/// Extension type: origin of a copy, `repo_id (32) ‖ snapshot id (32)`.
pub const EXT_ORIGIN: u16 = 2;
/// Extension types at or above this are critical: a reader that does not know one
/// must refuse the snapshot instead of ignoring it.
pub const EXT_CRITICAL: u16 = 0x8000;

fn ser_paths<S: serde::Serializer>(p: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(p.len()))?;
    for x in p {
        seq.serialize_element(&String::from_utf8_lossy(x))?;
    }
    seq.end()
}

/// Newest snapshot encoding version (1 is written when there is no version-2 field).
pub const SNAPSHOT_VERSION: u8 = 2;

impl Snapshot {
    /// Checks that every field fits its length prefix, so encoding never truncates.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let short = [
            ("host", &self.host),
            ("user", &self.user),
            ("program version", &self.program_version),
        ];
        for (what, v) in short {
            if v.len() > u16::MAX as usize {
                return Err(invalid(
                    "snapshot",
                    format!("{what} is longer than 65535 bytes"),
                ));
            }
        }
        if self.tags.iter().any(|t| t.len() > u16::MAX as usize) {
            return Err(invalid("snapshot", "a tag is longer than 65535 bytes"));
        }
        if self.paths.iter().any(|p| p.len() > u32::MAX as usize) {
            return Err(invalid("snapshot", "a path is too long"));
        }
        let mut last = None;
        for (t, v) in &self.ext.unknown {
            if *t == EXT_HOST_SEQ || *t == EXT_ORIGIN || *t >= EXT_CRITICAL {
                return Err(invalid(
                    "snapshot extension",
                    format!("type {t} cannot be kept as unknown"),
                ));
            }
            if last >= Some(*t) || v.len() > u32::MAX as usize {
                return Err(invalid(
                    "snapshot extension",
                    "unknown extensions must be in ascending type order",
                ));
            }
            last = Some(*t);
        }
        Ok(())
    }

    /// Plaintext encoding (call [`Snapshot::validate`] first; over-long fields are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(if self.ext.is_empty() { 1 } else { 2 });
        w.i64(self.time_ns);
        w.u32(self.utc_offset_s as u32);
        w.str16(&self.host);
        w.str16(&self.user);
        w.u32(self.uid);
        w.u32(self.gid);
        w.u32(self.paths.len() as u32);
        for p in &self.paths {
            w.bytes32(p);
        }
        w.u32(self.tags.len() as u32);
        for t in &self.tags {
            w.str16(t);
        }
        w.id(&self.tree);
        match &self.parent {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.id(p);
            }
        }
        w.str16(&self.program_version);
        for f in self.summary.fields() {
            w.u64(f);
        }
        if !self.ext.is_empty() {
            let records = self.ext.records();
            w.u32(records.len() as u32);
            for (t, v) in &records {
                w.u16(*t);
                w.bytes32(v);
            }
        }
        w.finish()
    }

    /// Decodes a snapshot plaintext.
    pub fn decode(buf: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != 1 && version != 2 {
            return Err(DecodeError::Version {
                what: "snapshot",
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let time_ns = r.i64()?;
        let utc_offset_s = r.u32()? as i32;
        let host = r.str16("host")?;
        let user = r.str16("user")?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let np = r.count("path count", 4)?;
        let mut paths = Vec::with_capacity(np);
        for _ in 0..np {
            paths.push(r.bytes32()?.to_vec());
        }
        let nt = r.count("tag count", 2)?;
        let mut tags = Vec::with_capacity(nt);
        for _ in 0..nt {
            tags.push(r.str16("tag")?);
        }
        let tree = r.id()?;
        let parent = match r.u8()? {
            0 => None,
            1 => Some(r.id()?),
            t => return Err(invalid("parent flag", format!("{t}"))),
        };
        let program_version = r.str16("program version")?;
        let mut f = [0u64; 14];
        for x in f.iter_mut() {
            *x = r.u64()?;
        }
        let ext = if version == 2 {
            decode_ext(&mut r)?
        } else {
            SnapshotExt::default()
        };
        r.finish()?;
        Ok(Snapshot {
            time_ns,
            utc_offset_s,
            host,
            user,
            uid,
            gid,
            paths,
            tags,
            tree,
            parent,
            program_version,
            summary: Summary::from_fields(f),
            ext,
        })
    }

    /// The identity under which `copy` recognises this snapshot in any repository: its
    /// origin if it is a copy, else itself in the repository `repo_id` it is stored in.
    pub fn origin_or(&self, repo_id: Id, id: Id) -> Origin {
        self.ext.origin.unwrap_or(Origin {
            repo_id,
            snapshot: id,
        })
    }
}

/// Reads the version-2 extension list: ascending types, each once, at least one record
/// (an empty list is written as version 1), known types with their exact lengths.
fn decode_ext(r: &mut Reader<'_>) -> Result<SnapshotExt, DecodeError> {
    let n = r.count("extension count", 6)?;
    if n == 0 {
        return Err(invalid(
            "extension count",
            "0 (a snapshot without extensions is version 1)",
        ));
    }
    let mut ext = SnapshotExt::default();
    let mut last: Option<u16> = None;
    for _ in 0..n {
        let t = r.u16()?;
        let v = r.bytes32()?;
        if last >= Some(t) {
            return Err(invalid(
                "extension type",
                format!("{t} after {} (must ascend)", last.unwrap_or(0)),
            ));
        }
        last = Some(t);
        match t {
            EXT_HOST_SEQ => {
                let b: [u8; 8] = v
                    .try_into()
                    .map_err(|_| invalid("host sequence", format!("{} bytes", v.len())))?;
                ext.host_seq = Some(u64::from_le_bytes(b));
            }
            EXT_ORIGIN => {
                if v.len() != 64 {
                    return Err(invalid("origin", format!("{} bytes", v.len())));
                }
                let mut repo_id = [0u8; 32];
                let mut snapshot = [0u8; 32];
                repo_id.copy_from_slice(&v[..32]);
                snapshot.copy_from_slice(&v[32..]);
                ext.origin = Some(Origin {
                    repo_id: Id(repo_id),
                    snapshot: Id(snapshot),
                });
            }
            t if t >= EXT_CRITICAL => {
                return Err(DecodeError::Newer(format!(
                    "snapshot uses critical extension type {t:#06x}"
                )))
            }
            t => ext.unknown.push((t, v.to_vec())),
        }
    }
    Ok(ext)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
        (
            any::<(i64, i32, u32, u32)>(),
            "[a-z0-9-]{0,12}",
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..4),
            proptest::collection::vec("[a-z]{1,6}", 0..3),
            any::<[u8; 32]>(),
            proptest::option::of(any::<[u8; 32]>()),
            any::<[u64; 14]>(),
            arb_ext(),
        )
            .prop_map(
                |((t, off, uid, gid), host, paths, tags, tree, parent, f, ext)| Snapshot {
                    time_ns: t,
                    utc_offset_s: off,
                    host: host.clone(),
                    user: host,
                    uid,
                    gid,
                    paths,
                    tags,
                    tree: Id(tree),
                    parent: parent.map(Id),
                    program_version: "holdfast test".into(),
                    summary: Summary::from_fields(f),
                    ext,
                },
            )
    }

    fn arb_ext() -> impl Strategy<Value = SnapshotExt> {
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<([u8; 32], [u8; 32])>()),
            proptest::collection::btree_map(
                3u16..EXT_CRITICAL,
                proptest::collection::vec(any::<u8>(), 0..10),
                0..3,
            ),
        )
            .prop_map(|(host_seq, origin, unknown)| SnapshotExt {
                host_seq,
                origin: origin.map(|(r, s)| Origin {
                    repo_id: Id(r),
                    snapshot: Id(s),
                }),
                unknown: unknown.into_iter().collect(),
            })
    }

    fn sample(ext: SnapshotExt) -> Snapshot {
        Snapshot {
            time_ns: 1,
            utc_offset_s: 0,
            host: "h".into(),
            user: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec![b"/x".to_vec()],
            tags: vec![],
            tree: Id([7; 32]),
            parent: None,
            program_version: "holdfast test".into(),
            summary: Summary::default(),
            ext,
        }
    }

    #[test]
    fn without_extensions_is_version_1_with_is_version_2() {
        assert_eq!(sample(SnapshotExt::default()).encode()[0], 1);
        let s = sample(SnapshotExt {
            host_seq: Some(3),
            ..Default::default()
        });
        assert_eq!(s.encode()[0], 2);
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
    }

    /// Re-encodes `s` with its extension list replaced by `records` (raw, unchecked).
    fn with_records(s: &Snapshot, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut base = sample(SnapshotExt::default()).encode();
        assert_eq!(s.ext, SnapshotExt::default());
        base[0] = 2;
        let mut w = Writer::new();
        w.u32(records.len() as u32);
        for (t, v) in records {
            w.u16(*t);
            w.bytes32(v);
        }
        base.extend(w.finish());
        base
    }

    #[test]
    fn extension_rules() {
        let s = sample(SnapshotExt::default());
        // Unknown ignorable type: kept.
        let d = Snapshot::decode(&with_records(&s, &[(9, b"ab")])).unwrap();
        assert_eq!(d.ext.unknown, vec![(9, b"ab".to_vec())]);
        assert_eq!(Snapshot::decode(&d.encode()).unwrap(), d);
        // Unknown critical type: "newer", not corrupt.
        let e = Snapshot::decode(&with_records(&s, &[(0x8001, b"")])).unwrap_err();
        assert!(matches!(e, DecodeError::Newer(_)), "{e}");
        // Out of order, duplicate, empty list, wrong lengths: corrupt.
        for bad in [
            with_records(&s, &[(2, &[0; 64]), (1, &[0; 8])]),
            with_records(&s, &[(1, &[0; 8]), (1, &[0; 8])]),
            with_records(&s, &[]),
            with_records(&s, &[(1, &[0; 7])]),
            with_records(&s, &[(2, &[0; 63])]),
        ] {
            assert!(matches!(
                Snapshot::decode(&bad),
                Err(DecodeError::Invalid { .. })
            ));
        }
        // Version 3: newer.
        let mut v3 = s.encode();
        v3[0] = 3;
        assert!(matches!(
            Snapshot::decode(&v3),
            Err(DecodeError::Version { found: 3, .. })
        ));
    }

    proptest! {
        #[test]
        fn snapshot_round_trip(s in arb_snapshot()) {
            let enc = s.encode();
            prop_assert_eq!(Snapshot::decode(&enc).unwrap(), s);
            for cut in 0..enc.len() {
                prop_assert!(Snapshot::decode(&enc[..cut]).is_err());
            }
        }
    }
}
