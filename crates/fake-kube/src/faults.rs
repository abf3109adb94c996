//! Fault injection (failed answers, an unavailable server, delays) and the request log.

use std::sync::Mutex;
use std::time::Duration;

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// URL path, e.g. `/api/v1/pods`.
    pub path: String,
    /// Raw query string (still percent-encoded), possibly empty.
    pub query: String,
    /// HTTP status code of the answer (200 for a watch that started).
    pub status: u16,
    /// Whether the answer came from an injected fault.
    pub injected: bool,
}

impl RequestRecord {
    /// The decoded value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether this was a watch request (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query_param("watch").as_deref(),
            Some("true") | Some("1")
        )
    }
}

#[derive(Debug)]
struct Rule {
    method: Option<String>,
    path_contains: Option<String>,
    remaining: usize,
    code: u16,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    unavailable: bool,
    delay: Duration,
    log: Vec<RequestRecord>,
}

/// The fault switches of one fake server (`FakeKube::faults()`). All methods take effect for the
/// next request.
///
/// Note: kube's default client (`Config::default_retry`, on by default in kube 5) retries 429,
/// 503 and 504 answers up to 15 times with exponential backoff and honours `Retry-After` (the
/// fake sends `Retry-After: 1` with 429). An agent on the default client therefore never sees a
/// short run of those codes, and [`Faults::set_unavailable`] makes its calls hang for a long
/// while rather than fail; use 500 (not retried) to make a call fail at once, or a client with
/// `default_retry = false`.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    close: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::default(),
            close: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers the next `n` requests (any path) with `code` and a matching `Status` body.
    pub fn fail_next(&self, n: usize, code: u16) {
        self.push(None, None, n, code);
    }

    /// Answers the next `n` requests whose path (with its query, as `/api/v1/pods?watch=true&...`)
    /// contains `path_substring` with `code`; `"watch=true"` fails only watches.
    pub fn fail_matching(&self, path_substring: &str, n: usize, code: u16) {
        self.push(None, Some(path_substring), n, code);
    }

    /// Like [`Faults::fail_matching`], for one HTTP method only (e.g. `"PUT"`).
    pub fn fail_matching_method(&self, method: &str, path_substring: &str, n: usize, code: u16) {
        self.push(Some(method), Some(path_substring), n, code);
    }

    fn push(&self, method: Option<&str>, path: Option<&str>, n: usize, code: u16) {
        self.lock().rules.push(Rule {
            method: method.map(|m| m.to_ascii_uppercase()),
            path_contains: path.map(str::to_string),
            remaining: n,
            code,
        });
    }

    /// While set, every request is answered 503 ServiceUnavailable; setting it also ends every
    /// open watch stream, as an API server going away would.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
        if unavailable {
            self.close_watches();
        }
    }

    /// Ends every open watch stream (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.close.send_modify(|n| *n += 1);
    }

    pub(crate) fn watch_closer(&self) -> tokio::sync::watch::Receiver<u64> {
        self.close.subscribe()
    }

    /// Delays every answer by `d` (zero turns it off).
    pub fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// Removes all failure rules, the unavailable switch and the delay (not the log).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.unavailable = false;
        s.delay = Duration::ZERO;
    }

    /// The requests seen so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    pub(crate) fn current_delay(&self) -> Duration {
        self.lock().delay
    }

    /// The code to fail this request with, if a fault applies (consumes one use of a rule).
    pub(crate) fn take_failure(&self, method: &str, path_and_query: &str) -> Option<u16> {
        let path = path_and_query;
        let mut s = self.lock();
        if s.unavailable {
            return Some(503);
        }
        let rule = s.rules.iter_mut().find(|r| {
            r.remaining > 0
                && r.method.as_deref().is_none_or(|m| m == method)
                && r.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        rule.remaining -= 1;
        let code = rule.code;
        s.rules.retain(|r| r.remaining > 0);
        Some(code)
    }

    pub(crate) fn record(&self, rec: RequestRecord) {
        self.lock().log.push(rec);
    }
}
