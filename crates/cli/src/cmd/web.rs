//! `holdfast ui`: the web UI (crate `holdfast-ui`) over the `-r` repository. (This module
//! is `web`, not `ui`: `crate::ui` is the terminal output helpers.)

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use holdfast_ui::{AuthConfig, Credentials, UiError, UiState};

use super::open;
use crate::cli::Args;
use crate::exit;

/// `holdfast ui` options.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Login files hold lines `read:SECRET` (browse, download, diff) and \
    `restore:SECRET` (also restore), or one line that is the secret itself (role restore). \
    The login form takes any of them; scripts may send `Authorization: Bearer SECRET`.\n\n\
    Without a login the UI serves only on a loopback address (127.0.0.0/8, ::1), where \
    whoever can connect could open the repository anyway; everyone then has role restore.\n\n\
    Examples:\n  holdfast ui\n  holdfast ui --listen 0.0.0.0:9470 --login-password-file /etc/holdfast/ui-login"
)]
pub struct UiArgs {
    /// Address to listen on, HOST:PORT (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9470", value_name = "ADDR")]
    pub listen: String,
    /// Login secrets (passwords) from this file: `role:SECRET` lines or one secret.
    #[arg(long, env = "HOLDFAST_UI_PASSWORD_FILE", value_name = "FILE")]
    pub login_password_file: Option<PathBuf>,
    /// Login tokens from this file (same format; a mounted Secret, for example).
    #[arg(long, env = "HOLDFAST_UI_TOKEN_FILE", value_name = "FILE")]
    pub login_token_file: Option<PathBuf>,
    /// Serve under this path (`/holdfast`), for a reverse proxy that forwards a prefix.
    #[arg(long, default_value = "", value_name = "PATH")]
    pub base_path: String,
    /// Mark the session cookie Secure (the UI is reached over HTTPS through a proxy).
    #[arg(long)]
    pub secure_cookie: bool,
}

/// The login the options give: the secrets of both files, or none.
fn auth(a: &UiArgs) -> Result<AuthConfig, UiError> {
    let mut creds = Credentials::default();
    for f in [&a.login_password_file, &a.login_token_file]
        .into_iter()
        .flatten()
    {
        creds.extend(Credentials::from_file(f)?);
    }
    Ok(if creds.is_empty() {
        AuthConfig::Open
    } else {
        AuthConfig::Login(creds)
    })
}

fn listen_addr(s: &str) -> Result<SocketAddr, UiError> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            UiError::Usage(format!(
                "--listen {s:?}: give HOST:PORT, e.g. 127.0.0.1:9470 or 0.0.0.0:9470"
            ))
        })
}

pub fn run(args: &Args, a: &UiArgs) -> Result<i32> {
    // Usage errors first: nothing is opened for a command that cannot run.
    let auth = auth(a)?;
    let addr = listen_addr(&a.listen)?;
    holdfast_ui::check_listen(&addr, &auth)?;
    let login = matches!(auth, AuthConfig::Login(_));
    let repo = Arc::new(open(args)?);
    let location = repo.backend().location();
    let state = UiState::new(repo, auth)
        .with_base_path(a.base_path.as_str())
        .with_secure_cookie(a.secure_cookie);
    let base = state_base(&a.base_path);
    let router = if base.is_empty() {
        holdfast_ui::router(state)
    } else {
        axum_nest(&base, holdfast_ui::router(state))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| UiError::Serve {
                addr: addr.to_string(),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| UiError::Serve {
            addr: addr.to_string(),
            source,
        })?;
        let url = format!("http://{bound}{base}/");
        if args.json {
            println!(
                "{}",
                serde_json::json!({"listen": bound.to_string(), "url": url, "login": login})
            );
        } else {
            println!(
                "holdfast ui: serving {location} on {url} ({})",
                if login {
                    "login required"
                } else {
                    "no login: loopback only"
                }
            );
        }
        let _ = std::io::stdout().flush();
        holdfast_ui::serve(listener, router).await
    })?;
    Ok(exit::OK)
}

/// The base path as the UI uses it: `/x`, or empty for the root.
fn state_base(b: &str) -> String {
    let t = b.trim_end_matches('/');
    if t.is_empty() {
        String::new()
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        format!("/{t}")
    }
}

fn axum_nest(base: &str, r: axum::Router) -> axum::Router {
    axum::Router::new().nest(base, r)
}
