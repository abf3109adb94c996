//! Where the password comes from, in restic's order: `--password-file`,
//! `--password-command`, `HOLDFAST_PASSWORD` (the engine's non-interactive sources,
//! [`holdfast_engine::password`]), then a prompt on a terminal (here).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
pub use holdfast_engine::password::Secret;
use holdfast_engine::password::{self as sources, from_file};
use zeroize::Zeroizing;

/// Gets the repository password; `confirm` (for `init`) asks twice on a terminal and
/// refuses an empty password from any source.
pub fn get(file: Option<&Path>, command: Option<&str>, confirm: bool) -> Result<Secret> {
    let pw = get_any(file, command, confirm)?;
    if confirm && pw.is_empty() {
        bail!("an empty password is not allowed: it would leave the repository open to anyone who can read the storage");
    }
    Ok(pw)
}

fn get_any(file: Option<&Path>, command: Option<&str>, confirm: bool) -> Result<Secret> {
    if let Some(pw) = sources::non_interactive(file, command)? {
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        return prompt(
            if confirm {
                "enter a password for the new repository: "
            } else {
                "repository password: "
            },
            confirm,
        );
    }
    bail!("no password given: set HOLDFAST_PASSWORD, or use --password-file / --password-command (or run on a terminal to be asked)")
}

fn prompt(text: &str, confirm: bool) -> Result<Secret> {
    let a = Zeroizing::new(
        rpassword::prompt_password(text).context("cannot read the password from the terminal")?,
    );
    if confirm {
        let b = Zeroizing::new(rpassword::prompt_password("repeat the password: ")?);
        if *a != *b {
            bail!("the passwords do not match");
        }
        if a.is_empty() {
            bail!("an empty password is not allowed");
        }
    }
    Ok(Zeroizing::new(a.as_bytes().to_vec()))
}

/// The environment variable that holds the source repository's password (`copy`).
pub const FROM_ENV_VAR: &str = "HOLDFAST_FROM_PASSWORD";

/// Gets the source repository's password (`copy --from-repo`): `--from-password-file`,
/// `--from-password-command`, `HOLDFAST_FROM_PASSWORD`, then a prompt on a terminal.
pub fn get_source(file: Option<&Path>, command: Option<&str>) -> Result<Secret> {
    if let Some(f) = file {
        return Ok(from_file(f)?);
    }
    if let Some(c) = command {
        return Ok(sources::from_command(c)?);
    }
    if let Ok(p) = std::env::var(FROM_ENV_VAR) {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if std::io::stdin().is_terminal() {
        return prompt("source repository password: ", false);
    }
    bail!("no password for the source repository: set HOLDFAST_FROM_PASSWORD, or use --from-password-file / --from-password-command (or run on a terminal to be asked)")
}

/// Gets a new password for `key add` / `key passwd`; an empty one is refused.
pub fn get_new(file: Option<&Path>) -> Result<Secret> {
    let pw = get_new_any(file)?;
    if pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(pw)
}

fn get_new_any(file: Option<&Path>) -> Result<Secret> {
    if let Some(f) = file {
        return Ok(from_file(f)?);
    }
    if let Ok(p) = std::env::var("HOLDFAST_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if std::io::stdin().is_terminal() {
        return prompt("new password: ", true);
    }
    bail!("no new password given: use --new-password-file or set HOLDFAST_NEW_PASSWORD")
}
