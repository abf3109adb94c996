//! `holdfast bucket backup` and `holdfast bucket restore` (issue 12, object-store buckets),
//! driving the real binary. The `rgw::` tests need the Ceph RGW test server: a plain `cargo
//! nextest run` leaves them out (`.config/nextest.toml`); `scripts/s3-test-servers.sh start
//! DIR` and `source DIR/env.sh` select them. Selected without the server, they fail.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use holdfast_backend_s3::S3Options;
use holdfast_bucket::Bucket;
use holdfast_e2e::*;

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

/// The RGW credentials (what `scripts/s3-test-servers.sh` sets up).
fn keys() -> (String, String) {
    (
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testtest".into()),
    )
}

/// A new, empty bucket named after `tag`; returns it (its root) and its name.
fn new_bucket(tag: &str) -> (Arc<Bucket>, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let name = format!("{tag}-{}-{nanos}", std::process::id());
    let options = S3Options {
        credentials: Some(keys()),
        region: Some("us-east-1".into()),
        ..S3Options::default()
    };
    let b = Bucket::open(&format!("s3:{}/{name}", endpoint()), options).unwrap();
    b.block_on(b.client().create_bucket().bucket(&name).send())
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    (Arc::new(b), name)
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
        .key(key)
        .set_content_type(o.ctype.clone())
        .set_metadata(Some(o.meta.clone().into_iter().collect()))
        .body(ByteStream::from(o.data.clone()));
    b.block_on(req.send())
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn delete(b: &Bucket, key: &str) {
    b.block_on(
        b.client()
            .delete_object()
            .bucket(&b.location().bucket)
            .key(key)
            .send(),
    )
    .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
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

/// Every object below `prefix` (`""` or ending in `/`), by key relative to it.
fn contents(b: &Bucket, prefix: &str) -> BTreeMap<String, Obj> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = b
            .block_on(
                b.client()
                    .list_objects_v2()
                    .bucket(&b.location().bucket)
                    .prefix(prefix)
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
            .insert(k[prefix.len()..].to_string(), Obj { data, ctype, meta });
    });
    out.into_inner().unwrap()
}

/// The `i`th object of the test bucket, in `version`.
fn object(i: usize, version: u8) -> Obj {
    let mut meta = BTreeMap::new();
    if i % 5 == 0 {
        meta.insert("idx".into(), i.to_string());
        meta.insert("owner".into(), format!("team-{}", i % 3));
    }
    Obj {
        data: format!("object {i} version {version}\n")
            .repeat(1 + i % 13)
            .into_bytes(),
        ctype: Some(match i % 3 {
            0 => "text/plain".into(),
            1 => "image/jpeg".into(),
            _ => format!("application/x-test-{i}"),
        }),
        meta,
    }
}

/// Keys no path can hold as they are, and their files in a directory restore (SPEC.md
/// §9.3; README "Buckets").
const AWKWARD: [(&str, &str); 8] = [
    ("a", "a"),
    ("a/b", "a%/b"),
    ("dir/", "dir/%"),
    ("x//y", "x/%/y"),
    ("./z", "%2E/z"),
    ("../up", "%2E%2E/up"),
    ("100%", "100%25"),
    ("sp ace/ünï cödé", "sp ace/ünï cödé"),
];

/// Tags of the snapshot `id` in `snapshots --json`.
fn snapshot_of<'a>(snaps: &'a [Value], id: &str) -> &'a Value {
    snaps
        .iter()
        .find(|s| s["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("snapshot {id} not listed: {snaps:?}"))
}

fn tags(s: &Value) -> Vec<String> {
    s["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags: {s}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// `bucket restore` refuses a snapshot that is no bucket backup, and a path outside the
/// bucket backup, before it contacts the target (nothing listens there).
#[test]
fn bucket_restore_refuses_what_is_no_bucket_backup() {
    let repo = Repo::new();
    let src = repo.scratch().join("files");
    write_file(&src.join("a.txt"), b"alpha");
    repo.backup(&[&src], &["--tag", "bucket=lie"]);
    let target = "s3:http://127.0.0.1:1/target";
    let run = repo.cmd(&["bucket", "restore", "latest", target]);
    run.assert_code(exit::FAILURE)
        .assert_stderr_contains("is not a bucket backup")
        .assert_stderr_contains(&src.display().to_string())
        .assert_stderr_contains("holdfast restore");
    let run = repo.cmd(&["bucket", "restore", "latest:/etc", target]);
    run.assert_code(exit::FAILURE)
        .assert_stderr_contains("is not a bucket backup");
    // A relative path is a usage error, as for `restore`.
    repo.cmd(&["bucket", "restore", "latest:etc", target])
        .assert_code(exit::USAGE);
    // A location that is not one.
    repo.cmd(&["bucket", "backup", "/not/s3"])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("s3:");
}

mod rgw {
    use super::*;

    /// ~500 objects (awkward keys, content types, user metadata) backed up with `holdfast
    /// bucket backup`; 5 modified, 3 added, 2 deleted; the second backup's parent is the
    /// first (automatic choice by host and bucket path) and it downloads only the 8 new or
    /// modified objects; both are tagged kind=bucket and bucket=NAME. `bucket restore`
    /// into another bucket gives every key its bytes, content type and metadata;
    /// `restore` into a directory gives the documented file names.
    #[test]
    fn backup_incremental_restore_into_bucket_and_directory() {
        let (src, name) = new_bucket("hf-cli-src");
        let mut want: Vec<(String, Obj)> = (0..490)
            .map(|i| (format!("d{:02}/obj-{i:04}.dat", i % 17), object(i, 1)))
            .collect();
        for (i, (k, _)) in AWKWARD.iter().enumerate() {
            want.push((k.to_string(), object(1000 + i, 1)));
        }
        parallel(&want, |(k, o)| put(&src, k, o));
        let total = want.len() as u64;
        assert_eq!(
            contents(&src, "").len() as u64,
            total,
            "the server kept every key"
        );

        let repo = Repo::new();
        let location = format!("s3:{}/{name}", endpoint());
        let host = ["--host", "cluster-a"];
        let first = repo
            .cmd(&[
                "bucket", "backup", &location, host[0], host[1], "--tag", "daily", "--json",
            ])
            .assert_ok()
            .json();
        assert_eq!(first["objects_downloaded"], total, "{first}");
        assert_eq!(first["objects"], total, "{first}");
        assert_eq!(first["summary"]["files_new"], total, "{first}");
        assert_eq!(first["parent"], Value::Null);
        assert_eq!(
            first["paths"],
            serde_json::json!([format!("/buckets/{name}")])
        );

        // Modify 5, add 3, delete 2.
        for i in [0, 100, 200, 300, 400] {
            put(&src, &want[i].0, &object(i, 2));
        }
        for j in 0..3 {
            put(&src, &format!("new/added-{j}"), &object(2000 + j, 1));
        }
        delete(&src, &want[7].0);
        delete(&src, "a/b");

        // Human output: the object counts.
        let second = repo
            .cmd(&["bucket", "backup", &location, host[0], host[1]])
            .assert_ok()
            .stdout_str();
        let now = total + 3 - 2;
        assert!(
            second.contains(&format!("downloaded 8 of {now} objects")),
            "{second}"
        );
        assert!(
            second.contains("Files:       3 new, 5 changed, 491 unchanged"),
            "{second}"
        );
        // JSON: a third backup, nothing changed, downloads nothing.
        let third = repo
            .cmd(&["bucket", "backup", &location, host[0], host[1], "--json"])
            .assert_ok()
            .json();
        assert_eq!(third["objects_downloaded"], 0, "{third}");
        assert_eq!(third["summary"]["files_unchanged"], now, "{third}");

        let snaps = repo.snapshots::<&str>(&[]);
        assert_eq!(snaps.len(), 3);
        let ids: Vec<String> = snaps
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let first_id = first["snapshot_id"].as_str().unwrap();
        let second_snap = snaps
            .iter()
            .find(|s| s["parent"].as_str() == Some(first_id))
            .unwrap_or_else(|| panic!("no snapshot has the first as parent: {snaps:?}"));
        assert_eq!(third["parent"], second_snap["id"], "{third}");
        for id in &ids {
            let s = snapshot_of(&snaps, id);
            let t = tags(s);
            assert!(t.contains(&"kind=bucket".to_string()), "{s}");
            assert!(t.contains(&format!("bucket={name}")), "{s}");
            assert_eq!(s["host"], "cluster-a", "{s}");
        }
        assert!(tags(snapshot_of(&snaps, first_id)).contains(&"daily".to_string()));

        // --force downloads everything again.
        let forced = repo
            .cmd(&[
                "bucket", "backup", &location, host[0], host[1], "--force", "--json",
            ])
            .assert_ok()
            .json();
        assert_eq!(forced["objects_downloaded"], now, "{forced}");

        // Into another bucket, below a prefix.
        let (dst, dst_name) = new_bucket("hf-cli-dst");
        let target = format!("s3:{}/{dst_name}/copy/here", endpoint());
        let restored = repo
            .cmd(&["bucket", "restore", "latest", &target, "--json"])
            .assert_ok()
            .json();
        assert_eq!(restored["objects"], now, "{restored}");
        let (w, got) = (contents(&src, ""), contents(&dst, "copy/here/"));
        assert_eq!(w.len() as u64, now);
        assert!(w.contains_key("new/added-2") && !w.contains_key("a/b"));
        assert_eq!(got.len(), w.len(), "{:?}", got.keys().collect::<Vec<_>>());
        for (k, o) in &w {
            assert_eq!(got.get(k), Some(o), "object {k}");
        }
        // A part of it, human output.
        let part = format!("s3:{}/{dst_name}/part", endpoint());
        let out = repo
            .cmd(&[
                "bucket",
                "restore",
                &format!("{first_id}:/buckets/{name}/d03"),
                &part,
            ])
            .assert_ok()
            .stdout_str();
        let d03 = want.iter().filter(|(k, _)| k.starts_with("d03/")).count();
        assert!(out.contains(&format!(": {d03} objects,")), "{out}");
        assert_eq!(contents(&dst, "part/").len(), d03);
        repo.cmd(&[
            "bucket",
            "restore",
            &format!("latest:/buckets/{name}/no-such-dir"),
            &part,
        ])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("is not in the snapshot");

        // Into a directory: the documented names, content type in an attribute.
        let out_dir = repo.scratch().join("out");
        repo.restore(first_id, &out_dir, &[] as &[&str]).assert_ok();
        let root = out_dir.join("buckets").join(&name);
        for (i, (key, path)) in AWKWARD.iter().enumerate() {
            let p = root.join(path);
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{key}: {}: {e}", p.display()));
            assert_eq!(data, object(1000 + i, 1).data, "{key} at {path}");
        }
        let p = root.join(&want[1].0);
        assert_eq!(std::fs::read(&p).unwrap(), want[1].1.data);
        assert_eq!(
            xattr::get(&p, "user.s3.obj.content-type").unwrap(),
            Some(b"image/jpeg".to_vec())
        );
        assert_eq!(
            xattr::get(root.join("x/%/y"), "user.s3.key").unwrap(),
            Some(b"x//y".to_vec())
        );
    }

    /// Wrong credentials and an endpoint where nothing listens: exit 1, an error that says
    /// what is wrong, and no snapshot.
    #[test]
    fn wrong_credentials_or_unreachable_endpoint_fail_without_snapshot() {
        let (src, name) = new_bucket("hf-cli-creds");
        put(&src, "k", &object(1, 1));
        let repo = Repo::new();
        let location = format!("s3:{}/{name}", endpoint());
        let bad: [(&str, &OsStr); 2] = [
            ("HOLDFAST_BUCKET_ACCESS_KEY_ID", OsStr::new("nobody")),
            ("HOLDFAST_BUCKET_SECRET_ACCESS_KEY", OsStr::new("wrong")),
        ];
        repo.cmd_env(&["bucket", "backup", &location], &bad)
            .assert_code(exit::FAILURE)
            .assert_stderr_contains(&location)
            .assert_stderr_contains("InvalidAccessKeyId")
            .assert_stderr_contains("HOLDFAST_BUCKET_ACCESS_KEY_ID");
        // Unreachable: a port nothing listens on.
        repo.cmd(&["bucket", "backup", "s3:http://127.0.0.1:1/photos"])
            .assert_code(exit::FAILURE)
            .assert_stderr_contains("s3:http://127.0.0.1:1/photos")
            .assert_stderr_contains("onnect");
        // A bucket that does not exist.
        repo.cmd(&[
            "bucket",
            "backup",
            &format!("s3:{}/{name}-gone", endpoint()),
        ])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("no such bucket");
        assert_eq!(repo.snapshots::<&str>(&[]).len(), 0, "no snapshot saved");

        // The right keys through HOLDFAST_BUCKET_*: it works (the AWS variables are wrong).
        let (ak, sk) = keys();
        let good: [(&str, &OsStr); 4] = [
            ("HOLDFAST_BUCKET_ACCESS_KEY_ID", OsStr::new(&ak)),
            ("HOLDFAST_BUCKET_SECRET_ACCESS_KEY", OsStr::new(&sk)),
            ("AWS_ACCESS_KEY_ID", OsStr::new("nobody")),
            ("AWS_SECRET_ACCESS_KEY", OsStr::new("wrong")),
        ];
        let ok = repo.cmd_env(&["bucket", "backup", &location, "--json"], &good);
        assert_eq!(ok.assert_ok().json()["objects_downloaded"], 1);
        // And restoring into a bucket with wrong keys fails with exit 1.
        repo.cmd_env(&["bucket", "restore", "latest", &location], &bad)
            .assert_code(exit::FAILURE)
            .assert_stderr_contains("InvalidAccessKeyId");
    }
}
