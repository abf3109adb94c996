//! Set-up for the unit tests: a small repository in a directory.

use std::path::Path;
use std::sync::Arc;

use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::FileKind;
use holdfast_repo::config::Config;
use holdfast_repo::envelope::{self, ObjectKind};
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};
use holdfast_repo::Id;

/// A new repository in `dir` (password "pw", cheap key derivation, small chunks and packs).
pub fn repo(dir: &Path) -> Repository {
    Repository::init(Arc::new(LocalBackend::new(dir)), b"pw", &init_options()).unwrap()
}

/// The init options of [`repo`]: cheap key derivation, 1 MiB packs, default chunks.
pub fn init_options() -> InitOptions {
    InitOptions {
        chunk: (512 * 1024, 1024 * 1024, 8 * 1024 * 1024),
        pack_size: 1 << 20,
        kdf: KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
        host: "h".into(),
        user: "u".into(),
        now_ns: 0,
    }
}

/// [`repo`] as holdfast 0.1 made it: its config replaced by a version-1 config (no
/// generation, no features), so `snapshot-v2` is off.
pub fn repo_v1(dir: &Path) -> Repository {
    let r = repo(dir);
    let b = r.backend().clone();
    for (id, _) in b.list(FileKind::Config).unwrap() {
        b.remove(FileKind::Config, &id).unwrap();
    }
    let c = Config {
        version: 1,
        generation: 1,
        written_ns: r.config().created_ns,
        features: vec![],
        ..r.config().clone()
    };
    let bytes = envelope::seal(r.key(), ObjectKind::Config, &c.encode(), false);
    b.write(FileKind::Config, &Id::of_stored_bytes(&bytes), &bytes)
        .unwrap();
    Repository::open(b, b"pw").unwrap()
}
