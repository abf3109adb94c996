//! Bucket backups against a real Ceph RADOS Gateway. These tests are `rgw::NAME`: a plain
//! `cargo nextest run` leaves them out (`.config/nextest.toml`); `scripts/s3-test-servers.sh
//! start DIR` and `source DIR/env.sh` select them. Selected without the server, they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use holdfast_backend_s3::S3Options;
use holdfast_bucket::{recorded_path, restore, Bucket, RestoreProgress};
use holdfast_engine::archiver::{BackupProgress, Source};
use holdfast_engine::backup::{run_feed, BackupReport, BackupRequest};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};

/// The RGW endpoint; fails the test when the server is not there.
fn endpoint() -> String {
    match std::env::var("HOLDFAST_TEST_RGW") {
        Ok(v) if !v.trim().is_empty() => v.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "HOLDFAST_TEST_RGW is not set: this test needs the Ceph RGW test server and did \
             not run. Start it with `scripts/s3-test-servers.sh start DIR`, then `source \
             DIR/env.sh` and run the tests again"
        ),
    }
}

fn options() -> S3Options {
    S3Options {
        credentials: Some((
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testtest".into()),
        )),
        region: Some("us-east-1".into()),
        ..S3Options::default()
    }
}

/// A new, empty bucket (named after `tag`) with `prefix`.
fn new_bucket(tag: &str, prefix: &str) -> Arc<Bucket> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let name = format!("{tag}-{}-{nanos}", std::process::id());
    let b = Bucket::open(&format!("s3:{}/{name}/{prefix}", endpoint()), options()).unwrap();
    b.block_on(b.client().create_bucket().bucket(&name).send())
        .unwrap();
    Arc::new(b)
}

fn repo(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunk: (512 * 1024, 1024 * 1024, 8 * 1024 * 1024),
        pack_size: 4 << 20,
        kdf: KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
        host: "h".into(),
        user: "u".into(),
        now_ns: 0,
    };
    Repository::init(Arc::new(LocalBackend::new(dir)), b"pw", &opts).unwrap()
}

/// One object: content, content type, user metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Obj {
    data: Vec<u8>,
    ctype: Option<String>,
    meta: BTreeMap<String, String>,
}

fn put(b: &Bucket, key: &str, o: &Obj) {
    let req = b
        .client()
        .put_object()
        .bucket(&b.location().bucket)
        .key(b.location().key(key))
        .set_content_type(o.ctype.clone())
        .set_metadata(Some(o.meta.clone().into_iter().collect()))
        .body(ByteStream::from(o.data.clone()));
    b.block_on(req.send())
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Runs `f` on `items` with 16 threads.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let chunk = items.len().div_ceil(16).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let f = &f;
            s.spawn(move || part.iter().for_each(f));
        }
    });
}

/// Every object below the bucket's prefix, by key relative to it.
fn contents(b: &Bucket) -> BTreeMap<String, Obj> {
    let base = b.location().key("");
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = b
            .block_on(
                b.client()
                    .list_objects_v2()
                    .bucket(&b.location().bucket)
                    .prefix(&base)
                    .set_continuation_token(token)
                    .send(),
            )
            .unwrap();
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let out = std::sync::Mutex::new(BTreeMap::new());
    parallel(&keys, |k| {
        let r = b
            .block_on(
                b.client()
                    .get_object()
                    .bucket(&b.location().bucket)
                    .key(k)
                    .send(),
            )
            .unwrap();
        let ctype = r.content_type().map(str::to_string);
        let meta = r
            .metadata()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let data = b.block_on(r.body.collect()).unwrap().to_vec();
        out.lock()
            .unwrap()
            .insert(k[base.len()..].to_string(), Obj { data, ctype, meta });
    });
    out.into_inner().unwrap()
}

fn backup(r: &Repository, b: &Arc<Bucket>) -> BackupReport {
    let at = recorded_path(&b.location().bucket, &b.location().prefix);
    let mut req = BackupRequest::new(vec![Source::feed(&at)]);
    req.tags = vec!["kind=bucket".into()];
    run_feed(
        r,
        &req,
        Some(Box::new(b.feed())),
        &BackupProgress::default(),
    )
    .unwrap()
}

fn object(i: usize, version: u8) -> Obj {
    let mut meta = BTreeMap::new();
    if i % 10 == 0 {
        meta.insert("idx".into(), i.to_string());
    }
    Obj {
        data: format!("object {i} version {version}\n")
            .repeat(1 + i % 7)
            .into_bytes(),
        ctype: Some(if i % 2 == 0 {
            "text/plain".into()
        } else {
            format!("application/x-{}", i % 3)
        }),
        meta,
    }
}

mod rgw {
    use super::*;

    /// 10,000 objects backed up; 1% changed (40 modified, 30 added, 30 deleted); the second
    /// backup downloads only the 70 new or modified objects and reuses the rest; the second
    /// snapshot restored into another bucket has every key's bytes, content type and
    /// metadata.
    #[test]
    fn ten_thousand_objects_incremental_and_restored() {
        let src = new_bucket("hf-src", "data");
        let keys: Vec<(String, Obj)> = (0..10_000)
            .map(|i| (format!("d{:02}/obj-{i:05}.txt", i % 20), object(i, 1)))
            .collect();
        let t = Instant::now();
        parallel(&keys, |(k, o)| put(&src, k, o));
        eprintln!("created 10000 objects in {:.1}s", t.elapsed().as_secs_f64());

        let dir = tempfile::tempdir().unwrap();
        let r = repo(&dir.path().join("repo"));
        let t = Instant::now();
        let first = backup(&r, &src);
        let first_s = t.elapsed().as_secs_f64();
        assert_eq!(first.summary.files_new, 10_000);
        assert_eq!(src.get_requests(), 10_000);
        assert_eq!(src.objects_downloaded(), 10_000);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);

        // 1%: modify 40, add 30, delete 30.
        parallel(&(0..40).map(|j| j * 97).collect::<Vec<_>>(), |&i| {
            put(&src, &keys[i].0, &object(i, 2))
        });
        parallel(&(0..30).collect::<Vec<usize>>(), |&j| {
            put(&src, &format!("new/added-{j}"), &object(20_000 + j, 1))
        });
        let deleted: Vec<String> = (0..30).map(|j| keys[j * 97 + 13].0.clone()).collect();
        parallel(&deleted, |k| {
            src.block_on(
                src.client()
                    .delete_object()
                    .bucket(&src.location().bucket)
                    .key(src.location().key(k))
                    .send(),
            )
            .unwrap();
        });

        let gets_before = src.get_requests();
        let downloads_before = src.objects_downloaded();
        let t = Instant::now();
        let second = backup(&r, &src);
        let second_s = t.elapsed().as_secs_f64();
        assert_eq!(second.parent, Some(first.snapshot_id));
        assert_eq!(
            src.get_requests() - gets_before,
            70,
            "only changed objects downloaded"
        );
        assert_eq!(src.objects_downloaded() - downloads_before, 70);
        assert_eq!(second.summary.files_unchanged, 10_000 - 40 - 30);
        assert_eq!(second.summary.files_changed, 40);
        assert_eq!(second.summary.files_new, 30);
        eprintln!(
            "BENCH bucket backup of 10000 objects: first {first_s:.1}s, incremental (1% changed) {second_s:.1}s"
        );

        let dst = new_bucket("hf-dst", "copy");
        let t = Instant::now();
        let rep = restore(
            &r,
            &second.snapshot,
            &recorded_path(&src.location().bucket, &src.location().prefix),
            &dst,
            &RestoreProgress::default(),
        )
        .unwrap();
        eprintln!(
            "BENCH bucket restore of 10000 objects: {:.1}s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(rep.objects, 10_000);
        let (want, got) = (contents(&src), contents(&dst));
        assert_eq!(want.len(), 10_000);
        assert!(want.contains_key("new/added-3"));
        assert!(!want.contains_key(&deleted[0]));
        assert_eq!(got.len(), want.len());
        for (k, w) in &want {
            assert_eq!(got.get(k), Some(w), "object {k}");
        }
    }

    /// Keys no path can hold as they are round-trip through a snapshot: restored into a
    /// bucket with the same keys, and into a directory with the documented names.
    #[test]
    fn awkward_keys_round_trip() {
        let src = new_bucket("hf-odd", "");
        let keys = [
            "a",
            "a/b",
            "a-c",
            "a.txt",
            "dir/",
            "dir/in",
            "x//y",
            "./z",
            "../up",
            "/lead",
            "ünï/cödé",
            "sp ace/x y",
            "100%",
            "p%2E/q",
            "e/",
        ];
        for (i, k) in keys.iter().enumerate() {
            put(
                &src,
                k,
                &Obj {
                    data: format!("content of {k}").into_bytes(),
                    ctype: Some(format!("text/x-{i}")),
                    meta: [("k".to_string(), format!("v{i}"))].into_iter().collect(),
                },
            );
        }
        let before = contents(&src);
        assert_eq!(
            before.len(),
            keys.len(),
            "the server kept every key: {:?}",
            before.keys()
        );
        let dir = tempfile::tempdir().unwrap();
        let r = repo(&dir.path().join("repo"));
        let snap = backup(&r, &src);
        assert_eq!(snap.summary.files_new, keys.len() as u64);

        let dst = new_bucket("hf-odd-copy", "restored/here");
        restore(
            &r,
            &snap.snapshot,
            &recorded_path(&src.location().bucket, ""),
            &dst,
            &RestoreProgress::default(),
        )
        .unwrap();
        assert_eq!(contents(&dst), before);

        let out = dir.path().join("out");
        holdfast_engine::restorer::restore_snapshot(
            &r,
            snap.snapshot_id,
            &snap.snapshot,
            &holdfast_engine::restorer::RestoreOptions {
                target: out.clone(),
                subpath: None,
                includes: Default::default(),
                excludes: Default::default(),
                owners: false,
            },
            &Default::default(),
        )
        .unwrap();
        let root = out.join("buckets").join(&src.location().bucket);
        for (path, key) in [
            ("a", "a"),
            ("a%/b", "a/b"),
            ("dir/%", "dir/"),
            ("x/%/y", "x//y"),
            ("%2E/z", "./z"),
            ("%2E%2E/up", "../up"),
            ("%/lead", "/lead"),
            ("100%25", "100%"),
        ] {
            assert_eq!(
                std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}")),
                format!("content of {key}").into_bytes()
            );
        }
    }
}
