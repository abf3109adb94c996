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
}

fn ser_paths<S: serde::Serializer>(p: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(p.len()))?;
    for x in p {
        seq.serialize_element(&String::from_utf8_lossy(x))?;
    }
    seq.end()
}

/// Snapshot encoding version.
pub const SNAPSHOT_VERSION: u8 = 1;

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
        Ok(())
    }

    /// Plaintext encoding (call [`Snapshot::validate`] first; over-long fields are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SNAPSHOT_VERSION);
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
        w.finish()
    }

    /// Decodes a snapshot plaintext.
    pub fn decode(buf: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut r = Reader::new(buf);
        r.version("snapshot", SNAPSHOT_VERSION)?;
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
        })
    }
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
        )
            .prop_map(|((t, off, uid, gid), host, paths, tags, tree, parent, f)| {
                Snapshot {
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
                }
            })
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
