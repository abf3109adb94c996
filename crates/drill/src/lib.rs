//! Restore drills: restore a snapshot somewhere disposable, verify what came back, and
//! record the outcome in the repository itself.
//!
//! * [`volume`]: restores a snapshot into a scratch directory, re-hashes every restored
//!   file against the blob IDs its tree records, compares the counts with the snapshot's
//!   summary and measures the time to restore (the RTO figure).
//! * [`postgres`]: restores a SQL dump from a snapshot into a PostgreSQL server the drill
//!   starts itself (or a scratch database of an existing server), then runs checks.
//! * [`record`]: every outcome becomes a small snapshot (`/drills/<name>/result.json`,
//!   tags `kind=drill`, `drill=<name>`, `result=pass|fail`), so it survives the machine
//!   that ran the drill and a UI or an alert can read it; [`record::history`] lists them.
//!
//! A drill that *fails* (a check, a mismatch, a dump that does not load) is an outcome,
//! recorded as such; a drill that cannot *run* (the repository cannot be opened, no
//! PostgreSQL to start) is a [`DrillError`], and nothing is recorded.
#![deny(missing_docs)]

pub mod postgres;
pub mod record;
pub mod volume;

use std::path::PathBuf;

pub use record::{CheckOutcome, DrillRecord, DrillResult, SnapshotRef};

/// Why a drill could not run (as opposed to a drill that ran and failed, which is a
/// [`DrillRecord`] with [`DrillResult::Fail`]).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] holdfast_repo::Error),
    /// The engine failed (reading the snapshot, writing the record).
    #[error(transparent)]
    Engine(#[from] holdfast_engine::EngineError),
    /// A local file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`create the scratch directory`).
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program the drill needs failed or could not be started (`initdb`, `pg_ctl`).
    #[error("{tool}: {message}")]
    Tool {
        /// The program.
        tool: String,
        /// What went wrong, with its output.
        message: String,
    },
    /// The request cannot work (a path the snapshot does not hold, a bad name).
    #[error("{0}")]
    Usage(String),
}

/// Result of this crate's calls.
pub type Result<T, E = DrillError> = std::result::Result<T, E>;

/// A scratch directory named `<prefix>...` under `parent` (else the temporary directory),
/// removed when dropped.
pub(crate) fn scratch_dir(
    parent: Option<&std::path::Path>,
    prefix: &str,
) -> Result<tempfile::TempDir, DrillError> {
    let parent = parent.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|source| DrillError::Io {
            what: "create a scratch directory in",
            path: parent,
            source,
        })
}

/// A drill name made safe as a path component and a tag value: letters, digits, `.`, `_`
/// and `-` kept, runs of anything else made one `-`, no leading or trailing `-`.
pub fn safe_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    // "." and ".." are not names a tree can hold.
    if t.is_empty() || t.chars().all(|c| c == '.') {
        "drill".to_string()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("volume /ns/pvc"), "volume-ns-pvc");
        assert_eq!(safe_name("postgres-pg.sql"), "postgres-pg.sql");
        assert_eq!(safe_name("a,b=c"), "a-b-c");
        assert_eq!(safe_name("//"), "drill");
        assert_eq!(safe_name(".."), "drill");
    }
}
