//! One module per command; this one holds what they share (the global flags as the
//! engine's [`OpenOptions`], opening the repository, snapshot filters, JSON output) and
//! the dispatch.

mod agent;
mod backup;
mod bucket;
mod cat;
mod check;
mod copy;
mod coverage;
pub(crate) mod drill;
pub(crate) mod etcd;
mod forget;
mod init;
mod key;
mod ls;
mod migrate;
mod mount;
pub mod objects;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
pub(crate) mod web;

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_engine::{CacheChoice, OpenOptions};
use holdfast_repo::backend::Backend;
use holdfast_repo::repository::{KeyHint, Repository, SnapshotFilter};

use crate::cli::{Args, Command, Filter, FromRepo};
use crate::password;

/// Runs the command; returns the exit code on success paths (0, 1 for a check that found
/// errors or a forget that could not remove a snapshot, 3 for a partial backup or restore).
pub fn run(args: &Args) -> Result<i32> {
    match &args.command {
        Command::Init {
            pack_size_mib,
            kdf_memory_kib,
            kdf_iterations,
            copy_chunker_params,
            from,
        } => init::run(
            args,
            *pack_size_mib,
            *kdf_memory_kib,
            *kdf_iterations,
            copy_chunker_params.then_some(from),
        ),
        Command::Copy {
            from,
            filter,
            dry_run,
            snapshots,
        } => copy::run(args, from, filter, *dry_run, snapshots),
        Command::Backup { .. } => backup::run(args),
        Command::Snapshots { filter } => snapshots::run(args, filter),
        Command::Ls {
            snapshot,
            path,
            long,
            filter,
        } => ls::run(args, snapshot, path.as_deref(), *long, filter),
        Command::Restore { .. } => restore::run(args),
        Command::Mount {
            mountpoint,
            allow_other,
            filter,
        } => mount::run(args, mountpoint, *allow_other, filter),
        Command::Dump {
            snapshot,
            path,
            onto,
            filter,
        } => restore::dump(args, snapshot, path, onto.as_deref(), filter),
        Command::Cat { kind, id } => cat::run(args, *kind, id.as_deref()),
        Command::Key { action } => key::run(args, action),
        Command::Stats => stats::run(args),
        Command::Prune(p) => prune::run(args, p),
        Command::Repair { what } => repair::run(args, what),
        Command::Forget(f) => forget::run(args, f),
        Command::Migrate(m) => migrate::run(args, m),
        Command::Check {
            read_data,
            read_data_subset,
        } => check::run(args, *read_data, *read_data_subset),
        Command::Agent(a) => agent::run(args, a),
        Command::Coverage(c) => coverage::run(args, c),
        Command::Etcd(e) => etcd::run(args, e),
        Command::Drill(d) => drill::run(args, d),
        Command::Objects { action } => objects::run(action),
        Command::Bucket { action } => bucket::run(args, action),
        Command::Ui(a) => web::run(args, a),
    }
}

/// Prints what a backup wants the user to know, on standard error: signs that the
/// repository went backwards first and loudest, then notes, then unread entries.
pub fn print_backup_notes(report: &holdfast_engine::backup::BackupReport) {
    print_rollbacks(&report.rollbacks);
    for n in &report.notices {
        eprintln!("holdfast: note: {n}");
    }
    for w in &report.warnings {
        eprintln!("holdfast: warning: {w}");
    }
}

/// Prints each sign of a rollback as a warning that stands out.
pub fn print_rollbacks(rollbacks: &[holdfast_engine::highwater::Rollback]) {
    for r in rollbacks {
        eprintln!("holdfast: WARNING: {r}");
    }
}

/// The location and cache options of the global flags; an error without `-r`.
pub fn open_options(args: &Args) -> Result<OpenOptions> {
    let Some(loc) = args.repo.as_deref() else {
        bail!("no repository given: use -r/--repo or set HOLDFAST_REPOSITORY");
    };
    Ok(OpenOptions {
        location: loc.to_string(),
        s3_region: args.s3_region.clone(),
        ..open_options_or_default(args)
    })
}

/// The backend for the `-r` location.
pub fn backend(args: &Args) -> Result<Arc<dyn Backend>> {
    Ok(holdfast_engine::open::backend(&open_options(args)?)?)
}

/// Opens the repository with the password from the usual sources, with the local cache
/// (for S3 repositories, unless `--no-cache`).
pub fn open(args: &Args) -> Result<Repository> {
    open_with(args, holdfast_engine::open::open_on)
}

/// Opens the repository without a cache: for commands that verify what the repository
/// itself holds (check, repair).
pub fn open_uncached(args: &Args) -> Result<Repository> {
    open_with(args, holdfast_engine::open::open_uncached_on)
}

/// A way to open a repository on a backend ([`holdfast_engine::open::open_on`] or
/// [`holdfast_engine::open::open_uncached_on`]).
type OpenOn = fn(Arc<dyn Backend>, &OpenOptions, &[u8]) -> holdfast_engine::Result<Repository>;

/// Opens with `how`: the location is checked (and an S3 backend's credentials found)
/// before the password is asked for.
fn open_with(args: &Args, how: OpenOn) -> Result<Repository> {
    let opts = open_options(args)?;
    let backend = holdfast_engine::open::backend(&opts)?;
    let pw = password::get(
        args.password_file.as_deref(),
        args.password_command.as_deref(),
        false,
    )?;
    Ok(how(backend, &opts, &pw)?)
}

/// Opens the source repository of `copy` / `init --copy-chunker-params` (--from-repo) with
/// its own password, with the cache and limits of the global flags.
pub fn open_source(args: &Args, from: &FromRepo) -> Result<Repository> {
    let Some(loc) = from.from_repo.as_deref() else {
        bail!("no source repository given: use --from-repo or set HOLDFAST_FROM_REPOSITORY");
    };
    let opts = OpenOptions {
        location: loc.to_string(),
        s3_region: from.from_s3_region.clone(),
        ..open_options_or_default(args)
    };
    let backend = holdfast_engine::open::backend(&opts)?;
    let pw = password::get_source(
        from.from_password_file.as_deref(),
        from.from_password_command.as_deref(),
    )?;
    holdfast_engine::open::open_on(backend, &opts, &pw)
        .with_context(|| format!("cannot open the source repository {loc}"))
}

/// The global flags' cache and limits, whether or not -r is given.
fn open_options_or_default(args: &Args) -> OpenOptions {
    let cache = match &args.cache_dir {
        _ if args.no_cache => CacheChoice::Off,
        Some(d) if !d.as_os_str().is_empty() => CacheChoice::Dir(d.clone()),
        _ => CacheChoice::Default,
    };
    OpenOptions {
        location: String::new(),
        s3_region: None,
        cache,
        limit_upload_kib: args.limit_upload,
        limit_download_kib: args.limit_download,
        s3_credentials: None,
        key_hint: KeyHint {
            id_prefix: args.key_hint.clone(),
            host: Some(host_name()),
        },
    }
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

pub use holdfast_engine::backup::{host_name, now_ns, user_name};

/// Prints a result as one JSON document on stdout. It goes through a `serde_json::Value`,
/// whose objects keep their keys sorted: the output does not depend on the order of a
/// struct's fields.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    let v = serde_json::to_value(v)?;
    println!("{v}");
    Ok(())
}
