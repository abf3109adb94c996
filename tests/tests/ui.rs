//! `holdfast ui`: the real binary serving a real repository, driven by headless Chromium
//! (Debian's `chromium`) over the Chrome DevTools Protocol: log in (a wrong password first),
//! click through to a nested file and download it, download a folder as tar, restore a
//! folder through the form, each compared byte for byte with the source; a screenshot of
//! every step is kept under `target/ui-screenshots/` (or `$HOLDFAST_UI_SCREENSHOTS`).
//! Without a browser: the loopback rule and a plain HTTP request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_e2e::*;
use serde_json::{json, Value};

/// A running `holdfast ui`, killed when dropped.
struct Ui {
    child: Child,
    url: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `holdfast ui --listen 127.0.0.1:0 EXTRA...` and reads the URL it prints.
fn start_ui(repo: &Repo, extra: &[&str]) -> Ui {
    let mut args = vec!["ui", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut cmd = repo.command(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start holdfast ui");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the URL line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Ui { child, url }
}

/// A plain HTTP/1.0 GET; returns the status line, headers and body.
fn http_get(url: &str, path: &str) -> (String, Vec<u8>) {
    let hostport = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(hostport).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn refuses_to_serve_off_loopback_without_a_login_and_serves_on_loopback() {
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write_file(&src.join("hello.txt"), b"hello\n");
    let b = repo.backup(&[&src], &[] as &[&str]);
    let run = repo.cmd(&["ui", "--listen", "0.0.0.0:0"]);
    run.assert_code(exit::USAGE)
        .assert_stderr_contains("without a login");
    let run = repo.cmd(&["ui", "--listen", "not-an-address"]);
    run.assert_code(exit::USAGE)
        .assert_stderr_contains("--listen");
    let bad = repo.scratch().join("bad-login");
    std::fs::write(&bad, "read:a\nnonsense\n").unwrap();
    repo.cmd(&["ui", "--listen", "0.0.0.0:0", "--login-password-file"])
        .assert_code(exit::USAGE);
    repo.cmd(&[
        "ui",
        "--listen",
        "0.0.0.0:0",
        "--login-password-file",
        bad.to_str().unwrap(),
    ])
    .assert_code(exit::USAGE)
    .assert_stderr_contains("line 2");

    let ui = start_ui(&repo, &[]);
    let (head, body) = http_get(&ui.url, "/");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&b.id[..8]),
        "the start page lists the snapshot"
    );
}

// ---------------------------------------------------------------------------------------
// A minimal Chrome DevTools Protocol client (one page, flat sessions) over a WebSocket.
// ---------------------------------------------------------------------------------------

/// Chromium, started headless with its own profile; killed when dropped.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    _profile: TempDir,
    shots: PathBuf,
    shot_n: u32,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    fn start(shots: PathBuf) -> Browser {
        let bin = chromium();
        require(bin.is_some(), "Debian's chromium (/usr/bin/chromium)");
        let profile = tempdir();
        let child = Command::new(bin.unwrap())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes its port and browser target path here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let (port, path) = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                let mut l = s.lines();
                if let (Some(p), Some(path)) = (l.next(), l.next()) {
                    break (p.to_string(), path.to_string());
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect to chromium");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools WebSocket handshake");
        std::fs::create_dir_all(&shots).unwrap();
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            session: String::new(),
            _profile: profile,
            shots,
            shot_n: 0,
        };
        let t = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = t["targetId"].as_str().unwrap().to_string();
        let a = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = a["sessionId"].as_str().unwrap().to_string();
        b.page("Page.enable", json!({}));
        b.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).expect("CDP JSON");
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// A browser-level command.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page.
    fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.send(method, params, Some(s))
    }

    /// Evaluates `expr` in the page; returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in a loaded page.
    fn wait_for(&mut self, expr: &str) {
        let start = Instant::now();
        let full = format!("document.readyState === 'complete' && !!({expr})");
        loop {
            // A navigation can replace the context mid-evaluation: retry quietly.
            let r = self.page(
                "Runtime.evaluate",
                json!({"expression": full, "returnByValue": true}),
            );
            if r["result"]["value"] == json!(true) {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let html = self.eval("document.documentElement.outerHTML");
                panic!("waited 60 s for {expr}; the page is:\n{html}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
    }

    /// Clicks the element `selector` whose text is `text` (or the first, if `None`).
    fn click(&mut self, selector: &str, text: Option<&str>) {
        let sel = serde_json::to_string(selector).unwrap();
        let find = match text {
            Some(t) => format!(
                "[...document.querySelectorAll({sel})].find(e => e.textContent.trim() === {})",
                serde_json::to_string(t).unwrap()
            ),
            None => format!("document.querySelector({sel})"),
        };
        self.wait_for(&find);
        self.eval(&format!(
            "(() => {{ const e = {find}; window.__left = false; \
             window.addEventListener('beforeunload', () => window.__left = true); e.click(); return true; }})()"
        ));
    }

    /// Sets the value of the input `selector`.
    fn fill(&mut self, selector: &str, value: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait_for(&format!("document.querySelector({sel})"));
        self.eval(&format!(
            "document.querySelector({sel}).value = {}",
            serde_json::to_string(value).unwrap()
        ));
    }

    /// Saves a screenshot of the page as `NN-name.png`.
    fn shot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        self.shot_n += 1;
        let r = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let p = self.shots.join(format!("{:02}-{name}.png", self.shot_n));
        std::fs::write(&p, png).unwrap();
        p
    }
}

/// Where screenshots go: `$HOLDFAST_UI_SCREENSHOTS`, else `ui-screenshots` in the target
/// directory the binary was built in.
fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOLDFAST_UI_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let bin = holdfast_bin();
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."))
        .join("ui-screenshots")
}

/// Waits for a finished download called `name` in `dir`; returns its bytes.
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    let start = Instant::now();
    loop {
        let partial = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
            })
            .unwrap_or(false);
        if p.exists() && !partial {
            return std::fs::read(&p).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no download {name} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unpacks a tar with GNU tar into a new directory.
fn untar(bytes: &[u8], into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let f = into.with_extension("tar");
    std::fs::write(&f, bytes).unwrap();
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(&f)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -x failed");
}

#[test]
fn browse_download_and_restore_in_headless_chromium() {
    let repo = Repo::new();
    let src = repo.scratch().join("site");
    let folder = src.join("projects/alpha");
    write_random(&folder.join("data/deep/blob.bin"), 3 * 1024 * 1024 + 17, 5);
    write_file(&folder.join("data/notes.txt"), b"nested notes\n");
    write_file(&folder.join("README"), b"alpha project\n");
    write_file(&folder.join("empty"), b"");
    write_file(
        &folder.join("<img src=x onerror=alert(1)> & name.txt"),
        b"escaped\n",
    );
    std::fs::write(
        crate_join(&folder, b"latin1-\xe9t\xe9.txt"),
        b"not utf-8 name\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("data/notes.txt", folder.join("link")).unwrap();
    write_file(&src.join("other.txt"), b"other\n");
    stamp_mtimes(&src);
    repo.backup(&[&src], &["--tag", "namespace=shop,pvc=site"]);

    let login = repo.scratch().join("ui-login");
    std::fs::write(&login, "read:reader pw\nrestore:restorer pw\n").unwrap();
    let ui = start_ui(&repo, &["--login-password-file", login.to_str().unwrap()]);
    let downloads = repo.scratch().join("downloads");
    std::fs::create_dir(&downloads).unwrap();

    let mut b = Browser::start(screenshot_dir());
    b.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.to_str().unwrap()}),
    );

    // The start page needs a login.
    b.navigate(&ui.url);
    b.wait_for("document.querySelector('#secret')");
    b.shot("login");
    b.fill("#secret", "wrong password");
    b.click("#login", None);
    b.wait_for("document.querySelector('#login-error')");
    let err = b.eval("document.querySelector('#login-error').textContent");
    assert_eq!(err, json!("Wrong password or token."));
    b.shot("wrong-password");
    let html = b.eval("document.documentElement.outerHTML").to_string();
    assert!(
        !html.contains("wrong password") && !html.contains("restorer pw"),
        "no secret in the page"
    );
    b.fill("#secret", "restorer pw");
    b.click("#login", None);
    b.wait_for("document.querySelector('#groups')");
    b.shot("start-page");
    let start_text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        start_text.contains("shop/site"),
        "grouped by PVC: {start_text}"
    );

    // Click through to the nested file.
    b.click("a.snap", None);
    b.wait_for("document.querySelector('#listing')");
    let mut comps: Vec<String> = src
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    comps.extend(["projects", "alpha"].map(String::from));
    for c in &comps {
        b.click("a.entry", Some(&format!("{c}/")));
        b.wait_for(&format!(
            "[...document.querySelectorAll('#crumbs a')].pop().textContent === {}",
            serde_json::to_string(c).unwrap()
        ));
    }
    b.shot("folder");
    let listing = b
        .eval("document.querySelector('#listing').innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        listing.contains("<img src=x onerror=alert(1)> & name.txt"),
        "escaped name shown as text: {listing}"
    );
    for c in ["data", "deep"] {
        b.click("a.entry", Some(&format!("{c}/")));
        b.wait_for(&format!(
            "[...document.querySelectorAll('#crumbs a')].pop().textContent === '{c}'"
        ));
    }
    b.click("a.entry", Some("blob.bin"));
    b.wait_for("document.querySelector('#download')");
    b.shot("file");
    b.click("#download", None);
    let got = downloaded(&downloads, "blob.bin");
    assert!(
        got == std::fs::read(folder.join("data/deep/blob.bin")).unwrap(),
        "the downloaded file differs from the source"
    );

    // Back up to the folder by its breadcrumb; download it as a tar.
    b.click("#crumbs a", Some("alpha"));
    b.wait_for("document.querySelector('#download-tar')");
    b.click("#download-tar", None);
    let tar = downloaded(&downloads, "alpha.tar");
    let unpacked = repo.scratch().join("unpacked");
    untar(&tar, &unpacked);
    let diffs = compare_trees(&folder, &unpacked.join("alpha"));
    assert!(
        diffs.is_empty(),
        "the tar differs from the folder: {diffs:#?}"
    );

    // Restore the folder to a server path through the form.
    let target = repo.scratch().join("restored");
    b.fill("#target", target.to_str().unwrap());
    b.shot("restore-form");
    b.click("#restore-button", None);
    b.wait_for("document.querySelector('#job-state') && document.querySelector('#job-state').textContent.includes('done')");
    b.shot("restore-done");
    let diffs = compare_trees(&folder, &target.join("alpha"));
    assert!(diffs.is_empty(), "the restored folder differs: {diffs:#?}");

    // The jobs page lists it.
    b.navigate(&format!("{}/jobs", ui.url));
    b.wait_for("document.querySelector('#jobs')");
    b.shot("jobs");
    eprintln!("screenshots in {}", b.shots.display());
}

/// `dir` joined with a name given as bytes.
fn crate_join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

#[test]
fn a_100k_entry_directory_renders_its_first_and_last_page_fast() {
    let repo = Repo::new();
    let dir = repo.scratch().join("wide");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(dir.join(format!("entry-{i:06}"))).unwrap();
    }
    repo.backup(&[&dir], &[] as &[&str]);
    let ui = start_ui(&repo, &[]);
    let snap = repo.snapshots(&[] as &[&str])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = dir.to_str().unwrap();
    let mut times = Vec::new();
    for (page, first, last) in [
        (1, "entry-000000", "entry-000499"),
        (200, "entry-099500", "entry-099999"),
        (1, "entry-000000", "entry-000499"),
        (100, "entry-049500", "entry-049999"),
    ] {
        let start = Instant::now();
        let (head, body) = http_get(&ui.url, &format!("/s/{snap}?p={p}&page={page}"));
        let took = start.elapsed();
        let body = String::from_utf8_lossy(&body);
        assert!(head.contains(" 200 "), "{head}");
        assert!(
            body.contains(&format!(">{first}<")) && body.contains(&format!(">{last}<")),
            "page {page} holds {first}..{last}"
        );
        assert!(body.contains("of 100000"), "the count is shown");
        times.push(format!("page {page}: {} ms", took.as_millis()));
        // Generous: a debug build on a loaded machine; the figures are printed.
        assert!(took < Duration::from_secs(10), "page {page} took {took:?}");
    }
    eprintln!("100,000-entry directory: {}", times.join(", "));
}
