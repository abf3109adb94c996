//! The local cache on S3 repositories (issue 3): an incremental backup downloads nothing
//! it already has (index files, snapshots, tree packs), a machine without the cache does
//! download them, `--no-cache` reads everything from the server, and a damaged cached copy
//! is detected and read again. Requests are counted through a pass-through proxy.

#[macro_use]
mod common;

use common::proxy::{Mode, Proxy};
use common::{make_tree, S3Repo, Server};
use holdfast_e2e::{assert_trees_equal, list_tree, restored, tempdir};

const NO: &[&str] = &[];
const MIB: usize = 1024 * 1024;

/// The GETs of repository objects (not listings) the proxy saw from request `from` on,
/// as "DIR/NAME" (DIR: index, snapshots, data, keys, config).
fn object_gets(proxy: &Proxy, from: usize) -> Vec<String> {
    let log = proxy.stats.log.lock().unwrap();
    log[from.min(log.len())..]
        .iter()
        .filter_map(|r| {
            let target = r.strip_prefix("GET ")?;
            let path = target.split('?').next()?;
            let mut parts = path.rsplit('/');
            let name = parts.next()?;
            let dir = parts.next()?;
            // Packs are data/XX/NAME.
            let dir = if dir.len() == 2 { parts.next()? } else { dir };
            (!name.is_empty()).then(|| format!("{dir}/{name}"))
        })
        .collect()
}

fn log_len(proxy: &Proxy) -> usize {
    proxy.stats.log.lock().unwrap().len()
}

fn count(gets: &[String], dir: &str) -> usize {
    gets.iter()
        .filter(|g| g.starts_with(&format!("{dir}/")))
        .count()
}

fn incremental_backup_downloads_nothing_it_has(s: &Server) {
    let direct = s.repo("cache");
    direct.init(NO).assert_ok();
    let proxy = Proxy::start(&s.endpoint, Mode::Pass);
    let repo: S3Repo = direct.via(proxy.addr);
    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src, 5, 80, MIB);

    let first = repo.backup(&[&src], NO);
    assert!(first.stat("files_new") >= 80, "{}", first.json);

    // The same machine again: what it wrote is in its cache.
    let at = log_len(&proxy);
    let second = repo.backup(&[&src], NO);
    assert_eq!(second.stat("files_unchanged"), first.stat("files_new"));
    let gets = object_gets(&proxy, at);
    for dir in ["index", "snapshots", "data"] {
        assert_eq!(
            count(&gets, dir),
            0,
            "second backup fetched {dir}/: {gets:?}"
        );
    }

    // Another machine (an empty cache) downloads the index, the parent snapshot and the
    // tree packs once, then nothing.
    let other = repo.at(repo.location.clone());
    let at = log_len(&proxy);
    let third = other.backup(&[&src], NO);
    assert_eq!(third.stat("files_unchanged"), first.stat("files_new"));
    let gets = object_gets(&proxy, at);
    assert!(count(&gets, "index") > 0, "{gets:?}");
    assert!(count(&gets, "data") > 0, "tree packs: {gets:?}");
    let at = log_len(&proxy);
    other.backup(&[&src], NO);
    let gets = object_gets(&proxy, at);
    for dir in ["index", "snapshots", "data"] {
        assert_eq!(
            count(&gets, dir),
            0,
            "fourth backup fetched {dir}/: {gets:?}"
        );
    }

    // --no-cache reads from the server.
    let at = log_len(&proxy);
    repo.backup(&[&src], &["--no-cache"]);
    let gets = object_gets(&proxy, at);
    assert!(count(&gets, "index") > 0, "{gets:?}");

    // Damaged cached copies are noticed and read again; the result is right.
    let mut damaged = 0;
    let cache_dir = &other.repo.cache;
    for e in list_tree(cache_dir).iter().map(|r| cache_dir.join(r)) {
        if !e.is_file() {
            continue;
        }
        let mut b = std::fs::read(&e).unwrap();
        if b.is_empty() {
            continue;
        }
        let n = b.len() / 2;
        b[n] ^= 0x40;
        std::fs::write(&e, &b).unwrap();
        damaged += 1;
    }
    assert!(
        damaged > 0,
        "nothing cached in {}",
        other.repo.cache.display()
    );
    let at = log_len(&proxy);
    let fifth = other.backup(&[&src], NO);
    assert_eq!(fifth.stat("files_unchanged"), first.stat("files_new"));
    assert!(count(&object_gets(&proxy, at), "index") > 0);
    let target = tempdir();
    other.restore("latest", target.path());
    assert_trees_equal(&src, &restored(target.path(), &src));
    other.cmd(&["check", "--read-data"]).assert_ok();
}

per_server!(incremental_backup_downloads_nothing_it_has);
