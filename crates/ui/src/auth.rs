//! Logins, sessions and CSRF protection.
//!
//! * **Secrets** come from files (a mounted Secret): lines `read:SECRET` or
//!   `restore:SECRET`, or one line that is the secret itself (role restore). The login form
//!   takes a password or a token alike; a client without a browser may send
//!   `Authorization: Bearer SECRET` instead. Secrets are compared as BLAKE3 hashes in
//!   constant time, so neither their content nor their length leaks through timing.
//! * **Sessions**: a random 256-bit ID in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//!   when configured or forwarded over HTTPS), looked up in a server-side table; they
//!   expire after [`SESSION_TTL`]. No credential is ever put in a page or a URL.
//! * **CSRF**: every POST carries the session's own random token in a hidden `csrf` field,
//!   checked here before any handler runs; and a POST whose `Origin` (else `Referer`)
//!   names another host than the request's `Host` is refused.
//! * **Failed logins** are slowed: login attempts are handled one at a time and a wrong
//!   secret holds the line for [`FAILED_LOGIN_DELAY`].
//! * **No login** ([`AuthConfig::Open`], loopback only, see [`crate::check_listen`]): every
//!   visitor gets a session with role restore, so the CSRF rules still apply (a web page
//!   in the same browser must not be able to start a restore).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use subtle::ConstantTimeEq;

use crate::layout;
use crate::paths::Params;
use crate::{App, UiError};

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a wrong secret holds up the next login attempt.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(1000);
/// Sessions kept at most (the oldest go first); bounds the table under a flood of
/// cookie-less requests to an open UI.
const MAX_SESSIONS: usize = 10_000;
/// Largest POST body read (forms are small).
const MAX_FORM: usize = 64 * 1024;
/// The session cookie's name.
const COOKIE: &str = "holdfast_session";

/// What a logged-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Browse, download and diff.
    Read,
    /// Also restore.
    Restore,
}

impl Role {
    /// `read` or `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Restore => "restore",
        }
    }
}

/// Login secrets with their roles.
#[derive(Clone, Default)]
pub struct Credentials {
    /// (role, BLAKE3 hash of the secret).
    entries: Vec<(Role, [u8; 32])>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} secrets)", self.entries.len())
    }
}

impl Credentials {
    /// Parses a login file's text: `read:SECRET` and `restore:SECRET` lines (blank lines
    /// and lines starting with `#` skipped), or a single line that is the secret itself,
    /// which gets role restore. A trailing newline is not part of a secret.
    pub fn parse(text: &str, what: &str) -> Result<Credentials, UiError> {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        let mut c = Credentials::default();
        let role_line = |l: &str| -> Option<(Role, String)> {
            let (r, s) = l.split_once(':')?;
            let role = match r.trim() {
                "read" => Role::Read,
                "restore" => Role::Restore,
                _ => return None,
            };
            Some((role, s.to_string()))
        };
        match lines.as_slice() {
            [] => {
                return Err(UiError::Usage(format!(
                    "the login file {what} holds no secret"
                )))
            }
            [one] if role_line(one).is_none() => c.add(Role::Restore, one),
            many => {
                for (i, l) in many.iter().enumerate() {
                    let Some((role, secret)) = role_line(l) else {
                        return Err(UiError::Usage(format!(
                            "the login file {what}, line {}: expected `read:SECRET` or \
                             `restore:SECRET` (a file of one line may hold just the secret)",
                            i + 1
                        )));
                    };
                    if secret.is_empty() {
                        return Err(UiError::Usage(format!(
                            "the login file {what}, line {}: the secret is empty",
                            i + 1
                        )));
                    }
                    c.add(role, &secret);
                }
            }
        }
        Ok(c)
    }

    /// Reads and parses a login file ([`Credentials::parse`]).
    pub fn from_file(path: &Path) -> Result<Credentials, UiError> {
        let text = std::fs::read_to_string(path).map_err(|source| UiError::LoginFile {
            path: path.to_path_buf(),
            source,
        })?;
        Credentials::parse(&text, &path.display().to_string())
    }

    /// Adds a secret with its role.
    pub fn add(&mut self, role: Role, secret: &str) {
        self.entries
            .push((role, *blake3::hash(secret.as_bytes()).as_bytes()));
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: Credentials) {
        self.entries.extend(other.entries);
    }

    /// The highest role whose secret is `given`, comparing with every entry in constant
    /// time.
    pub fn role_of(&self, given: &str) -> Option<Role> {
        let h = blake3::hash(given.as_bytes());
        let mut found = None;
        for (role, want) in &self.entries {
            if bool::from(want.ct_eq(h.as_bytes())) {
                found = found.max(Some(*role));
            }
        }
        found
    }

    /// Whether there is no secret.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Who may use the UI.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No login: everyone may browse and restore (loopback addresses only).
    Open,
    /// A login with one of these secrets.
    Login(Credentials),
}

/// One session.
#[derive(Debug, Clone)]
struct SessionData {
    role: Role,
    csrf: String,
    expires: Instant,
}

/// The server-side session table.
#[derive(Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, SessionData>>,
    /// Login attempts, one at a time (a failed one sleeps while holding it).
    login_gate: tokio::sync::Mutex<()>,
}

impl Sessions {
    /// A new session; returns its ID.
    fn create(&self, role: Role) -> String {
        let id = random_hex();
        let mut t = self.table.lock().expect("session table");
        let now = Instant::now();
        t.retain(|_, s| s.expires > now);
        while t.len() >= MAX_SESSIONS {
            let oldest = t
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => t.remove(&k),
                None => break,
            };
        }
        t.insert(
            id.clone(),
            SessionData {
                role,
                csrf: random_hex(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    fn get(&self, id: &str) -> Option<SessionData> {
        let mut t = self.table.lock().expect("session table");
        match t.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                t.remove(id);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.table.lock().expect("session table").remove(id);
    }
}

/// 256 random bits as hex.
fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the system's random source");
    hex::encode(b)
}

/// The caller of a request, as handlers see it (a request extension set by [`guard`]).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// What they may do.
    pub role: Role,
    /// The token POST forms must carry (empty for bearer-token callers, who need none).
    pub csrf: String,
    /// Whether there is a login to log out of.
    pub can_logout: bool,
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(app: &App, headers: &HeaderMap, id: &str, max_age: u64) -> String {
    let https = app.state.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let path = if app.state.base.is_empty() {
        "/"
    } else {
        &app.state.base
    };
    format!(
        "{COOKIE}={id}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    )
}

/// The host (and port) part of an `Origin` or `Referer` URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Whether a POST comes from a page of this server: its `Origin` (else `Referer`) names
/// the request's `Host`. A request with neither passes this check (old clients; the CSRF
/// token still applies).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (from, host) {
        (None, _) => true,
        (Some("null"), _) => false,
        (Some(f), Some(h)) => url_host(f).is_some_and(|fh| fh.eq_ignore_ascii_case(h)),
        (Some(_), None) => false,
    }
}

fn forbidden(app: &App, why: &str) -> Response {
    let page = layout::bare(
        app,
        "Forbidden",
        html! { p.error { (why) } p { a href=(app.link("/")) { "Back to the start page" } } },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// Paths served without a session.
fn is_public(path: &str) -> bool {
    path == "/login" || path == "/style.css"
}

/// The middleware in front of every route: finds the caller (session cookie, bearer
/// token, or a new session on an open UI), sends others to the login page, and checks
/// every POST's origin and CSRF token.
pub(crate) async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    if req.method() == Method::POST && !same_origin(&headers) {
        return forbidden(
            &app,
            "This form was sent from another site: refused (Origin/Referer check).",
        );
    }
    if is_public(&path) {
        return next.run(req).await;
    }
    let mut new_cookie = None;
    let caller = if let Some(s) = cookie_value(&headers).and_then(|id| app.sessions.get(&id)) {
        Caller {
            role: s.role,
            csrf: s.csrf,
            can_logout: matches!(app.state.auth, AuthConfig::Login(_)),
        }
    } else if let Some(role) = bearer_role(&app, &headers) {
        Caller {
            role,
            csrf: String::new(),
            can_logout: false,
        }
    } else if let AuthConfig::Open = app.state.auth {
        let id = app.sessions.create(Role::Restore);
        let s = app.sessions.get(&id).expect("just created");
        new_cookie = Some(set_cookie(&app, &headers, &id, SESSION_TTL.as_secs()));
        Caller {
            role: s.role,
            csrf: s.csrf,
            can_logout: false,
        }
    } else if req.method() == Method::GET {
        let next_url = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        return Redirect::to(&format!(
            "{}?next={}",
            app.link("/login"),
            crate::paths::encode(format!("{}{}", app.state.base, next_url).as_bytes())
        ))
        .into_response();
    } else {
        return forbidden(&app, "Log in first.");
    };
    let mut req = req;
    if req.method() == Method::POST && !caller.csrf.is_empty() {
        // Read the form to check its token, then hand the same bytes on.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let form = Params::parse(std::str::from_utf8(&bytes).unwrap_or(""));
        let given = form.bytes("csrf").unwrap_or(b"");
        if !bool::from(given.ct_eq(caller.csrf.as_bytes())) {
            return forbidden(
                &app,
                "The form's security token is missing or out of date (CSRF check). Go back, \
                 reload the page and try again.",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(c) = new_cookie {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

fn bearer_role(app: &App, headers: &HeaderMap) -> Option<Role> {
    let AuthConfig::Login(creds) = &app.state.auth else {
        return None;
    };
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ")?;
    creds.role_of(token.trim())
}

/// `GET /login`.
pub(crate) async fn login_page(State(app): State<Arc<App>>, req: Request) -> Response {
    let q = Params::parse(req.uri().query().unwrap_or(""));
    let next = q.text("next").unwrap_or("").to_string();
    login_form(&app, &next, None, StatusCode::OK)
}

fn login_form(app: &App, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    if let AuthConfig::Open = app.state.auth {
        return Redirect::to(&app.link("/")).into_response();
    }
    let page = layout::bare(
        app,
        "Log in",
        html! {
            form.login method="post" action=(app.link("/login")) {
                h2 { "Log in" }
                @if let Some(e) = error { p.error #login-error { (e) } }
                label for="secret" { "Password or token" }
                input #secret type="password" name="secret" autocomplete="current-password" autofocus;
                input type="hidden" name="next" value=(next);
                button #login type="submit" { "Log in" }
            }
        },
    );
    (status, page).into_response()
}

/// `POST /login`: checks the secret (one attempt at a time, a failure slowed), makes a
/// session and sends the browser on to where it wanted to go.
pub(crate) async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = Params::parse(&body);
    let next = form.text("next").unwrap_or("").to_string();
    let AuthConfig::Login(creds) = &app.state.auth else {
        return Redirect::to(&app.link("/")).into_response();
    };
    let secret = form.text("secret").unwrap_or("");
    let gate = app.sessions.login_gate.lock().await;
    let Some(role) = creds.role_of(secret) else {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        drop(gate);
        tracing::warn!("web UI: failed login");
        return login_form(
            &app,
            &next,
            Some("Wrong password or token."),
            StatusCode::UNAUTHORIZED,
        );
    };
    drop(gate);
    let id = app.sessions.create(role);
    // Only a path on this server, under the base: never an open redirect.
    let base = if app.state.base.is_empty() {
        "/"
    } else {
        app.state.base.as_str()
    };
    let to = if next.starts_with(base) && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        app.link("/")
    };
    let mut resp = Redirect::to(&to).into_response();
    if let Ok(v) = set_cookie(&app, &headers, &id, SESSION_TTL.as_secs()).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /logout`: ends the session.
pub(crate) async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers) {
        app.sessions.remove(&id);
    }
    let mut resp = Redirect::to(&app.link("/login")).into_response();
    if let Ok(v) = set_cookie(&app, &headers, "", 0).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_files() {
        let c = Credentials::parse("s3cret:with:colons\n", "f").unwrap();
        assert_eq!(c.role_of("s3cret:with:colons"), Some(Role::Restore));
        assert_eq!(c.role_of("s3cret"), None);
        let c = Credentials::parse("# comment\nread:r1\n\nrestore:w1\n", "f").unwrap();
        assert_eq!(c.role_of("r1"), Some(Role::Read));
        assert_eq!(c.role_of("w1"), Some(Role::Restore));
        assert_eq!(c.role_of(""), None);
        let c = Credentials::parse("read:only\n", "f").unwrap();
        assert_eq!(c.role_of("only"), Some(Role::Read));
        for bad in ["", "\n#x\n", "read:a\nnope\n", "read:a\nrestore:\n"] {
            assert!(
                matches!(Credentials::parse(bad, "f"), Err(UiError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn origins() {
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), v.parse().unwrap());
            }
            m
        };
        assert!(same_origin(&h(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&h(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::REFERER, "http://127.0.0.1:8081/x")
        ])));
        assert!(same_origin(&h(&[
            (header::HOST, "a:1"),
            (header::REFERER, "https://a:1/s/x?p=1")
        ])));
        assert!(!same_origin(&h(&[
            (header::HOST, "a"),
            (header::ORIGIN, "null")
        ])));
        assert!(same_origin(&h(&[(header::HOST, "a")])));
    }
}
