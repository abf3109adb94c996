//! Set-up for the unit tests: a small repository in a directory.

use std::path::Path;
use std::sync::Arc;

use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};

/// A new repository in `dir` (password "pw", cheap key derivation, small chunks and packs).
pub fn repo(dir: &Path) -> Repository {
    let opts = InitOptions {
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
    };
    Repository::init(Arc::new(LocalBackend::new(dir)), b"pw", &opts).unwrap()
}
