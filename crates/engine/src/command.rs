//! A command whose standard output is backed up (`holdfast backup --stdin-from-command`):
//! its output is read as a stream, and the stream fails at its end unless the command
//! exited with status 0, so a dump that fails half-way never becomes a snapshot.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How many of the command's last error-output lines a failure message quotes.
pub const STDERR_TAIL_LINES: usize = 10;
/// At most this many bytes of one error-output line are kept.
const STDERR_LINE_MAX: usize = 400;

/// The last lines of a stream, at most `STDERR_TAIL_LINES` of at most `STDERR_LINE_MAX`
/// bytes each: what a failure message quotes, in bounded memory.
#[derive(Debug, Default, Clone)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Keeps `line` (without its line end), dropping the oldest beyond the limit.
    pub fn push(&self, line: &[u8]) {
        let line = &line[..line.len().min(STDERR_LINE_MAX)];
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        let mut q = self.0.lock().expect("tail lock");
        if q.len() == STDERR_TAIL_LINES {
            q.pop_front();
        }
        q.push_back(text);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("tail lock").iter().cloned().collect()
    }

    /// The lines kept as an indented block for a message, or a note that there were none.
    pub fn quoted(&self) -> String {
        let lines = self.lines();
        if lines.iter().all(|l| l.is_empty()) {
            "it wrote nothing to its error output".into()
        } else {
            format!("its last error output:\n  {}", lines.join("\n  "))
        }
    }
}

/// Copies `from` line by line to `echo` (if any), keeping the tail in `tail`.
pub fn collect_lines(from: impl Read, tail: &Tail, mut echo: Option<&mut dyn Write>) {
    let mut r = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Some(w) = echo.as_deref_mut() {
                    let _ = w.write_all(&line);
                }
                let end = line.len() - usize::from(line.ends_with(b"\n"));
                tail.push(&line[..end]);
            }
        }
    }
}

/// Describes an exit status for a message: `exited with status 2`, `was killed by signal 9
/// (SIGKILL)`.
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default();
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended with {status}"),
    }
}

/// A running command's standard output. Reading returns its bytes; at their end the
/// command is waited for, and the read fails (a [`std::io::ErrorKind::Other`] error whose
/// message names the command, its status and its last error output) unless it exited with
/// status 0. Dropped before the end, the command is killed.
pub struct CommandOutput {
    shown: String,
    child: Child,
    stdout: ChildStdout,
    tail: Tail,
    stderr_thread: Option<JoinHandle<()>>,
    done: bool,
}

impl CommandOutput {
    /// Starts `argv[0]` with the other arguments, standard input closed; its error output
    /// goes on to this process's (so the user sees it) and its tail is kept for messages.
    pub fn spawn(argv: &[String]) -> std::io::Result<CommandOutput> {
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no command given: put it after `--`",
            ));
        };
        let shown = shell_words(argv);
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot start the command `{shown}`: {e}"))
            })?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let tail = Tail::default();
        let t = tail.clone();
        let stderr_thread = std::thread::Builder::new()
            .name("command-stderr".into())
            .spawn(move || collect_lines(stderr, &t, Some(&mut std::io::stderr())))?;
        Ok(CommandOutput {
            shown,
            child,
            stdout,
            tail,
            stderr_thread: Some(stderr_thread),
            done: false,
        })
    }

    /// The command as shown in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.done = true;
        let status = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if status.success() {
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "the command `{}` {}; {}",
            self.shown,
            describe_status(&status),
            self.tail.quoted()
        )))
    }
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command line for messages, quoting words with spaces or quotes.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandOutput {
        CommandOutput::spawn(&["sh".into(), "-c".into(), script.into()]).unwrap()
    }

    #[test]
    fn success_reads_everything() {
        let mut out = Vec::new();
        sh("printf 'hello\\n'; printf world")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello\nworld");
    }

    #[test]
    fn failure_names_status_and_error_tail() {
        let mut c = sh("echo partial; for i in $(seq 1 30); do echo line$i >&2; done; exit 3");
        let mut out = Vec::new();
        let err = c.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"partial\n");
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(err.contains("line30") && err.contains("line21"), "{err}");
        assert!(!err.contains("line20\n"), "only the last lines: {err}");
    }

    #[test]
    fn a_killed_command_is_a_failure() {
        let mut c = sh("echo x; kill -9 $$");
        let err = c.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("killed by signal 9 (SIGKILL)"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = CommandOutput::spawn(&["/nonexistent/pg_dumpall".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/pg_dumpall"), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_words(&["pg_dumpall".into(), "-c".into(), "a b".into()]),
            "pg_dumpall -c 'a b'"
        );
    }
}
