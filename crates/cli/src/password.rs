//! Where the password comes from, in restic's order: `--password-file`,
//! `--password-command`, `HOLDFAST_PASSWORD`, then a prompt on a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// A password, wiped from memory when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&b'\n') || v.last() == Some(&b'\r') {
        v.pop();
    }
    v
}

fn read_file(f: &Path) -> Result<Secret> {
    let v =
        std::fs::read(f).with_context(|| format!("cannot read password file {}", f.display()))?;
    Ok(Zeroizing::new(trim_newline(v)))
}

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
    if let Some(f) = file {
        return read_file(f);
    }
    if let Some(c) = command {
        let out = Command::new("sh")
            .arg("-c")
            .arg(c)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run password command {c:?}"))?;
        if !out.status.success() {
            bail!("password command {c:?} failed ({})", out.status);
        }
        return Ok(Zeroizing::new(trim_newline(out.stdout)));
    }
    if let Ok(p) = std::env::var("HOLDFAST_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
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
        return read_file(f);
    }
    if let Ok(p) = std::env::var("HOLDFAST_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if std::io::stdin().is_terminal() {
        return prompt("new password: ", true);
    }
    bail!("no new password given: use --new-password-file or set HOLDFAST_NEW_PASSWORD")
}
