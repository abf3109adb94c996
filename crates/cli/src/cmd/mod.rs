//! One module per command; this one holds what they share (opening the repository,
//! resolving snapshots) and the dispatch.

mod agent;
mod backup;
mod cat;
mod check;
mod forget;
mod init;
mod key;
mod ls;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_backend_s3::{S3Backend, S3Options};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::Backend;
use holdfast_repo::cache::Cache;
use holdfast_repo::repository::{Repository, SnapshotFilter};

use crate::cli::{Args, Command, Filter};
use crate::password;

/// Runs the command; returns the exit code on success paths (0, 1 for a check that found
/// errors or a forget that could not remove a snapshot, 3 for a partial backup or restore).
pub fn run(args: &Args) -> Result<i32> {
    match &args.command {
        Command::Init {
            pack_size_mib,
            kdf_memory_kib,
            kdf_iterations,
        } => init::run(args, *pack_size_mib, *kdf_memory_kib, *kdf_iterations),
        Command::Backup { .. } => backup::run(args),
        Command::Snapshots { filter } => snapshots::run(args, filter),
        Command::Ls {
            snapshot,
            path,
            long,
            filter,
        } => ls::run(args, snapshot, path.as_deref(), *long, filter),
        Command::Restore { .. } => restore::run(args),
        Command::Dump {
            snapshot,
            path,
            filter,
        } => restore::dump(args, snapshot, path, filter),
        Command::Cat { kind, id } => cat::run(args, *kind, id.as_deref()),
        Command::Key { action } => key::run(args, action),
        Command::Stats => stats::run(args),
        Command::Prune(p) => prune::run(args, p),
        Command::Repair { what } => repair::run(args, what),
        Command::Forget(f) => forget::run(args, f),
        Command::Check {
            read_data,
            read_data_subset,
        } => check::run(args, *read_data, *read_data_subset),
        Command::Agent(a) => agent::run(args, a),
    }
}

/// The backend for the `-r` location.
pub fn backend(args: &Args) -> Result<Arc<dyn Backend>> {
    let Some(loc) = args.repo.as_deref() else {
        bail!("no repository given: use -r/--repo or set HOLDFAST_REPOSITORY");
    };
    if let Some(rest) = loc.strip_prefix("local:") {
        return Ok(Arc::new(LocalBackend::new(rest)));
    }
    if loc.starts_with("s3:") {
        let mut options = S3Options::from_env()?;
        options.region = args.s3_region.clone();
        let b = S3Backend::new(loc, options)?;
        return Ok(Arc::new(b));
    }
    if loc.contains("://") {
        bail!(
            "repository location {loc:?}: unknown scheme; use a directory path, local:PATH or \
             s3:http://HOST:PORT/BUCKET/PREFIX, s3:https://HOST/BUCKET/PREFIX, s3:BUCKET/PREFIX"
        );
    }
    Ok(Arc::new(LocalBackend::new(loc)))
}

/// Opens the repository with the password from the usual sources, with the local cache
/// (see [`cache_for`]).
pub fn open(args: &Args) -> Result<Repository> {
    let mut repo = open_uncached(args)?;
    let cache = cache_for(args, &repo);
    repo.set_cache(cache);
    Ok(repo)
}

/// The local cache for this repository: for S3 repositories unless `--no-cache` (a
/// repository on a local path would only be copied to another local path).
pub fn cache_for(args: &Args, repo: &Repository) -> Option<Cache> {
    let remote = args.repo.as_deref().is_some_and(|l| l.starts_with("s3:"));
    if args.no_cache || !remote {
        return None;
    }
    let base = match &args.cache_dir {
        Some(d) if !d.as_os_str().is_empty() => d.clone(),
        _ => holdfast_repo::cache::default_dir()?,
    };
    Some(Cache::new(&base, &repo.config().repo_id))
}

/// Opens the repository without a cache: for commands that verify what the repository
/// itself holds (check, repair).
pub fn open_uncached(args: &Args) -> Result<Repository> {
    let backend = backend(args)?;
    let pw = password::get(
        args.password_file.as_deref(),
        args.password_command.as_deref(),
        false,
    )?;
    let repo = Repository::open(backend, &pw).with_context(|| {
        format!(
            "cannot open repository {}",
            args.repo.as_deref().unwrap_or("")
        )
    })?;
    Ok(repo)
}

/// Converts command-line filters.
pub fn filter(f: &Filter) -> Result<SnapshotFilter> {
    let mut paths = Vec::new();
    for p in &f.paths {
        let abs = holdfast_engine::archiver::normalize_path(p)?;
        paths.push(abs.as_os_str().as_bytes().to_vec());
    }
    Ok(SnapshotFilter {
        hosts: f.hosts.clone(),
        tags: f.tags.clone(),
        paths,
    })
}

/// Now, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// This machine's host name.
pub fn host_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The current user's name.
pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}
