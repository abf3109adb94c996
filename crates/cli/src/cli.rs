//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use holdfast_repo::keyfile::KdfParams;

/// holdfast: encrypted, deduplicating backups.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, long_about = None, propagate_version = true)]
pub struct Args {
    /// Repository location: a directory path, or s3:http://HOST:PORT/BUCKET/PREFIX,
    /// s3:https://HOST/BUCKET/PREFIX, s3:BUCKET/PREFIX (AWS).
    #[arg(short = 'r', long = "repo", env = "HOLDFAST_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Region of an S3 repository (default: AWS_REGION or the AWS profile's, else us-east-1).
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Read the password from this file.
    #[arg(long, env = "HOLDFAST_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "HOLDFAST_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Where S3 repositories keep local copies of index files, snapshots and tree packs
    /// (default $XDG_CACHE_HOME/holdfast or ~/.cache/holdfast). A repository on a local
    /// path uses no cache.
    #[arg(long, env = "HOLDFAST_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use no local cache: read everything from the repository.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Machine-readable output: one JSON document, or JSON lines for streams.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Snapshot filters shared by several commands.
#[derive(Debug, Clone, ClapArgs, Default)]
pub struct Filter {
    /// Only snapshots from this host (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (comma-separated: all of them; repeatable: any).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Target pack size in MiB.
        #[arg(long, default_value_t = 16)]
        pack_size_mib: u32,
        /// Argon2id memory cost in KiB (default 32 MiB).
        #[arg(long, default_value_t = KdfParams::DEFAULT.m_cost_kib)]
        kdf_memory_kib: u32,
        /// Argon2id iterations.
        #[arg(long, default_value_t = KdfParams::DEFAULT.t_cost)]
        kdf_iterations: u32,
    },
    /// Back up files and directories.
    Backup {
        /// Paths to back up.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name to record (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Leave out entries matching this pattern (repeatable).
        #[arg(long = "exclude", short = 'e')]
        excludes: Vec<String>,
        /// Read exclude patterns from this file (repeatable).
        #[arg(long = "exclude-file")]
        exclude_files: Vec<PathBuf>,
        /// Stay on the filesystem of each source path.
        #[arg(long, short = 'x')]
        one_file_system: bool,
        /// Leave out the contents of cache directories (marked by a CACHEDIR.TAG file, as
        /// holdfast's own cache is); the directory and the tag are kept.
        #[arg(long)]
        exclude_caches: bool,
        /// Compare with this snapshot instead of the latest one for the same host and paths.
        #[arg(long)]
        parent: Option<String>,
        /// Read every file, even unchanged ones.
        #[arg(long)]
        force: bool,
    },
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        filter: Filter,
    },
    /// List the entries of a snapshot.
    Ls {
        /// Snapshot ID, unique prefix or "latest".
        snapshot: String,
        /// Only below this path.
        path: Option<PathBuf>,
        /// Long listing: mode, owner, size, time.
        #[arg(short, long)]
        long: bool,
        #[command(flatten)]
        filter: Filter,
    },
    /// Restore a snapshot into a directory.
    Restore {
        /// SNAPSHOT or SNAPSHOT:/path/inside.
        snapshot: String,
        /// Directory to restore into (the snapshot's absolute paths are recreated in it).
        #[arg(long, short = 't')]
        target: PathBuf,
        /// Restore only entries matching this pattern (repeatable).
        #[arg(long = "include", short = 'i')]
        includes: Vec<String>,
        /// Leave out entries matching this pattern (repeatable).
        #[arg(long = "exclude", short = 'e')]
        excludes: Vec<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Write one file of a snapshot to standard output.
    Dump {
        /// Snapshot ID, unique prefix or "latest".
        snapshot: String,
        /// Absolute path of the file inside the snapshot.
        path: PathBuf,
        #[command(flatten)]
        filter: Filter,
    },
    /// Show a repository object, decrypted, as JSON (for debugging).
    Cat {
        /// config, key, index, snapshot, tree or pack.
        kind: String,
        /// Object ID (not needed for config).
        id: Option<String>,
    },
    /// Manage the passwords (key files) of the repository.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Repository statistics.
    Stats,
    /// Delete data no snapshot needs. Safe beside running backups: packs are first marked,
    /// and deleted by a later prune after the safety margin.
    Prune(PruneArgs),
    /// Repair a damaged repository: `repair index`, then `repair snapshots`.
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Remove snapshots by a retention policy (or by ID); `prune` then frees their data.
    Forget(Box<ForgetArgs>),
    /// Verify the repository: its structure always, all or part of its data on request.
    Check {
        /// Also read every pack in full and verify every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read only part of the packs: n/m (runs 1/m … m/m together read everything) or
        /// p% (about p percent, the same packs every time).
        #[arg(long, value_name = "n/m|p%")]
        read_data_subset: Option<String>,
    },
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// List key files.
    List,
    /// Add a password.
    Add {
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key file by ID or unique prefix.
    Remove {
        /// Key ID.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd {
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

/// Options of `prune` (also used by `forget --prune`).
#[derive(Debug, Clone, ClapArgs)]
pub struct PruneArgs {
    /// Show what would be marked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Minimum time between marking a pack unused and deleting it (e.g. 2h, 30m, 0s).
    /// Backups that run longer than this beside a prune are still safe (their session
    /// holds the deletion back); 0s deletes on the next run without waiting.
    #[arg(long, default_value = "2h")]
    pub safety_margin: String,
    /// Repack partly used packs until unused space is at most this share of the
    /// repository (percent).
    #[arg(long, default_value_t = 10.0)]
    pub max_unused: f64,
}

/// `repair` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepairWhat {
    /// Rebuild the index from the headers of all packs (after lost or damaged index files).
    Index {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rewrite snapshots that reference missing data, dropping what is lost; the new
    /// snapshots are tagged `repaired`. Run `repair index` first.
    Snapshots {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Options of `forget`. Counts take a number or `unlimited`; durations look like
/// `2y5m7d3h` and count back from the newest snapshot of each group.
#[derive(Debug, Clone, ClapArgs)]
pub struct ForgetArgs {
    /// Forget exactly these snapshots (ID, unique prefix or "latest") instead of applying
    /// a policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_last: Option<String>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_hourly: Option<String>,
    /// Keep the newest snapshot of each of the N most recent days (local time of the
    /// backup host) that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_daily: Option<String>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_weekly: Option<String>,
    /// Keep the newest snapshot of each of the N most recent months that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_monthly: Option<String>,
    /// Keep the newest snapshot of each of the N most recent years that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_yearly: Option<String>,
    /// Keep every snapshot made within this duration of the newest one (e.g. 7d, 1y6m).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within: Option<String>,
    /// Keep one snapshot per hour within this duration of the newest.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within_hourly: Option<String>,
    /// Keep one snapshot per day within this duration of the newest.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within_daily: Option<String>,
    /// Keep one snapshot per ISO week within this duration of the newest.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within_weekly: Option<String>,
    /// Keep one snapshot per month within this duration of the newest.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within_monthly: Option<String>,
    /// Keep one snapshot per year within this duration of the newest.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeatable: any).
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Apply the policy to each group of snapshots with the same host, paths and/or tags
    /// ("" for one group of all snapshots).
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    #[command(flatten)]
    pub filter: Filter,
    /// Show what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `prune` afterwards if snapshots were removed.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: see `prune --safety-margin`.
    #[arg(long, default_value = "2h", requires = "prune")]
    pub safety_margin: String,
    /// With --prune: see `prune --max-unused`.
    #[arg(long, default_value_t = 10.0, requires = "prune")]
    pub max_unused: f64,
}
