//! `holdfast init`.

use anyhow::{Context, Result};
use holdfast_chunker::ChunkerParams;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};

use holdfast_repo::crypto::MasterKey;

use super::{backend, host_name, now_ns, open_source, print_json, user_name};
use crate::cli::{Args, FromRepo};
use crate::exit;
use crate::password;

/// What `init --json` prints.
#[derive(serde::Serialize)]
struct Created {
    /// The location.
    repository: String,
    /// The new repository's ID.
    id: holdfast_repo::Id,
    /// Its first key.
    key: holdfast_repo::Id,
}

pub fn run(
    args: &Args,
    pack_size_mib: u32,
    kdf_memory_kib: u32,
    kdf_iterations: u32,
    copy_chunker_params: Option<&FromRepo>,
) -> Result<i32> {
    let backend = backend(args)?;
    // With --copy-chunker-params: the source's chunk sizes, chunker key and blob-ID key,
    // with a new encryption key (SPEC.md §4.1).
    let (chunk, key) = match copy_chunker_params {
        Some(from) => {
            let src = open_source(args, from)?;
            let cfg = src.config();
            let mut key = MasterKey::generate();
            key.blob_id = src.key().blob_id;
            key.chunker = src.key().chunker;
            ((cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max), key)
        }
        None => {
            let c = ChunkerParams::DEFAULT;
            ((c.min, c.avg, c.max), MasterKey::generate())
        }
    };
    let pw = password::get(
        args.password_file.as_deref(),
        args.password_command.as_deref(),
        true,
    )?;
    let opts = InitOptions {
        chunk,
        pack_size: pack_size_mib * 1024 * 1024,
        kdf: KdfParams {
            m_cost_kib: kdf_memory_kib,
            t_cost: kdf_iterations,
            p_cost: 1,
        },
        host: host_name(),
        user: user_name(),
        now_ns: now_ns(),
    };
    let repo = Repository::init_with_key(backend.clone(), &pw, &opts, key)
        .with_context(|| format!("cannot create a repository at {}", backend.location()))?;
    if args.json {
        print_json(&Created {
            repository: backend.location(),
            id: repo.config().repo_id,
            key: repo.key_id(),
        })?;
    } else if !args.quiet {
        println!(
            "created holdfast repository {} at {}",
            repo.config().repo_id.short(),
            backend.location()
        );
        println!(
            "Keep the password safe: without it the data cannot be read by anyone, including you."
        );
    }
    Ok(exit::OK)
}
