//! The S3 backend's error type.
//!
//! Errors of the backend's own API ([`crate::S3Location::parse`],
//! [`crate::S3Options::from_env`], [`crate::S3Backend::new`]) are [`S3Error`]s. Errors of
//! the [`holdfast_repo::backend::Backend`] methods are repository errors
//! ([`holdfast_repo::Error::Io`]) whose I/O error wraps an [`S3Error`]; [`S3Error::of`] finds
//! it, so callers can tell a missing bucket, refused credentials or an unreachable endpoint
//! from other failures.

/// What went wrong with an S3 repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// Not a valid `s3:` location.
    #[error(
        "invalid S3 location {location:?}: {why} (expected s3:http://HOST:PORT/BUCKET/PREFIX, \
         s3:https://HOST/BUCKET/PREFIX or s3:BUCKET/PREFIX)"
    )]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `HOLDFAST_S3_*` variable with a value that is not a number of the right kind.
    #[error("{var}={value:?}: expected {expected}")]
    InvalidSetting {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// [`crate::S3Options`] that do not work together.
    #[error("invalid S3 options: {0}")]
    InvalidOptions(&'static str),
    /// The client's runtime could not be started.
    #[error("cannot start the S3 client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No credentials: none in the environment, the AWS config and credentials files, and
    /// none from the container or instance metadata.
    #[error("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")]
    NoCredentials,
    /// A configured credentials source (profile, SSO, credential process, web identity...)
    /// failed.
    #[error("cannot load S3 credentials: {0}")]
    CredentialsUnavailable(String),
    /// The server does not accept the credentials: an unknown access key or a signature
    /// made with the wrong secret.
    #[error("the S3 server refused the credentials ({code}): check {check}")]
    CredentialsRefused {
        /// The server's error code: `SignatureDoesNotMatch`, `InvalidAccessKeyId`, ...
        code: String,
        /// The variable to check.
        check: &'static str,
    },
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist (run `holdfast init` to create it)")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
    },
    /// No connection to the endpoint (refused, no route, unknown host, timed out).
    #[error("cannot reach the S3 endpoint {endpoint}: {reason} ({attempts} attempts)")]
    Unreachable {
        /// The endpoint (`http://HOST:PORT`, or AWS's).
        endpoint: String,
        /// Why: `connection refused`, ...
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Any other failed request.
    #[error("{message}")]
    Request {
        /// The HTTP status, if there was a response.
        status: Option<u16>,
        /// The server's error code, if it sent one.
        code: Option<String>,
        /// What happened, with the status and code.
        message: String,
    },
}

impl S3Error {
    /// The S3 error inside a repository error (the source of an [`holdfast_repo::Error::Io`]
    /// from an [`crate::S3Backend`]), if there is one.
    pub fn of(e: &holdfast_repo::Error) -> Option<&S3Error> {
        match e {
            holdfast_repo::Error::Io { source, .. } => source.get_ref()?.downcast_ref(),
            _ => None,
        }
    }

    /// As an I/O error of the right kind: `NotFound` for a missing bucket (which the
    /// repository reports as "no repository"), `PermissionDenied` for refused or missing
    /// credentials, `InvalidInput` for bad settings, `Other` for the rest.
    pub fn into_io(self) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match &self {
            S3Error::NoSuchBucket { .. } => ErrorKind::NotFound,
            S3Error::NoCredentials
            | S3Error::CredentialsUnavailable(_)
            | S3Error::CredentialsRefused { .. } => ErrorKind::PermissionDenied,
            S3Error::InvalidLocation { .. }
            | S3Error::InvalidSetting { .. }
            | S3Error::InvalidOptions(_) => ErrorKind::InvalidInput,
            S3Error::Runtime(e) => e.kind(),
            S3Error::Unreachable { .. } | S3Error::Request { .. } => ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}
