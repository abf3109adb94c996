//! `holdfast mount`: a repository as a read-only filesystem (FUSE).
//!
//! ```text
//! MOUNTPOINT/snapshots/<time>/...        snapshots/latest -> <time>
//!            ids/<short id>/...
//!            hosts/<host>/<time>/...     hosts/<host>/latest
//!            tags/<tag>/<time>/...       tags/<tag>/latest
//!            pvcs/<namespace>/<pvc>/<time>/...   (the agent's volume snapshots)
//! ```
//!
//! Each snapshot directory holds the snapshot's tree: its recorded paths from `/` down
//! (SPEC.md §9.2). File content is read on demand: a read fetches and decrypts only the
//! blobs its range covers (an offset table per open file), and keeps decoded blobs and
//! trees in bounded LRU caches. Requests are served by several threads; the kernel may
//! cache attributes, listings and pages for a long time, since snapshots never change.
//! The snapshot list is read again at most every refresh interval, when a virtual
//! directory is listed, or on [`Control::refresh`] (SIGHUP in the command).
//!
//! Mounting goes through `fusermount3` (fuser without libfuse), so only the fuse3
//! package is needed at run time.

mod cache;
mod fs;
pub mod inodes;
pub mod layout;
pub mod names;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_repo::repository::{Repository, SnapshotFilter};

pub use fs::CacheSizes;

/// Errors of mounting and serving.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Reading the snapshot list or the index failed.
    #[error(transparent)]
    Repo(#[from] holdfast_repo::Error),
    /// The mount point is not a directory.
    #[error("cannot mount at {path}: {detail}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The kernel or fusermount3 refused the mount.
    #[error("cannot mount at {path}: {source} (is fuse3 installed, /dev/fuse present and the mount point not in use?)")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving requests failed.
    #[error("the filesystem at {path} stopped with an error: {source}")]
    Serve {
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let users other than the one mounting see the files (`allow_other`; needs
    /// `user_allow_other` in /etc/fuse.conf unless root).
    pub allow_other: bool,
    /// Which snapshots to show.
    pub filter: SnapshotFilter,
    /// How old the snapshot list may get before a listing of a virtual directory reads it
    /// again.
    pub refresh_interval: Duration,
    /// Threads serving requests.
    pub threads: usize,
    /// Cache sizes.
    pub caches: CacheSizes,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            filter: SnapshotFilter::default(),
            refresh_interval: Duration::from_secs(30),
            threads: std::thread::available_parallelism()
                .map_or(4, |n| n.get() * 2)
                .clamp(4, 16),
            caches: CacheSizes::default(),
        }
    }
}

/// A mounted filesystem, not yet serving: [`Mount::run`] serves until it is unmounted.
#[derive(Debug)]
pub struct Mount {
    session: fuser::Session<fs::HoldfastFs>,
    control: Control,
}

/// Controls a mount from another thread (a signal handler's).
#[derive(Debug, Clone)]
pub struct Control {
    shared: Arc<fs::Shared>,
    unmounter: Arc<Mutex<fuser::SessionUnmounter>>,
    path: PathBuf,
}

impl Control {
    /// Reads the snapshot list again now.
    pub fn refresh(&self) {
        self.shared.refresh();
    }

    /// Unmounts; [`Mount::run`] then returns. Fails while the mount is busy (a process
    /// has its working directory or a file open in it).
    pub fn unmount(&self) -> Result<(), MountError> {
        self.unmounter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unmount()
            .map_err(|source| MountError::Serve {
                path: self.path.clone(),
                source,
            })
    }

    /// How many snapshots the mount shows.
    pub fn snapshot_count(&self) -> usize {
        self.shared.snapshot_count()
    }
}

/// Reads the snapshot list and the index, and mounts the repository at `mountpoint`
/// (read-only).
pub fn mount(
    repo: Repository,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mount, MountError> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::MountPoint {
                path: mountpoint.to_path_buf(),
                detail: "it is not a directory".into(),
            })
        }
        Err(e) => {
            return Err(MountError::MountPoint {
                path: mountpoint.to_path_buf(),
                detail: e.to_string(),
            })
        }
    }
    let shared = Arc::new(fs::Shared::new(
        repo,
        opts.filter.clone(),
        opts.refresh_interval,
        opts.caches,
    )?);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("holdfast".into()),
        fuser::MountOption::Subtype("holdfast".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let fs = fs::HoldfastFs {
        shared: shared.clone(),
    };
    let mut session =
        fuser::Session::new(fs, mountpoint, &config).map_err(|source| MountError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    Ok(Mount {
        session,
        control: Control {
            shared,
            unmounter,
            path: mountpoint.to_path_buf(),
        },
    })
}

impl Mount {
    /// A handle to refresh or unmount from another thread.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Serves requests until the filesystem is unmounted (by [`Control::unmount`] or
    /// `fusermount3 -u`).
    pub fn run(self) -> Result<(), MountError> {
        let path = self.control.path.clone();
        self.session
            .run()
            .map_err(|source| MountError::Serve { path, source })
    }
}
