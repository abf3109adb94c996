//! `holdfast cat`: decrypted objects as JSON, for debugging and for the curious.

use anyhow::{bail, Result};
use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;
use holdfast_repo::keyfile::KeyFile;
use holdfast_repo::pack::read_header;
use holdfast_repo::tree::Tree;
use holdfast_repo::Id;

use super::{open, print_json};
use crate::cli::{Args, ObjectKind};
use crate::exit;
use holdfast_engine::listing::SnapshotEntry;

/// Resolves a full ID or a unique prefix among the files of a kind.
pub fn resolve(
    repo: &holdfast_repo::repository::Repository,
    kind: FileKind,
    spec: &str,
) -> Result<Id> {
    if spec.len() == 64 {
        return Ok(Id::from_hex(spec)?);
    }
    let all = repo.backend().list(kind)?;
    let m: Vec<Id> = all
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.has_hex_prefix(spec))
        .collect();
    match m.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no {} ID starts with {spec:?}", kind.name()),
        _ => bail!(
            "{} {} IDs start with {spec:?}: give more digits",
            m.len(),
            kind.name()
        ),
    }
}

pub fn run(args: &Args, kind: ObjectKind, id: Option<&str>) -> Result<i32> {
    let repo = open(args)?;
    // clap requires the ID for every kind but config.
    let need_id = || id.ok_or_else(|| anyhow::anyhow!("give the object's ID"));
    let v = match kind {
        ObjectKind::Config => serde_json::to_value(repo.config())?,
        ObjectKind::Key => {
            let id = resolve(&repo, FileKind::Key, need_id()?)?;
            let kf = KeyFile::decode(&repo.read_checked(FileKind::Key, &id)?)
                .map_err(|e| holdfast_repo::Error::decode("key", id, e))?;
            serde_json::json!({"id": id, "kdf": "argon2id", "params": kf.kdf, "salt": hex::encode(kf.salt), "created_ns": kf.created_ns, "host": kf.host, "user": kf.user})
        }
        ObjectKind::Snapshot => {
            let id = resolve(&repo, FileKind::Snapshot, need_id()?)?;
            serde_json::to_value(SnapshotEntry::new(&id, &repo.load_snapshot(&id)?))?
        }
        ObjectKind::Index => {
            let id = resolve(&repo, FileKind::Index, need_id()?)?;
            let f = repo.load_index_file(&id)?;
            serde_json::json!({
                "id": id,
                "supersedes": f.supersedes,
                "packs": f.packs.iter().map(|p| serde_json::json!({"id": p.id, "blobs": p.blobs})).collect::<Vec<_>>(),
            })
        }
        ObjectKind::Pack => {
            let id = resolve(&repo, FileKind::Pack, need_id()?)?;
            let bytes = repo.read_checked(FileKind::Pack, &id)?;
            let h = read_header(repo.key(), &id, &bytes)?;
            serde_json::json!({"id": id, "size": bytes.len(), "type": h.pack_type, "blobs": h.entries})
        }
        ObjectKind::Tree => {
            let id = Id::from_hex(need_id()?)?;
            let index = repo.load_index()?;
            let t: Tree = repo.load_tree(&index, &id)?;
            let _ = BlobType::Tree;
            serde_json::to_value(&t)?
        }
    };
    print_json(&v)?;
    Ok(exit::OK)
}
