//! Exit codes, as scripts and the agent rely on them.

use holdfast_agent::AgentError;
use holdfast_engine::EngineError;
use holdfast_repo::Error;

/// Success.
pub const OK: i32 = 0;
/// Any failure not listed below (`check`: the repository has errors; `forget`: a snapshot
/// could not be removed).
pub const FAILURE: i32 = 1;
/// A usage error: an unknown option or a value that is not understood. clap exits with it
/// while reading the command line, before a repository is opened (see `main.rs`).
pub const USAGE: i32 = 2;
/// Done, but not all of it: `backup` wrote the snapshot but some source entries could not
/// be read; `restore` restored, but some entries (or their metadata) could not be
/// restored. Each is named on stderr.
pub const PARTIAL: i32 = 3;
/// There is no repository at the given location.
pub const NO_REPOSITORY: i32 = 10;
/// The password opens no key file.
pub const WRONG_PASSWORD: i32 = 12;
/// The storage refused to delete: the credentials may add files but not delete them
/// (writer-only, as node agents have); `prune` and `forget` need credentials that may.
pub const DELETE_DENIED: i32 = 13;

/// A command line that asks for something that cannot be done as given (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A [`UsageError`] with this message.
pub fn usage(msg: &str) -> anyhow::Error {
    UsageError(msg.to_string()).into()
}

/// Maps an error chain to its exit code.
pub fn code_for(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if matches!(
            cause.downcast_ref::<holdfast_ui::UiError>(),
            Some(holdfast_ui::UiError::Usage(_))
        ) {
            return USAGE;
        }
        let agent = cause.downcast_ref::<AgentError>();
        if matches!(
            agent,
            Some(AgentError::Usage(_) | AgentError::Config { .. })
        ) {
            return USAGE;
        }
        let repo = cause
            .downcast_ref::<Error>()
            .or_else(|| {
                cause
                    .downcast_ref::<EngineError>()
                    .and_then(EngineError::repo_error)
            })
            .or_else(|| match agent {
                Some(AgentError::Repo(r)) => Some(r),
                Some(AgentError::Engine(e)) => e.repo_error(),
                _ => None,
            });
        match repo {
            Some(Error::RepositoryNotFound { .. }) => return NO_REPOSITORY,
            Some(Error::WrongPassword { .. }) => return WRONG_PASSWORD,
            Some(Error::DeleteDenied { .. }) => return DELETE_DENIED,
            _ => {}
        }
    }
    FAILURE
}
