//! A real PostgreSQL server (Debian's `postgresql-15`) on a loopback port, for tests of
//! database dumps and restore drills. PostgreSQL refuses to run as root: under root the
//! server runs as the `postgres` user the package creates (with `runuser`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn bin_dir() -> PathBuf {
    for v in ["17", "16", "15"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join("initdb").exists() {
            return d;
        }
    }
    panic!(
        "PostgreSQL's server programs are not installed (no /usr/lib/postgresql/*/bin/initdb): \
         apt-get install postgresql (.ci/run installs it)"
    )
}

/// Whether this process is root (the server must then run as `postgres`).
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A server started in a temporary directory; stopped (immediate mode) and removed when
/// dropped, also when a test fails.
pub struct Postgres {
    dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The password of the `postgres` superuser.
    pub password: String,
}

impl Postgres {
    /// initdb (superuser `postgres`, password authentication over TCP) and start on a free
    /// loopback port; waits until it accepts connections.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg-")
            .tempdir()
            .expect("tempdir");
        let password = format!("pw-{}", std::process::id());
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("pwfile"), &password).expect("write pwfile");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown the PostgreSQL directory to postgres");
        }
        let pg = Postgres {
            port: free_port(),
            password,
            dir,
        };
        pg.server_cmd("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                ])
                .arg(format!(
                    "--pwfile={}",
                    pg.dir.path().join("pwfile").display()
                ))
                .args(["-E", "UTF8", "--locale=C.UTF-8"]);
        });
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        pg.server_cmd("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-o", &opts, "-l"])
                .arg(pg.dir.path().join("log"))
                .args(["-w", "-t", "60", "start"]);
        });
        pg
    }

    /// Runs a server program (as `postgres` under root); panics with its output if it fails.
    fn server_cmd(&self, program: &str, args: impl FnOnce(&mut Command)) -> Output {
        let path = bin_dir().join(program);
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        args(&mut c);
        c.current_dir(self.dir.path());
        let out = c.output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
        out
    }

    /// The environment a client needs: host, port, user and password.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".into()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGPASSWORD", self.password.clone()),
        ]
    }

    /// A client command (`psql`, `pg_dumpall`, ...) with [`Self::env`] set.
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env());
        c
    }

    /// Runs SQL in `db` with `psql -X -At -v ON_ERROR_STOP=1`; returns its output, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Loads a SQL file (a dump) with `psql -f` into `db`.
    pub fn load(&self, db: &str, file: &Path) {
        let out = self
            .client("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f"])
            .arg(file)
            .output()
            .expect("run psql -f");
        assert!(
            out.status.success(),
            "loading {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = bin_dir().join("pg_ctl");
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        let _ = c
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
