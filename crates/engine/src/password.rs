//! Where a repository password comes from without asking anyone: a file, a command's
//! output, or the `HOLDFAST_PASSWORD` environment variable (restic's order; the command-line
//! tool adds a terminal prompt after these). The Kubernetes agent reads its password from a
//! file mounted from a Secret.
//!
//! Passwords are returned as [`Secret`]s, wiped from memory when dropped. A trailing
//! newline (or CR LF) of a file or a command's output is not part of the password.

use std::path::Path;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::error::{EngineError, Result};

/// A password, wiped from memory when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

/// The environment variable [`from_env`] reads.
pub const ENV_VAR: &str = "HOLDFAST_PASSWORD";

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&b'\n') || v.last() == Some(&b'\r') {
        v.pop();
    }
    v
}

/// The password in file `path`, without its trailing newline.
pub fn from_file(path: &Path) -> Result<Secret> {
    let v = std::fs::read(path).map_err(|e| EngineError::Password {
        what: format!("cannot read password file {}", path.display()),
        source: Some(e),
    })?;
    Ok(Zeroizing::new(trim_newline(v)))
}

/// The output of the shell command `command` (run with `sh -c`, its stderr passed
/// through), without its trailing newline; an error if it cannot run or fails.
pub fn from_command(command: &str) -> Result<Secret> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| EngineError::Password {
            what: format!("cannot run password command {command:?}"),
            source: Some(e),
        })?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(EngineError::Password {
            what: format!("password command {command:?} failed ({})", out.status),
            source: None,
        });
    }
    Ok(Zeroizing::new(trim_newline(stdout.to_vec())))
}

/// The password in `HOLDFAST_PASSWORD`, if it is set (an empty value is an empty
/// password).
pub fn from_env() -> Option<Secret> {
    std::env::var(ENV_VAR)
        .ok()
        .map(|p| Zeroizing::new(p.into_bytes()))
}

/// The first of: the file, the command, `HOLDFAST_PASSWORD`; `None` if none is given (an
/// interactive caller may then ask on a terminal).
pub fn non_interactive(file: Option<&Path>, command: Option<&str>) -> Result<Option<Secret>> {
    if let Some(f) = file {
        return from_file(f).map(Some);
    }
    if let Some(c) = command {
        return from_command(c).map(Some);
    }
    Ok(from_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_command_lose_their_trailing_newline() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, b"s3cret\r\n").unwrap();
        assert_eq!(from_file(&f).unwrap().as_slice(), b"s3cret");
        assert_eq!(from_command("echo hi").unwrap().as_slice(), b"hi");
        assert_eq!(
            non_interactive(Some(&f), Some("echo no"))
                .unwrap()
                .unwrap()
                .as_slice(),
            b"s3cret"
        );
    }

    #[test]
    fn failures_name_the_file_or_command() {
        let e = from_file(Path::new("/nonexistent/pw")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let e = from_command("exit 3").unwrap_err();
        assert!(e.to_string().contains("\"exit 3\" failed"), "{e}");
    }
}
