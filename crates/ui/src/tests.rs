//! Handler tests through the real router (`tower::ServiceExt::oneshot`), on a real
//! repository with one snapshot of a small tree.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use holdfast_engine::archiver::BackupProgress;
use holdfast_engine::backup::{self, BackupRequest, ParentChoice, Source};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};
use holdfast_repo::Id;
use tower::ServiceExt;

use super::*;
use crate::pages::page_bounds;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Arc<Repository>,
    snap: Id,
    /// The backed-up directory (its absolute path is its path in the snapshot).
    src: PathBuf,
    scratch: PathBuf,
}

const ODD: &[u8] = b"odd \xff\xfe name&x=1#";
const SCRIPT: &str = "<script>alert(1)</script>";

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        chunk: (64 * 1024, 128 * 1024, 512 * 1024),
        pack_size: 1 << 20,
        kdf: KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
        host: "h".into(),
        user: "u".into(),
        now_ns: 0,
    };
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        b"pw",
        &opts,
    )
    .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("docs/deep")).unwrap();
    std::fs::create_dir_all(src.join("many")).unwrap();
    std::fs::write(src.join("docs/a.txt"), b"alpha\n").unwrap();
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("docs/deep/big.bin"), &big).unwrap();
    std::fs::write(src.join("docs/zeros"), vec![0u8; 300_000]).unwrap();
    std::fs::set_permissions(
        src.join("docs/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("deep/big.bin", src.join("docs/link")).unwrap();
    std::fs::write(src.join(SCRIPT.replace('/', "_")), b"xss").unwrap();
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(ODD)), b"odd bytes\n").unwrap();
    for i in 0..1200 {
        std::fs::write(src.join(format!("many/f{i:05}")), i.to_string()).unwrap();
    }
    let req = BackupRequest {
        parent: ParentChoice::None,
        host: "h".into(),
        tags: vec!["namespace=shop".into(), "pvc=data".into()],
        ..BackupRequest::new(vec![Source::new(&src)])
    };
    let rep = backup::run(&repo, &req, &BackupProgress::default()).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    Fixture {
        repo: Arc::new(repo),
        snap: rep.snapshot_id,
        src,
        scratch,
        _dir: dir,
    }
}

fn login_router(f: &Fixture) -> Router {
    let c = Credentials::parse("read:reader-secret\nrestore:restorer-secret\n", "test").unwrap();
    router(UiState::new(f.repo.clone(), AuthConfig::Login(c)))
}

async fn send(r: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = r.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri).header(header::HOST, "ui.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut b = Request::post(uri)
        .header(header::HOST, "ui.test")
        .header(header::ORIGIN, "http://ui.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_string())).unwrap()
}

/// Logs in with `secret`; returns the cookie to send.
async fn login(r: &Router, secret: &str) -> String {
    let (st, h, _) = send(r, post("/login", None, &format!("secret={secret}&next=/"))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let c = h[header::SET_COOKIE].to_str().unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    c.split(';').next().unwrap().to_string()
}

/// The CSRF token in a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn browse_uri(f: &Fixture, rel: &[u8]) -> String {
    let mut p = f.src.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(rel);
    format!("/s/{}?p={}", f.snap.to_hex(), paths::encode(&p))
}

#[test]
fn only_loopback_serves_without_login() {
    let open = AuthConfig::Open;
    assert!(check_listen(&"127.0.0.1:9470".parse().unwrap(), &open).is_ok());
    assert!(check_listen(&"127.8.9.10:1".parse().unwrap(), &open).is_ok());
    assert!(check_listen(&"[::1]:9470".parse().unwrap(), &open).is_ok());
    for addr in ["0.0.0.0:9470", "[::]:9470", "10.1.2.3:80"] {
        let e = check_listen(&addr.parse().unwrap(), &open).unwrap_err();
        assert!(matches!(e, UiError::Usage(_)), "{e:?}");
        assert!(e.to_string().contains("without a login"), "{e}");
    }
    let login = AuthConfig::Login(Credentials::parse("x", "t").unwrap());
    assert!(check_listen(&"0.0.0.0:9470".parse().unwrap(), &login).is_ok());
}

#[test]
fn paging_math() {
    assert_eq!(page_bounds(0, 1, 500), (0, 0, 1, 1));
    assert_eq!(page_bounds(1200, 1, 500), (0, 500, 1, 3));
    assert_eq!(page_bounds(1200, 3, 500), (1000, 1200, 3, 3));
    assert_eq!(page_bounds(1200, 99, 500), (1000, 1200, 3, 3));
    assert_eq!(page_bounds(1000, 2, 500), (500, 1000, 2, 2));
    assert_eq!(page_bounds(1000, 0, 500), (0, 500, 1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_is_required_and_wrong_secrets_are_refused() {
    let f = fixture();
    let r = login_router(&f);
    let (st, h, _) = send(&r, get("/", None)).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/login?next="));
    let (st, _, _) = send(&r, get(&format!("/s/{}/tar", f.snap.to_hex()), None)).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "downloads need a login too");
    let (st, _, body) = send(&r, post("/login", None, "secret=wrong&next=/")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(text(&body).contains("Wrong password or token"));
    // A bearer token works without a session (scripts).
    let mut req = get("/", None);
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer reader-secret".parse().unwrap(),
    );
    let (st, _, body) = send(&r, req).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        !text(&body).contains("reader-secret"),
        "no credential in a page"
    );
    let cookie = login(&r, "reader-secret").await;
    let (st, _, body) = send(&r, get("/", Some(&cookie))).await;
    assert_eq!(st, StatusCode::OK);
    let page = text(&body);
    assert!(
        page.contains(&f.snap.short()),
        "the start page lists the snapshot"
    );
    assert!(page.contains("shop/data"), "grouped by PVC");
    // Logging out ends the session.
    let csrf = csrf_of(&page);
    let (st, _, _) = send(&r, post("/logout", Some(&cookie), &format!("csrf={csrf}"))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let (st, _, _) = send(&r, get("/", Some(&cookie))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread")]
async fn posts_need_the_csrf_token_the_origin_and_the_restore_role() {
    let f = fixture();
    let r = login_router(&f);
    let target = f.scratch.join("t");
    let form = |csrf: &str| {
        format!(
            "csrf={csrf}&snapshot={}&path_enc={}&target={}",
            f.snap.to_hex(),
            paths::encode(&paths::encode(f.src.as_os_str().as_bytes()).into_bytes()),
            paths::encode(target.as_os_str().as_bytes())
        )
    };
    let reader = login(&r, "reader-secret").await;
    let (_, _, page) = send(&r, get(&browse_uri(&f, b""), Some(&reader))).await;
    let page = text(&page);
    assert!(page.contains("Restoring needs the restore role"));
    let csrf = csrf_of(&page);
    let (st, _, body) = send(&r, post("/restore", Some(&reader), &form(&csrf))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(text(&body).contains("restore role"));

    let restorer = login(&r, "restorer-secret").await;
    let (_, _, page) = send(&r, get(&browse_uri(&f, b""), Some(&restorer))).await;
    let csrf = csrf_of(&text(&page));
    // No token, a wrong token, another session's token: refused.
    for bad in [
        "",
        "00",
        &csrf_of(&text(&send(&r, get("/", Some(&reader))).await.2)),
    ] {
        let (st, _, body) = send(&r, post("/restore", Some(&restorer), &form(bad))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{bad}");
        assert!(text(&body).contains("CSRF"));
    }
    // The right token from another site: refused.
    let mut req = post("/restore", Some(&restorer), &form(&csrf));
    req.headers_mut()
        .insert(header::ORIGIN, "http://evil.test".parse().unwrap());
    let (st, _, _) = send(&r, req).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(!target.exists(), "nothing was restored");
    // The right token from this site: the restore runs.
    let (st, h, _) = send(&r, post("/restore", Some(&restorer), &form(&csrf))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let job = h[header::LOCATION].to_str().unwrap().to_string();
    wait_job(&r, &restorer, &job).await;
    let name = f.src.file_name().unwrap();
    assert_eq!(
        std::fs::read(target.join(name).join("docs/deep/big.bin")).unwrap(),
        std::fs::read(f.src.join("docs/deep/big.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read(target.join(name).join(std::ffi::OsStr::from_bytes(ODD))).unwrap(),
        b"odd bytes\n"
    );
    // Once there, the same target is not empty any more: refused without overwrite.
    let (st, _, body) = send(&r, post("/restore", Some(&restorer), &form(&csrf))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text(&body).contains("not empty"));
}

async fn wait_job(r: &Router, cookie: &str, job: &str) -> String {
    for _ in 0..600 {
        let (st, _, body) = send(r, get(job, Some(cookie))).await;
        assert_eq!(st, StatusCode::OK);
        let page = text(&body);
        if page.contains("failed") {
            panic!("the restore failed: {page}");
        }
        if page.contains(">done<") {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the restore did not finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_escaped_paged_and_odd_bytes_browsable() {
    let f = fixture();
    let r = router(UiState::new(f.repo.clone(), AuthConfig::Open));
    let (st, h, body) = send(&r, get(&browse_uri(&f, b""), None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        h.get(header::SET_COOKIE).is_some(),
        "an open UI still has sessions (CSRF)"
    );
    let page = text(&body);
    let shown = SCRIPT.replace('/', "_");
    assert!(!page.contains(&shown), "a name is never raw HTML");
    assert!(page.contains(&shown.replace('<', "&lt;").replace('>', "&gt;")));
    // The odd name links to a URL that leads back to its bytes.
    let enc = paths::encode(ODD);
    assert!(page.contains(&enc), "{enc} in the listing");
    let mut odd = f.src.as_os_str().as_bytes().to_vec();
    odd.push(b'/');
    odd.extend_from_slice(ODD);
    let (st, h, body) = send(
        &r,
        get(
            &format!("/s/{}/file?p={}", f.snap.to_hex(), paths::encode(&odd)),
            None,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, b"odd bytes\n");
    assert_eq!(h[header::CONTENT_LENGTH], "10");
    assert!(h[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .starts_with("attachment"));

    // 1200 entries: three pages of 500.
    let (_, _, p1) = send(&r, get(&browse_uri(&f, b"/many"), None)).await;
    let p1 = text(&p1);
    assert!(
        p1.contains("entries 1–500 of 1200") && p1.contains("page 1 of 3"),
        "{p1}"
    );
    assert!(p1.contains(">f00000<") && p1.contains(">f00499<") && !p1.contains(">f00500<"));
    let (_, _, p3) = send(
        &r,
        get(&format!("{}&page=3", browse_uri(&f, b"/many")), None),
    )
    .await;
    let p3 = text(&p3);
    assert!(p3.contains("entries 1001–1200 of 1200"));
    assert!(p3.contains(">f01199<") && !p3.contains(">f00999<"));

    // Something that is not there is a 404 page, not a panic.
    let (st, _, _) = send(&r, get(&browse_uri(&f, b"/nope/x"), None)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = send(&r, get("/s/0000/file?p=/x", None)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_downloads_whole_and_a_folder_as_an_equal_tar() {
    let f = fixture();
    let r = router(UiState::new(f.repo.clone(), AuthConfig::Open));
    let big = std::fs::read(f.src.join("docs/deep/big.bin")).unwrap();
    let mut p = f.src.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(b"/docs/deep/big.bin");
    let (st, h, body) = send(
        &r,
        get(
            &format!("/s/{}/file?p={}", f.snap.to_hex(), paths::encode(&p)),
            None,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], big.len().to_string().as_str());
    assert!(body == big, "downloaded bytes differ");

    let mut p = f.src.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(b"/docs");
    let (st, h, body) = send(
        &r,
        get(
            &format!("/s/{}/tar?p={}", f.snap.to_hex(), paths::encode(&p)),
            None,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/x-tar");
    let got = read_tar(&body);
    let want = read_dir(&f.src.join("docs"), Path::new("docs"));
    assert_eq!(got, want);
}

/// (kind, mode, mtime seconds, content or link target) by path.
type Listing = BTreeMap<PathBuf, (char, u32, u64, Vec<u8>)>;

fn read_tar(bytes: &[u8]) -> Listing {
    let mut a = tar::Archive::new(bytes);
    let mut out = Listing::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        let path = PathBuf::from(path.to_string_lossy().trim_end_matches('/'));
        let (kind, data) = match h.entry_type() {
            tar::EntryType::Directory => ('d', Vec::new()),
            tar::EntryType::Symlink => ('l', e.link_name_bytes().unwrap().into_owned()),
            tar::EntryType::Regular => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                ('f', v)
            }
            t => panic!("unexpected entry {t:?}"),
        };
        out.insert(path, (kind, h.mode().unwrap(), h.mtime().unwrap(), data));
    }
    out
}

fn read_dir(dir: &Path, rel: &Path) -> Listing {
    use std::os::unix::fs::MetadataExt;
    let mut out = Listing::new();
    let m = std::fs::symlink_metadata(dir).unwrap();
    out.insert(
        rel.to_path_buf(),
        ('d', m.mode() & 0o7777, m.mtime() as u64, Vec::new()),
    );
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let (p, r) = (e.path(), rel.join(e.file_name()));
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(read_dir(&p, &r));
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.insert(
                r,
                (
                    'l',
                    m.mode() & 0o7777,
                    m.mtime() as u64,
                    t.as_os_str().as_bytes().to_vec(),
                ),
            );
        } else {
            out.insert(
                r,
                (
                    'f',
                    m.mode() & 0o7777,
                    m.mtime() as u64,
                    std::fs::read(&p).unwrap(),
                ),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn coverage_without_the_agent_says_so_and_diff_and_drills_render() {
    let f = fixture();
    let r = router(UiState::new(f.repo.clone(), AuthConfig::Open));
    let (st, _, body) = send(&r, get("/coverage", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains("holdfast coverage"));
    let (st, _, body) = send(&r, get("/drills", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains("No drill has been recorded"));
    let hex = f.snap.to_hex();
    let (st, _, body) = send(&r, get(&format!("/diff?a={hex}&b={hex}"), None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains("changes 0–0 of 0"));
}

/// A cluster view with fixed rows.
struct FakeCluster;

impl ClusterView for FakeCluster {
    fn coverage(&self) -> BoxFuture<'_, Result<Vec<CoverageRow>, String>> {
        Box::pin(async {
            Ok(vec![CoverageRow {
                namespace: "shop".into(),
                pvc: "<b>data</b>".into(),
                status: "uncovered".into(),
                method: String::new(),
                detail: "no schedule".into(),
                newest: None,
                age_seconds: None,
            }])
        })
    }
    fn activity(&self) -> Vec<ActivityRow> {
        vec![ActivityRow {
            what: "backup shop/data".into(),
            started: "now".into(),
            state: "running".into(),
            detail: "1 MiB".into(),
        }]
    }
    fn last_check(&self) -> Option<String> {
        Some("2025-01-01T00:00:00Z ok".into())
    }
    fn restore_to_pvc(
        &self,
        snapshot: String,
        path: String,
        namespace: String,
        pvc: String,
    ) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            Ok(format!(
                "restoring {snapshot} {path} into {namespace}/{pvc}"
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_view_fills_coverage_activity_and_pvc_restores_under_a_base_path() {
    let f = fixture();
    let state = UiState::new(f.repo.clone(), AuthConfig::Open)
        .with_cluster(Arc::new(FakeCluster))
        .with_base_path("/ui");
    let r = Router::new().nest("/ui", router(state));
    let (st, h, body) = send(&r, get("/ui/coverage", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h[header::SET_COOKIE].to_str().unwrap().contains("Path=/ui"));
    let cookie = h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = text(&body);
    assert!(page.contains("&lt;b&gt;data&lt;/b&gt;") && page.contains("uncovered"));
    assert!(
        page.contains("href=\"/ui/style.css\""),
        "links carry the base path"
    );
    let (_, _, body) = send(&r, get("/ui", Some(&cookie))).await;
    let page = text(&body);
    assert!(page.contains("backup shop/data") && page.contains("2025-01-01T00:00:00Z ok"));
    let (_, _, body) = send(
        &r,
        get(&format!("/ui{}", browse_uri(&f, b"")), Some(&cookie)),
    )
    .await;
    let page = text(&body);
    assert!(page.contains("Restore into PVC"));
    let csrf = csrf_of(&page);
    let (st, _, body) = send(
        &r,
        post(
            "/ui/restore",
            Some(&cookie),
            &format!(
                "csrf={csrf}&snapshot={}&path_enc=%252Fx&namespace=shop&pvc=data",
                f.snap.to_hex()
            ),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains(&format!("restoring {} /x into shop/data", f.snap.to_hex())));
}
