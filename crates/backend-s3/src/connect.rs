//! Failing fast, and readably, when the S3 server cannot be used at all: no credentials, or
//! an endpoint nothing answers at.
//!
//! * **Credentials** are resolved once when the backend is made (unless they were given):
//!   without any, the error says which variables to set, instead of every request failing
//!   after a lookup of EC2 instance metadata. The credentials found serve the first request;
//!   later ones come from the same chain (refreshing them when they expire).
//! * **First contact.** Until the server has answered once, a failure to connect (refused,
//!   no route, unknown host, connect timeout) is retried [`FIRST_CONTACT_ATTEMPTS`] times at
//!   most, not the full [`crate::S3Options::max_attempts`]: a wrong or dead endpoint is
//!   reported within about a second. Once the server has answered, connection failures are
//!   retried as any transient failure (a server restarting during a backup).

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::{ConfigBag, Credentials, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, InterceptorContext,
};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};

use crate::S3Error;

/// Attempts to connect before the server has ever answered.
pub(crate) const FIRST_CONTACT_ATTEMPTS: u32 = 3;

/// Whether the server has answered yet, and how many connection attempts failed before.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    answered: AtomicBool,
    failed_connects: AtomicU32,
}

impl Reach {
    pub(crate) fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }
}

/// Marks the server as reached when any response arrives (an error response too).
#[derive(Debug)]
pub(crate) struct MarkAnswered(pub(crate) Arc<Reach>);

impl Intercept for MarkAnswered {
    fn name(&self) -> &'static str {
        "holdfast::MarkAnswered"
    }

    fn read_before_deserialization(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.answered.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Forbids further retries of connection failures once [`FIRST_CONTACT_ATTEMPTS`] have
/// failed while the server has never answered.
#[derive(Debug)]
pub(crate) struct FirstContact {
    pub(crate) reach: Arc<Reach>,
    pub(crate) limit: u32,
}

impl ClassifyRetry for FirstContact {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        if self.reach.answered() {
            return RetryAction::NoActionIndicated;
        }
        let Some(Err(e)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        match e.as_connector_error() {
            Some(c) if connect_failure(c).is_some() => {
                let failed = self.reach.failed_connects.fetch_add(1, Ordering::Relaxed) + 1;
                if failed >= self.limit {
                    RetryAction::RetryForbidden
                } else {
                    RetryAction::NoActionIndicated
                }
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "holdfast::FirstContact"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Why a connector error means no connection was made, in a few words; `None` for other
/// failures (a connection dropped or reset after it was made, a credentials failure, ...).
pub(crate) fn connect_failure(e: &ConnectorError) -> Option<String> {
    if e.is_timeout() {
        return Some("no connection within the connect timeout".into());
    }
    if !e.is_io() {
        return None;
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            let why = match io.kind() {
                ErrorKind::ConnectionRefused => Some("connection refused"),
                ErrorKind::HostUnreachable => Some("host unreachable"),
                ErrorKind::NetworkUnreachable => Some("network unreachable"),
                ErrorKind::AddrNotAvailable => Some("address not available"),
                ErrorKind::TimedOut => Some("connection timed out"),
                _ => None,
            };
            if let Some(why) = why {
                return Some(why.into());
            }
        }
        let text = err.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Some(format!(
                "cannot resolve the host name ({})",
                last_cause(err)
            ));
        }
        cur = err.source();
    }
    None
}

/// The innermost cause's message.
fn last_cause(e: &(dyn StdError + 'static)) -> String {
    let mut e = e;
    while let Some(s) = e.source() {
        e = s;
    }
    e.to_string()
}

/// An error and its causes, `a: b: c`, each message once (many wrappers repeat their
/// source's). Unlike the SDK's `DisplayErrorContext`, no debug dump.
pub(crate) fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        if !t.is_empty() && !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The credentials error inside an error's causes, if any (a request that failed because
/// no credentials could be had for it).
pub(crate) fn credentials_failure<'a>(
    e: &'a (dyn StdError + 'static),
) -> Option<&'a CredentialsError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

/// Whether an error's causes include an error of EC2 instance metadata (IMDS).
fn from_instance_metadata(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<aws_config::imds::client::error::ImdsError>()
            .is_some()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Resolves credentials from `chain` (the SDK's default chain) once, so that a missing or
/// broken source is one clear error now rather than a failure of every request later.
pub(crate) async fn resolve(chain: &SharedCredentialsProvider) -> Result<Credentials, S3Error> {
    let e = match chain.provide_credentials().await {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    // Instance metadata is the chain's last source: when it is what failed (unreachable, a
    // proxy refusing it, an instance without a role), no other source had anything.
    let none = matches!(e, CredentialsError::CredentialsNotLoaded(_)) || from_instance_metadata(&e);
    if !none {
        return Err(S3Error::CredentialsUnavailable(chain_text(&e)));
    }
    tracing::debug!("no credentials from any source: {}", chain_text(&e));
    match std::env::var("AWS_PROFILE") {
        Ok(p) if !p.is_empty() => Err(S3Error::CredentialsUnavailable(format!(
            "the AWS profile {p:?} (AWS_PROFILE) gives none: check ~/.aws/config and \
             ~/.aws/credentials (or the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE \
             name)"
        ))),
        _ => Err(S3Error::NoCredentials),
    }
}

/// A credentials provider whose first answer is credentials already resolved, and every
/// later one (once they expire) comes from the chain.
#[derive(Debug)]
pub(crate) struct Primed {
    first: Mutex<Option<Credentials>>,
    chain: SharedCredentialsProvider,
}

impl Primed {
    pub(crate) fn new(first: Credentials, chain: SharedCredentialsProvider) -> Primed {
        Primed {
            first: Mutex::new(Some(first)),
            chain,
        }
    }
}

impl ProvideCredentials for Primed {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().map(|mut f| f.take()).unwrap_or(None);
        match first {
            Some(c) => future::ProvideCredentials::ready(Ok(c)),
            None => self.chain.provide_credentials(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_text_shows_each_message_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "outer: {}", self.0)
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain_text(&e), "outer: inner");
    }

    #[test]
    fn refused_connections_are_connect_failures() {
        let refused = ConnectorError::io(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            connect_failure(&refused).as_deref(),
            Some("connection refused")
        );
        let reset = ConnectorError::io(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(connect_failure(&reset), None);
        let other = ConnectorError::other(Box::new(std::io::Error::other("x")), None);
        assert_eq!(connect_failure(&other), None);
    }
}
