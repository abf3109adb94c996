//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use holdfast_engine::checker::ReadData;
use holdfast_engine::retention::GroupBy;
use holdfast_repo::keyfile::KdfParams;

use crate::args::{self, duration, Duration, ExtentList, SnapshotPath, TagList};

/// What `holdfast --help` ends with: the exit codes scripts rely on (see `exit.rs`).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   failure (check: the repository has errors; forget: a snapshot could not be removed)
  2   usage error: an unknown option or an invalid value, refused before the repository
      is opened (nothing was done)
  3   backup: the snapshot was saved, but some source entries could not be read;
      restore: restored, but some entries could not be restored (each is named on stderr);
      copy: some snapshots could not be copied, the others were
  10  no repository at that location
  12  wrong password
  13  the storage refused to delete: these credentials may only add files (writer-only);
      run prune and forget with credentials that may delete

Durations (prune --safety-margin, forget --keep-within*): whole numbers with units s, min,
h, d, w, mo (months), y (years), written together: 90min, 2h, 1d12h, 1y6mo. A bare `m` is
refused as ambiguous: write `min` for minutes, `mo` for months.
";

/// holdfast: encrypted, deduplicating backups.
#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXIT_CODES_HELP
)]
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
    /// Try this key file (ID or prefix, see `holdfast key list`) first when opening; key
    /// files labelled with this host's name (`key add --host`) are tried next, then the
    /// rest. Each key tried costs one password derivation (about 0.25 s).
    #[arg(long, env = "HOLDFAST_KEY_HINT", global = true, value_name = "KEY_ID")]
    pub key_hint: Option<String>,
    /// Where S3 repositories keep local copies of index files, snapshots and tree packs
    /// (default $XDG_CACHE_HOME/holdfast or ~/.cache/holdfast). A repository on a local
    /// path uses no cache.
    #[arg(long, env = "HOLDFAST_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use no local cache: read everything from the repository.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Limit uploads to the repository to this many KiB/s (as restic's --limit-upload).
    #[arg(
        long,
        env = "HOLDFAST_LIMIT_UPLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    pub limit_upload: Option<u64>,
    /// Limit downloads from the repository to this many KiB/s.
    #[arg(
        long,
        env = "HOLDFAST_LIMIT_DOWNLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    pub limit_download: Option<u64>,
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

/// The source repository of `copy` (and of `init --copy-chunker-params`): its location and
/// password, given as for -r.
#[derive(Debug, Clone, ClapArgs, Default)]
pub struct FromRepo {
    /// Source repository location (as for -r).
    #[arg(long, env = "HOLDFAST_FROM_REPOSITORY", value_name = "LOCATION")]
    pub from_repo: Option<String>,
    /// Read the source repository's password from this file.
    #[arg(long, env = "HOLDFAST_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the source repository's password
    /// (else HOLDFAST_FROM_PASSWORD, else a prompt on a terminal).
    #[arg(long, env = "HOLDFAST_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    pub from_password_command: Option<String>,
    /// Region of an S3 source repository (as --s3-region).
    #[arg(long, value_name = "REGION")]
    pub from_s3_region: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Target pack size in MiB (1 to 1024).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
        pack_size_mib: u32,
        /// Argon2id memory cost in KiB (8 to 4 GiB; default 32 MiB).
        #[arg(
            long,
            default_value_t = KdfParams::DEFAULT.m_cost_kib,
            value_parser = clap::value_parser!(u32).range(8..=4 * 1024 * 1024)
        )]
        kdf_memory_kib: u32,
        /// Argon2id iterations (1 to 100).
        #[arg(
            long,
            default_value_t = KdfParams::DEFAULT.t_cost,
            value_parser = clap::value_parser!(u32).range(1..=100)
        )]
        kdf_iterations: u32,
        /// Take the chunk sizes, the chunker key and the blob-ID key of --from-repo (the
        /// encryption key stays new): snapshots copied from it later need no ID
        /// translation and deduplicate with what this repository backs up itself.
        #[arg(long, requires = "from_repo")]
        copy_chunker_params: bool,
        #[command(flatten)]
        from: FromRepo,
    },
    /// Copy snapshots from another repository (--from-repo) into this one, re-encrypted
    /// under this repository's keys. Snapshots copied before (by any copy) are skipped,
    /// blobs this repository has are not sent again, and a copy that was interrupted
    /// resumes where it stopped.
    #[command(after_help = "Examples:\n  \
        holdfast -r s3:https://offsite/bucket/repo copy --from-repo /srv/backup\n  \
        holdfast -r /mnt/usb/repo copy --from-repo s3:bucket/repo --host db1 --dry-run\n\n\
        Exits 3 when some snapshots could not be copied (each is named on stderr); the \
        others were copied.")]
    Copy {
        #[command(flatten)]
        from: FromRepo,
        #[command(flatten)]
        filter: Filter,
        /// List the snapshots that would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only these snapshots (IDs, unique prefixes, `latest`); all that pass the
        /// filters if none are given.
        #[arg(value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
    },
    /// Back up files and directories, the content of a block device (--device), standard
    /// input (--stdin) or a command's output (--stdin-from-command).
    #[command(after_help = "Examples:\n  \
        holdfast backup ~/documents /etc\n  \
        pg_dumpall | holdfast backup --stdin --stdin-filename pg.sql\n  \
        holdfast backup --stdin-from-command --stdin-filename pg.sql -- pg_dumpall -U postgres")]
    Backup {
        /// Paths to back up; with --stdin-from-command, the command and its arguments (after
        /// `--`).
        #[arg(required_unless_present_any = ["device", "stdin"])]
        paths: Vec<PathBuf>,
        /// Back up standard input as one file, /STDIN_FILENAME in the snapshot. An input
        /// that breaks off with an error saves no snapshot.
        #[arg(long, conflicts_with_all = ["device", "stdin_from_command", "paths"])]
        stdin: bool,
        /// Run the command given after `--` and back up its standard output as one file. If
        /// it exits non-zero or is killed, no snapshot is saved and holdfast exits 1 naming
        /// its status and its last lines of error output.
        #[arg(long, conflicts_with = "device", requires = "paths")]
        stdin_from_command: bool,
        /// The file name (or relative path) to record standard input or the command's
        /// output under.
        #[arg(long, value_name = "NAME", default_value = "stdin", value_parser = args::stdin_filename)]
        stdin_filename: String,
        /// Back up the content of this block device (or image file) as one regular file,
        /// recorded at its own absolute path or at --device-name. Zeros and holes are
        /// stored as nothing; may be given with PATHS.
        #[arg(long, value_name = "PATH")]
        device: Option<PathBuf>,
        /// Record the --device image as this absolute file path in the snapshot.
        #[arg(long, value_name = "PATH", requires = "device", value_parser = args::absolute_path)]
        device_name: Option<PathBuf>,
        /// With --device and --parent: read only the byte ranges listed in this JSON file
        /// (as `rbd diff --from-snap S --format json` prints them, or
        /// [{"offset":N,"length":N},...]) and take the rest from the image in the --parent
        /// snapshot. Ranges left out are trusted to be unchanged.
        #[arg(long, value_name = "FILE", requires_all = ["device", "parent"], value_parser = args::extents_file)]
        changed_extents: Option<ExtentList>,
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name to record (default: HOLDFAST_HOST, else this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Leave out entries matching this pattern (repeatable).
        #[arg(long = "exclude", short = 'e', value_parser = args::pattern)]
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
    /// Browse the snapshots as a read-only filesystem (FUSE, needs fuse3): snapshots/,
    /// ids/, hosts/, tags/ and pvcs/ under MOUNTPOINT. Runs in the foreground until
    /// unmounted (`fusermount3 -u MOUNTPOINT`, Ctrl-C or SIGTERM); SIGHUP reads the
    /// snapshot list again.
    Mount {
        /// An existing directory to mount on.
        mountpoint: PathBuf,
        /// Let other users see the files (needs user_allow_other in /etc/fuse.conf
        /// unless run as root).
        #[arg(long)]
        allow_other: bool,
        #[command(flatten)]
        filter: Filter,
    },
    /// Restore a snapshot into a directory. Exits 3 when some entries (or their metadata)
    /// could not be restored; each is named on stderr.
    Restore {
        /// SNAPSHOT or SNAPSHOT:/path/inside.
        #[arg(value_parser = args::snapshot_path)]
        snapshot: SnapshotPath,
        /// Directory to restore into (the snapshot's absolute paths are recreated in it).
        #[arg(long, short = 't')]
        target: PathBuf,
        /// Restore only entries matching this pattern (repeatable).
        #[arg(long = "include", short = 'i', value_parser = args::pattern)]
        includes: Vec<String>,
        /// Leave out entries matching this pattern (repeatable).
        #[arg(long = "exclude", short = 'e', value_parser = args::pattern)]
        excludes: Vec<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Write one file of a snapshot to standard output, or onto a device (--onto).
    Dump {
        /// Snapshot ID, unique prefix or "latest".
        snapshot: String,
        /// Absolute path of the file inside the snapshot.
        path: PathBuf,
        /// Write the file in place onto this existing block device (at least as large) or
        /// regular file, instead of standard output. Zero runs are zeroed there (a device
        /// is not known to be empty); a regular file becomes sparse and is cut to size.
        #[arg(long, value_name = "DEVICE")]
        onto: Option<PathBuf>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Show a repository object, decrypted, as JSON (for debugging).
    Cat {
        /// What kind of object.
        kind: ObjectKind,
        /// Object ID or unique prefix (a full ID for tree; not needed for config).
        #[arg(required_if_eq_any([
            ("kind", "key"),
            ("kind", "index"),
            ("kind", "snapshot"),
            ("kind", "tree"),
            ("kind", "pack"),
        ]))]
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
    /// Turn on a repository format feature (`--list` shows them all). Writes a new config
    /// generation; holdfast versions older than the feature's may then refuse the
    /// repository (incompatible features) or refuse to write to it (read-only compatible
    /// ones). Features cannot be turned off. Waits until no backup that started before
    /// the change is still running.
    Migrate(MigrateArgs),
    /// Verify the repository: its structure always, all or part of its data on request.
    /// Exits 1 when it finds an error.
    Check {
        /// Also read every pack in full and verify every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read only part of the packs: n/m (runs 1/m … m/m together read everything) or
        /// p% (about p percent, the same packs every time).
        #[arg(long, value_name = "n/m|p%", value_parser = args::read_data_subset)]
        read_data_subset: Option<ReadData>,
    },
    /// Back up an S3 bucket (or a prefix of it) as a snapshot, or restore a bucket
    /// snapshot into a bucket (see `holdfast bucket backup --help`).
    Bucket {
        #[command(subcommand)]
        action: BucketAction,
    },
    /// Run the Kubernetes node agent (as a DaemonSet): back up the PVCs on this node on
    /// their schedules; `holdfast agent manifests` prints the install manifests.
    Agent(holdfast_agent::args::AgentArgs),
    /// Audit every PVC of the cluster: backed up by holdfast (fresh, stale, never),
    /// declared external (holdfast.io/covered-by), opted out with a reason, or uncovered.
    /// Exits 3 when something is uncovered or stale.
    Coverage(holdfast_agent::args::CoverageArgs),
    /// Back up etcd through its v3 maintenance API: `holdfast etcd backup`.
    Etcd(crate::cmd::etcd::EtcdArgs),
    /// Restore drills: restore a snapshot somewhere disposable, verify it and record the
    /// outcome in the repository (`volume`, `postgres`, `history`).
    Drill(crate::cmd::drill::DrillArgs),
    /// Serve the web UI: browse snapshots, download files and folders (tar), restore,
    /// diff, drills (`holdfast ui --listen ADDR`; a login is needed off loopback).
    Ui(crate::cmd::web::UiArgs),
    /// Work with a restored Kubernetes objects snapshot (`apply-order`).
    Objects {
        /// What to do.
        #[command(subcommand)]
        action: crate::cmd::objects::ObjectsAction,
    },
}

/// `bucket` subcommands. The bucket's credentials: `HOLDFAST_BUCKET_ACCESS_KEY_ID` and
/// `HOLDFAST_BUCKET_SECRET_ACCESS_KEY` when both are set (so that an S3 repository can keep
/// the standard AWS variables), else the standard AWS chain (`AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, web identity, instance metadata).
#[derive(Debug, Subcommand)]
pub enum BucketAction {
    /// Back up the objects of a bucket (below PREFIX) as files of a snapshot recorded at
    /// /buckets/BUCKET[/PREFIX], tagged kind=bucket and bucket=BUCKET. Only objects new or
    /// changed (by ETag, size and time) since the parent snapshot are downloaded. Exits 3
    /// when objects vanished while being backed up (the snapshot is saved without them).
    #[command(after_help = "Credentials: HOLDFAST_BUCKET_ACCESS_KEY_ID and \
        HOLDFAST_BUCKET_SECRET_ACCESS_KEY if set, else the standard AWS chain.\n\n\
        Examples:\n  \
        holdfast bucket backup s3:http://rook-ceph-rgw-store.rook-ceph.svc/photos\n  \
        holdfast bucket backup s3:https://s3.example.com/logs/2024 --tag yearly")]
    Backup {
        /// The bucket: s3:http://HOST:PORT/BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX]
        /// or s3:BUCKET[/PREFIX] (AWS).
        #[arg(value_name = "LOCATION")]
        location: String,
        /// Tag the snapshot (repeatable; kind=bucket and bucket=BUCKET are always added).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name to record (default: HOLDFAST_HOST, else this machine's; the agent sets HOLDFAST_HOST to the cluster's name).
        #[arg(long)]
        host: Option<String>,
        /// Compare with this snapshot instead of the latest one for the same host and
        /// bucket path.
        #[arg(long)]
        parent: Option<String>,
        /// Download every object, even unchanged ones.
        #[arg(long)]
        force: bool,
        /// The bucket's region (default: AWS_REGION or the AWS profile's, else us-east-1).
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
    },
    /// Restore the objects of a bucket snapshot into a bucket (which must exist): each file
    /// below the path becomes the object TARGET_PREFIX/KEY with its recorded content type,
    /// headers and metadata. To restore into a directory, use `holdfast restore`.
    #[command(
        after_help = "Credentials of the target bucket: HOLDFAST_BUCKET_ACCESS_KEY_ID \
        and HOLDFAST_BUCKET_SECRET_ACCESS_KEY if set, else the standard AWS chain.\n\n\
        Examples:\n  \
        holdfast bucket restore latest s3:http://rgw.example:8080/photos-copy\n  \
        holdfast bucket restore 1a2b3c4d:/buckets/photos/2024 s3:http://rgw.example:8080/photos/2024"
    )]
    Restore {
        /// SNAPSHOT or SNAPSHOT:/buckets/BUCKET[/PATH] (default: the bucket path the
        /// snapshot records).
        #[arg(value_parser = args::snapshot_path)]
        snapshot: SnapshotPath,
        /// The target: s3:http://HOST:PORT/BUCKET[/PREFIX] (as for `bucket backup`).
        #[arg(value_name = "TARGET")]
        target: String,
        /// The target bucket's region (as for `bucket backup`).
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
    },
}

/// Kinds of repository objects `cat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// The repository's configuration.
    Config,
    /// A key file (not its secret).
    Key,
    /// An index file.
    Index,
    /// A snapshot.
    Snapshot,
    /// A tree blob, by its ID.
    Tree,
    /// A pack's header.
    Pack,
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// List key files.
    List,
    /// Add a password (for instance one per node, labelled with `--host`).
    Add {
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Label the key with this host name instead of this machine's: a process on that
        /// host (its `HOLDFAST_HOST` or host name) tries it first when opening, so a
        /// repository with a password per node opens with one password derivation.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
    },
    /// Remove key files: one by ID or unique prefix, or every key labelled with a host.
    /// The data is not re-encrypted; see SPEC.md §4.3 on what removal does not revoke.
    Remove {
        /// Key ID or unique prefix.
        #[arg(required_unless_present = "host", conflicts_with = "host")]
        id: Option<String>,
        /// Remove every key file labelled with this host (a node that left the cluster).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
    },
    /// Change the password of the key in use.
    Passwd {
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

/// Options of `migrate`.
#[derive(Debug, Clone, ClapArgs)]
pub struct MigrateArgs {
    /// The feature to turn on (e.g. snapshot-v2).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub feature: Option<String>,
    /// List every feature: on, on (pending), off; its class and the holdfast version
    /// that introduced it.
    #[arg(long)]
    pub list: bool,
    /// Return as soon as the new config is written, even while backups that started
    /// before it still run (the feature is then "pending": see --list).
    #[arg(long, conflicts_with = "list")]
    pub no_wait: bool,
    /// How long to wait for backups that started before the change to end (units s,
    /// min, h, d, w); after it, `migrate` exits 1 with the feature on but still pending.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2h",
        value_parser = duration::exact,
        conflicts_with_all = ["no_wait", "list"]
    )]
    pub timeout: Duration,
}

/// Options of `prune` (also used by `forget --prune`).
#[derive(Debug, Clone, ClapArgs)]
pub struct PruneArgs {
    /// Show what would be marked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Minimum time between marking a pack unused and deleting it: whole numbers with
    /// units s, min, h, d or w (e.g. 2h, 90min, 1d12h, 0s; a bare `m` is refused as
    /// ambiguous, and an empty value is an error, not zero). Backups that run longer than
    /// this beside a prune are still safe (their session holds the deletion back); 0s
    /// deletes on the next run without waiting.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2h",
        value_parser = duration::exact,
        allow_hyphen_values = true
    )]
    pub safety_margin: Duration,
    /// Repack partly used packs until unused space is at most this share of the
    /// repository (percent, 0 to 100).
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0, value_parser = args::percent)]
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

/// Options of `forget`. Counts take a number or `unlimited`. Durations count back from the
/// newest snapshot of each group, in whole hours on its calendar: numbers with units h, d,
/// w, mo (months) and y (years), e.g. 7d, 2w, 1y6mo, 2d12h. restic writes months as `m`
/// (`2y5m7d3h`); holdfast refuses that `m` as ambiguous with minutes: write `2y5mo7d3h`.
/// Exits 1 when a snapshot could not be removed.
#[derive(Debug, Clone, ClapArgs)]
pub struct ForgetArgs {
    /// Forget exactly these snapshots (ID, unique prefix or "latest") instead of applying
    /// a policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent days (local time of the
    /// backup host) that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent months that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent years that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = args::count)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot made within this duration of the newest one (e.g. 7d, 1y6mo).
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within: Option<Duration>,
    /// Keep one snapshot per hour within this duration of the newest.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within_hourly: Option<Duration>,
    /// Keep one snapshot per day within this duration of the newest.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within_daily: Option<Duration>,
    /// Keep one snapshot per ISO week within this duration of the newest.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within_weekly: Option<Duration>,
    /// Keep one snapshot per month within this duration of the newest.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within_monthly: Option<Duration>,
    /// Keep one snapshot per year within this duration of the newest.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        value_parser = duration::retention
    )]
    pub keep_within_yearly: Option<Duration>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeatable: any).
    #[arg(long = "keep-tag", value_name = "TAGS", value_parser = args::tag_list)]
    pub keep_tags: Vec<TagList>,
    /// Apply the policy to each group of snapshots with the same host, paths and/or tags
    /// ("" for one group of all snapshots).
    #[arg(long, default_value = "host,paths", value_parser = args::group_by)]
    pub group_by: GroupBy,
    #[command(flatten)]
    pub filter: Filter,
    /// Show what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `prune` afterwards if snapshots were removed.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: see `prune --safety-margin`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2h",
        requires = "prune",
        value_parser = duration::exact,
        allow_hyphen_values = true
    )]
    pub safety_margin: Duration,
    /// With --prune: see `prune --max-unused`.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 10.0,
        requires = "prune",
        value_parser = args::percent
    )]
    pub max_unused: f64,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Args, Command};

    /// clap's own consistency checks of the definitions (names, groups, requirements).
    #[test]
    fn definition_is_consistent() {
        Args::command().debug_assert();
    }

    /// Defaults go through the value parsers too: prune's margin is 2h, forget's grouping
    /// host and paths.
    #[test]
    fn defaults_parse() {
        let a = Args::try_parse_from(["holdfast", "prune"]).unwrap();
        let Command::Prune(p) = a.command else {
            panic!("not prune")
        };
        assert_eq!(p.safety_margin.exact_nanos(), Some(7200 * 1_000_000_000));
        assert_eq!(p.max_unused, 10.0);
        let a = Args::try_parse_from(["holdfast", "forget", "--keep-within", "1y6mo"]).unwrap();
        let Command::Forget(f) = a.command else {
            panic!("not forget")
        };
        assert!(f.group_by.host && f.group_by.paths && !f.group_by.tags);
        assert_eq!(f.keep_within.unwrap().to_string(), "1y6mo");
    }

    /// Values that are not understood are usage errors (exit code 2) naming the option.
    #[test]
    fn bad_values_are_usage_errors() {
        for (args, option) in [
            (&["prune", "--safety-margin", ""][..], "--safety-margin"),
            (&["prune", "--safety-margin", "30m"][..], "--safety-margin"),
            (&["prune", "--max-unused", "101"][..], "--max-unused"),
            (&["forget", "--keep-within", "2y5m"][..], "--keep-within"),
            (&["forget", "--keep-last", "x"][..], "--keep-last"),
            (
                &["check", "--read-data-subset", "0/5"][..],
                "--read-data-subset",
            ),
            (&["init", "--pack-size-mib", "0"][..], "--pack-size-mib"),
            (&["restore", "latest:rel", "-t", "/tmp/x"][..], "SNAPSHOT"),
        ] {
            let e = Args::try_parse_from(std::iter::once("holdfast").chain(args.iter().copied()))
                .expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(option), "{args:?}: {e}");
        }
    }
}
