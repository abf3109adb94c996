//! The PostgreSQL drill: restore a SQL dump (`pg_dumpall` or `pg_dump` in plain format)
//! from a snapshot into a disposable server, then run checks against it.
//!
//! Where the dump is restored is a [`PgTarget`]: a [`ScratchServer`] the drill starts
//! itself (`initdb` in a temporary directory, a random loopback port, a generated
//! password) or a scratch database on an [`ExistingServer`]. Both are removed when
//! dropped, whatever happened, panics included. Another place (a scratch pod on the
//! cluster) is another implementation of the trait.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Instant;

use holdfast_engine::restorer;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::NodeKind;
use holdfast_repo::Id;
use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::record::{rfc3339, CheckOutcome, DrillRecord, DrillResult, SnapshotRef};
use crate::{DrillError, Result};

/// The most of a program's error output kept for a message.
const MAX_ERROR_TEXT: usize = 2000;

/// The superuser of a scratch server: a name a dump is unlikely to create, so that the
/// dump's `CREATE ROLE` statements (pg_dumpall writes one for every role, its own user's
/// included) do not collide with it.
pub const SCRATCH_SUPERUSER: &str = "holdfast_drill";

/// A comparison operator of an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `=` (or `==`)
    Eq,
    /// `!=` (or `<>`)
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Eq => "=",
            Op::Ne => "!=",
        }
    }
}

/// What a check's query must give.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Only that it runs without an error.
    Succeeds,
    /// At least one row.
    Rows,
    /// The first column of the first row compared with a value: as numbers when both are
    /// numbers, else as text (`=` and `!=` only).
    Compare(Op, String),
}

impl FromStr for Expect {
    type Err = String;

    /// `>= 100`, `= ok`, `!= 0`, `<5`.
    fn from_str(s: &str) -> Result<Expect, String> {
        let s = s.trim();
        let ops = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("==", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("=", Op::Eq),
        ];
        for (text, op) in ops {
            if let Some(rest) = s.strip_prefix(text) {
                let v = rest.trim();
                if v.is_empty() {
                    return Err(format!("{s:?} compares with nothing"));
                }
                if !matches!(op, Op::Eq | Op::Ne) && v.parse::<f64>().is_err() {
                    return Err(format!("{s:?}: {op} needs a number", op = op.as_str()));
                }
                return Ok(Expect::Compare(op, v.to_string()));
            }
        }
        Err(format!(
            "{s:?} is not an expectation: give an operator (>=, <=, >, <, =, !=) and a value, \
             as in '>= 100'"
        ))
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Succeeds => write!(f, "no error"),
            Expect::Rows => write!(f, "at least one row"),
            Expect::Compare(op, v) => write!(f, "{} {v}", op.as_str()),
        }
    }
}

/// A query and what it must give.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The SQL.
    pub sql: String,
    /// The expectation.
    pub expect: Expect,
}

impl Check {
    /// Judges the output of the query (`psql -At`: rows as lines, columns split by `|`);
    /// `Ok(detail)` when it holds, `Err(detail)` when not.
    pub fn judge(&self, output: &str) -> Result<String, String> {
        let rows: Vec<&str> = output.lines().collect();
        match &self.expect {
            Expect::Succeeds => Ok(format!("ran, {} rows", rows.len())),
            Expect::Rows if rows.is_empty() => Err("returned no rows, expected some".into()),
            Expect::Rows => Ok(format!("returned {} rows", rows.len())),
            Expect::Compare(op, want) => {
                let Some(first) = rows.first() else {
                    return Err(format!("returned no rows, expected {}", self.expect));
                };
                let got = first.split('|').next().unwrap_or_default().trim();
                let holds = match (got.parse::<f64>(), want.parse::<f64>()) {
                    (Ok(g), Ok(w)) => match op {
                        Op::Ge => g >= w,
                        Op::Le => g <= w,
                        Op::Gt => g > w,
                        Op::Lt => g < w,
                        Op::Eq => g == w,
                        Op::Ne => g != w,
                    },
                    _ => match op {
                        Op::Eq => got == want,
                        Op::Ne => got != want,
                        _ => {
                            return Err(format!(
                                "returned {got:?}, which is not a number, expected {}",
                                self.expect
                            ))
                        }
                    },
                };
                let detail = format!("returned {got}, expected {}", self.expect);
                if holds {
                    Ok(detail)
                } else {
                    Err(detail)
                }
            }
        }
    }
}

/// Somewhere a dump can be restored and queried.
pub trait PgTarget {
    /// Where, for the record (no password).
    fn describe(&self) -> String;
    /// Loads the SQL file `dump`, stopping at the first error; `Err` holds the error
    /// (the dump does not restore: the drill fails).
    fn load(&mut self, dump: &Path) -> Result<(), String>;
    /// Runs one query; its output as `psql -At` prints it, or its error.
    fn query(&self, sql: &str) -> Result<String, String>;
}

/// Finds a PostgreSQL program: in `bin_dir` if given, else on the PATH, else in the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_tool(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = bin_dir {
        let p = d.join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(DrillError::Tool {
                tool: name.into(),
                message: format!("not found in {}", d.display()),
            })
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort_by_key(|p| {
        // The version directory as a number, so that 15 sorts after 9.6.
        p.ancestors()
            .nth(2)
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().ok_or_else(|| DrillError::Tool {
        tool: name.into(),
        message: "not found on the PATH nor in /usr/lib/postgresql/*/bin (install PostgreSQL's \
                  server programs or give --pg-bin)"
            .into(),
    })
}

/// The end of a program's error output, for a message.
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_string();
    }
    let mut cut = s.len() - MAX_ERROR_TEXT;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &s[cut..])
}

/// Runs `cmd` to its end; `Err` holds its exit status and error output.
fn run_capture(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = tail(&out.stderr);
        let err = if err.is_empty() {
            tail(&out.stdout)
        } else {
            err
        };
        Err(format!("{}: {err}", out.status))
    }
}

/// How `psql` reaches a server.
#[derive(Clone)]
struct Psql {
    bin: PathBuf,
    /// Connection arguments (`-h H -p P -U U -d DB`, or `-d URL`).
    conn: Vec<OsString>,
    /// Environment (`PGPASSWORD`).
    env: Vec<(String, String)>,
}

impl Psql {
    /// A psql command without a startup file, stopping at the first error, quiet.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(&self.conn);
        // The connection is what the arguments say, not what the environment would add.
        for v in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGPASSFILE",
        ] {
            c.env_remove(v);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn load(&self, dump: &Path) -> Result<(), String> {
        let mut c = self.command();
        c.arg("-f").arg(dump);
        run_capture(c).map(drop)
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        let mut c = self.command();
        c.args(["-A", "-t", "-c", sql]);
        run_capture(c)
    }
}

/// Options of a [`ScratchServer`].
#[derive(Debug, Clone, Default)]
pub struct ScratchOptions {
    /// Where PostgreSQL's programs are (see [`find_tool`]).
    pub bin_dir: Option<PathBuf>,
    /// The user to run the server as when running as root (PostgreSQL refuses to run as
    /// root); `postgres` if not given.
    pub run_as: Option<String>,
    /// Directory in which its temporary directory is made (the system's if not given).
    pub scratch: Option<PathBuf>,
    /// The database the checks run in (`postgres` if not given).
    pub database: Option<String>,
}

/// A PostgreSQL server in a temporary directory, on a random loopback port, with a
/// generated password; stopped and deleted when dropped.
pub struct ScratchServer {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    /// User and group the server runs as (when this process is root).
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    running: bool,
    psql: Psql,
}

impl ScratchServer {
    /// Creates and starts the server.
    pub fn start(opts: &ScratchOptions) -> Result<ScratchServer> {
        let bin = opts.bin_dir.as_deref();
        let initdb = find_tool("initdb", bin)?;
        let pg_ctl = find_tool("pg_ctl", bin)?;
        let psql = find_tool("psql", bin)?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let name = opts.run_as.as_deref().unwrap_or("postgres");
            let user = nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| DrillError::Tool {
                    tool: "initdb".into(),
                    message: format!(
                        "PostgreSQL does not run as root and there is no user {name:?} to run \
                         it as (give --pg-user)"
                    ),
                })?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let dir = crate::scratch_dir(opts.scratch.as_deref(), "holdfast-pg-")?;
        let password: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).map_err(|source| DrillError::Io {
            what: "write",
            path: pwfile.clone(),
            source,
        })?;
        if let Some((uid, gid)) = run_as {
            for p in [dir.path(), pwfile.as_path()] {
                nix::unistd::chown(p, Some(uid), Some(gid)).map_err(|e| DrillError::Io {
                    what: "give the scratch server's user",
                    path: p.to_path_buf(),
                    source: e.into(),
                })?;
            }
        }
        let port = free_port()?;
        let data = dir.path().join("data");
        let mut server = ScratchServer {
            data: data.clone(),
            port,
            pg_ctl: pg_ctl.clone(),
            run_as,
            running: false,
            psql: Psql {
                bin: psql,
                conn: [
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    SCRATCH_SUPERUSER,
                    "-d",
                    opts.database.as_deref().unwrap_or("postgres"),
                ]
                .iter()
                .map(OsString::from)
                .collect(),
                env: vec![("PGPASSWORD".into(), password)],
            },
            dir: Some(dir),
        };
        let mut init = server.tool(&initdb);
        init.arg("-D")
            .arg(&data)
            .args(["-U", SCRATCH_SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_capture(init).map_err(|message| DrillError::Tool {
            tool: "initdb".into(),
            message,
        })?;
        let sockets = server.dir.as_ref().map(|d| d.path().to_path_buf());
        let mut start = server.tool(&pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k '{}' -c fsync=off \
                 -c full_page_writes=off -c synchronous_commit=off",
                sockets.unwrap_or_default().display()
            ))
            .arg("start");
        // From here on the server may be running: Drop stops it.
        server.running = true;
        if let Err(message) = run_capture(start) {
            let log = std::fs::read(data.join("server.log")).unwrap_or_default();
            return Err(DrillError::Tool {
                tool: "pg_ctl start".into(),
                message: format!("{message}\nserver log: {}", tail(&log)),
            });
        }
        Ok(server)
    }

    /// A command for a server program, run as the server's user.
    fn tool(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid.as_raw()).gid(gid.as_raw());
        }
        c.env("LC_ALL", "C");
        c
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast, no checkpoint: it is thrown away).
    fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let mut stop = self.tool(&self.pg_ctl);
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        if let Err(e) = run_capture(stop) {
            // pg_ctl failed: end the postmaster by its PID file.
            let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            tracing::warn!("stopping the scratch PostgreSQL: {e}");
        }
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.dir.take() {
            let path = d.path().to_path_buf();
            if let Err(e) = d.close() {
                tracing::warn!("removing the scratch PostgreSQL {}: {e}", path.display());
            }
        }
    }
}

impl PgTarget for ScratchServer {
    fn describe(&self) -> String {
        format!("scratch PostgreSQL on 127.0.0.1:{}", self.port)
    }

    fn load(&mut self, dump: &Path) -> Result<(), String> {
        // Connected to the maintenance database: a pg_dumpall script connects to each of
        // its databases itself.
        let mut p = self.psql.clone();
        if let Some(i) = p.conn.iter().position(|a| a == "-d") {
            p.conn[i + 1] = "postgres".into();
        }
        p.load(dump)
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        self.psql.query(sql)
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the server takes it right after).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| DrillError::Io {
        what: "find a free port on",
        path: "127.0.0.1".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| DrillError::Io {
            what: "find a free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

/// `url` with its database (the path) replaced by `db`; `None` if it is not a URL.
pub fn with_database(url: &str, db: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[auth_end..];
    let query = after.find('?').map(|i| &after[i..]).unwrap_or("");
    Some(format!(
        "{}{}/{db}{query}",
        &url[..start],
        &rest[..auth_end]
    ))
}

/// `url` without its user information (for the record).
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A scratch database on a server that already runs (given by a `postgres://` URL),
/// dropped when this is dropped. A `pg_dump` of one database belongs here; a
/// `pg_dumpall` would create its roles and databases on that server.
pub struct ExistingServer {
    url: String,
    db: String,
    admin: Psql,
    scratch: Psql,
    created: bool,
}

impl ExistingServer {
    /// Creates a scratch database `holdfast_drill_<random>` on the server at `url`
    /// (connected to the URL's own database to do it).
    pub fn create(url: &str, bin_dir: Option<&Path>) -> Result<ExistingServer> {
        let psql = find_tool("psql", bin_dir)?;
        let suffix: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(10)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let db = format!("holdfast_drill_{suffix}");
        let scratch_url = with_database(url, &db).ok_or_else(|| {
            DrillError::Usage(format!(
                "{:?} is not a postgres:// URL",
                without_credentials(url)
            ))
        })?;
        let conn = |u: &str| Psql {
            bin: psql.clone(),
            conn: vec!["-d".into(), u.into()],
            env: Vec::new(),
        };
        let mut s = ExistingServer {
            url: url.to_string(),
            db: db.clone(),
            admin: conn(url),
            scratch: conn(&scratch_url),
            created: false,
        };
        s.admin
            .query(&format!("CREATE DATABASE {db}"))
            .map_err(|message| DrillError::Tool {
                tool: "psql".into(),
                message: format!("creating the scratch database {db}: {message}"),
            })?;
        s.created = true;
        Ok(s)
    }
}

impl Drop for ExistingServer {
    fn drop(&mut self) {
        if self.created {
            if let Err(e) = self
                .admin
                .query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            {
                tracing::warn!("dropping the scratch database {}: {e}", self.db);
            }
        }
    }
}

impl PgTarget for ExistingServer {
    fn describe(&self) -> String {
        format!(
            "scratch database {} on {}",
            self.db,
            without_credentials(&self.url)
        )
    }

    fn load(&mut self, dump: &Path) -> Result<(), String> {
        self.scratch.load(dump)
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        self.scratch.query(sql)
    }
}

/// What the PostgreSQL drill restores and checks.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// The drill's name.
    pub name: String,
    /// The dump's absolute path inside the snapshot.
    pub file: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Directory in which the dump is written for loading (the system's temporary
    /// directory if not given).
    pub scratch: Option<PathBuf>,
}

/// Runs the PostgreSQL drill on snapshot `id`, restoring into `target`, and returns its
/// record (not yet stored). The dump is written to a temporary file, loaded, and the
/// checks run in order; the RTO figure is the time to get the dump out of the repository
/// and load it.
pub fn run(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    target: &mut dyn PgTarget,
    opts: &PostgresOptions,
) -> Result<DrillRecord> {
    let started_ns = holdfast_engine::backup::now_ns();
    let started = Instant::now();
    let index = repo.load_index()?;
    let node = restorer::lookup(repo, &index, &snap.tree, opts.file.as_bytes())?
        .filter(|n| n.kind == NodeKind::File)
        .ok_or_else(|| {
            DrillError::Usage(format!(
                "snapshot {} holds no file {} (see `holdfast ls {}`)",
                id.short(),
                opts.file,
                id.short()
            ))
        })?;
    let mut rec = DrillRecord {
        kind: "postgres".into(),
        name: crate::safe_name(&opts.name),
        started: rfc3339(started_ns),
        duration_s: 0.0,
        snapshot: SnapshotRef::of(&id, snap),
        target: target.describe(),
        checks: Vec::new(),
        files_restored: 0,
        bytes_restored: 0,
        restore_s: 0.0,
        bytes_per_s: 0.0,
        result: DrillResult::Fail,
        failure: None,
        program_version: holdfast_engine::backup::program_version(),
    };
    let dir = crate::scratch_dir(opts.scratch.as_deref(), "holdfast-dump-")?;
    let dump = dir.path().join("dump.sql");
    let t0 = Instant::now();
    let extracted = (|| -> Result<(), String> {
        let f = File::create(&dump).map_err(|e| format!("create {}: {e}", dump.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        restorer::dump(repo, &index, &node, &mut w).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut w).map_err(|e| format!("write {}: {e}", dump.display()))
    })();
    let loaded = extracted.and_then(|()| {
        // The server may run as another user: it only needs to read the file through psql,
        // which runs as this process; nothing to hand over.
        target
            .load(&dump)
            .map_err(|e| format!("the dump does not load: {e}"))
    });
    rec.restore_s = t0.elapsed().as_secs_f64();
    let load_ok = loaded.is_ok();
    rec.checks.push(CheckOutcome {
        name: "restore".into(),
        passed: load_ok,
        detail: match loaded {
            Ok(()) => format!(
                "{} ({} bytes) loaded in {:.3} s",
                opts.file, node.size, rec.restore_s
            ),
            Err(e) => e,
        },
    });
    if load_ok {
        rec.files_restored = 1;
        rec.bytes_restored = node.size;
        rec.bytes_per_s = node.size as f64 / rec.restore_s.max(1e-9);
        for (i, c) in opts.checks.iter().enumerate() {
            let outcome = match target.query(&c.sql) {
                Ok(out) => c.judge(&out),
                Err(e) => Err(format!("the query failed: {e}")),
            };
            let (passed, detail) = match outcome {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            rec.checks.push(CheckOutcome {
                name: format!("check {} `{}`", i + 1, c.sql),
                passed,
                detail,
            });
        }
    }
    drop(dir);
    rec.conclude();
    rec.duration_s = started.elapsed().as_secs_f64();
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_and_judge() {
        let c = |e: &str| Check {
            sql: "q".into(),
            expect: e.parse().unwrap(),
        };
        assert_eq!(
            c(">= 100").judge("100\n"),
            Ok("returned 100, expected >= 100".into())
        );
        assert_eq!(
            c(">=100").judge("3\n"),
            Err("returned 3, expected >= 100".into())
        );
        assert!(c("= ok").judge("ok|x\n").is_ok());
        assert!(c("!= 0").judge("0\n").is_err());
        assert!(c("< 5").judge("").unwrap_err().contains("no rows"));
        assert!(c("> 1")
            .judge("abc\n")
            .unwrap_err()
            .contains("not a number"));
        assert!("100".parse::<Expect>().is_err());
        assert!(">= x".parse::<Expect>().is_err());
        let rows = Check {
            sql: "q".into(),
            expect: Expect::Rows,
        };
        assert!(rows.judge("").is_err());
        assert!(rows.judge("a\n").is_ok());
    }

    #[test]
    fn urls_get_their_database_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "x").as_deref(),
            Some("postgres://u:p@h:5432/x?sslmode=disable")
        );
        assert_eq!(
            with_database("postgresql://h", "x").as_deref(),
            Some("postgresql://h/x")
        );
        assert_eq!(with_database("host=h", "x"), None);
        assert_eq!(
            without_credentials("postgres://u:p@h/db"),
            "postgres://h/db"
        );
    }
}
