//! Writer-only credentials for the node agents (issue 14, "a node cannot destroy the
//! repository"), on the real Ceph RGW: the bucket policy shipped in
//! `deploy/s3/holdfast-writer-policy.json` is applied to a bucket, a second RGW user made
//! with `radosgw-admin` gets only what it allows, and the real binary runs backups as that
//! user and prune, forget and check as the bucket's owner (the maintenance job's
//! credentials).
//!
//! The `rgw::` tests need the Ceph RGW test server: a plain `cargo nextest run` leaves them
//! out (`.config/nextest.toml`); `scripts/s3-test-servers.sh start DIR` and `source
//! DIR/env.sh` select them. Selected without the server, they fail.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use holdfast_backend_s3::{S3Backend, S3Options};
use holdfast_e2e::*;
use holdfast_repo::backend::{Backend, FileKind};

/// The bucket owner's keys (the maintenance job's credentials here).
fn admin_keys() -> (String, String) {
    (
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testtest".into()),
    )
}

/// A name unique to this run.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Makes an RGW user with `radosgw-admin`; returns its keys.
fn create_user(uid: &str) -> (String, String) {
    let conf = rgw_env("HOLDFAST_TEST_RGW_CEPH_CONF");
    let (ak, sk) = (format!("{uid}-ak"), format!("{uid}-secret"));
    let out = Command::new("radosgw-admin")
        .args([
            "-c",
            &conf,
            "user",
            "create",
            "--uid",
            uid,
            "--display-name",
            uid,
        ])
        .args(["--access-key", &ak, "--secret-key", &sk])
        .output()
        .unwrap_or_else(|e| panic!("radosgw-admin (package radosgw): {e}"));
    assert!(
        out.status.success(),
        "radosgw-admin user create {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ak, sk)
}

/// A backend on `location` with the given keys (for requests the binary does not make).
fn backend(location: &str, keys: (String, String)) -> S3Backend {
    S3Backend::new(
        location,
        S3Options {
            credentials: Some(keys),
            region: Some("us-east-1".into()),
            max_attempts: 2,
            ..S3Options::default()
        },
    )
    .unwrap()
}

/// The shipped policy, for `bucket`, the writer `uid` and the maintenance user `maint`.
fn policy(bucket: &str, uid: &str, maint: &str) -> String {
    let p = workspace_root().join("deploy/s3/holdfast-writer-policy.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str::<Value>(&text).expect("the shipped policy is JSON");
    text.replace(
        "arn:aws:s3:::holdfast-backups",
        &format!("arn:aws:s3:::{bucket}"),
    )
    .replace("user/holdfast-writer", &format!("user/{uid}"))
    .replace("user/holdfast-maintenance", &format!("user/{maint}"))
}

/// A holdfast repository at an S3 location.
fn s3_repo(location: &str) -> Repo {
    let mut r = Repo::uninit();
    r.path = PathBuf::from(location);
    r
}

/// Runs holdfast as the writer-only user.
fn as_writer<S: AsRef<OsStr>>(r: &Repo, keys: &(String, String), args: &[S]) -> Run {
    r.cmd_env(
        args,
        &[
            ("AWS_ACCESS_KEY_ID", OsStr::new(&keys.0)),
            ("AWS_SECRET_ACCESS_KEY", OsStr::new(&keys.1)),
        ],
    )
}

fn make_source(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("big"), random_bytes(3 << 20, seed)).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            dir.join(format!("f{i}")),
            random_bytes(1000 + i as usize * 100, seed + i),
        )
        .unwrap();
    }
}

/// The HTTP status and error code of a failed SDK call.
fn status_of<T, E: ProvideErrorMetadata>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (u16, String) {
    match r {
        Ok(_) => panic!("the server accepted it"),
        Err(e) => (
            e.raw_response().map_or(0, |r| r.status().as_u16()),
            e.code().unwrap_or("").to_string(),
        ),
    }
}

mod rgw {
    use super::*;

    /// A backup with the writer-only user succeeds (its session files it may not delete
    /// stay, said once); that user's attempts to delete a pack (one or in a batch) or to
    /// replace one with a create-only write fail at the server, and a plain overwrite,
    /// which RGW 16 cannot refuse, leaves the original as an older version of a versioned
    /// bucket that the owner restores; prune and forget as the writer fail at once with
    /// exit 13 and a message pointing at the maintenance credentials; as the owner they
    /// work, the writer's leftover session files go, and `check --read-data` is clean.
    #[test]
    fn writer_only_agents() {
        let endpoint = rgw_env("HOLDFAST_TEST_RGW");
        let bucket = unique("policy");
        let location = format!("s3:{endpoint}/{bucket}/repo");
        let r = s3_repo(&location);
        r.init::<&str>(&[]).assert_ok();
        let admin = backend(&location, admin_keys());
        let uid = unique("writer");
        let writer_keys = create_user(&uid);
        let writer = backend(&location, writer_keys.clone());
        let (client, loc) = (admin.client().clone(), admin.s3_location().clone());
        admin
            .block_on(
                client
                    .put_bucket_policy()
                    .bucket(&bucket)
                    .policy(policy(&bucket, &uid, "test"))
                    .send(),
            )
            .expect("put-bucket-policy");

        // Backups as the writer.
        let src = r.scratch().join("src");
        make_source(&src, 1);
        let run = as_writer(
            &r,
            &writer_keys,
            &["backup", "--json", src.to_str().unwrap()],
        );
        run.assert_ok();
        let err = run.stderr_str();
        assert_eq!(
            err.matches("refused to delete").count(),
            1,
            "the refused deletion of the session file is said once:\n{err}"
        );
        assert!(err.contains("maintenance"), "{err}");
        std::fs::write(src.join("f3"), b"changed").unwrap();
        as_writer(&r, &writer_keys, &["backup", src.to_str().unwrap()]).assert_ok();
        assert_eq!(r.snapshot_ids::<&str>(&[]).len(), 2);
        let left = admin.list(FileKind::Session).unwrap();
        assert!(left.len() >= 2, "the writer's session files stay: {left:?}");

        // The writer cannot delete or replace a pack.
        let packs = writer.list(FileKind::Pack).unwrap();
        let (pack, size) = packs[0];
        let key = loc.key(&FileKind::Pack.path(&pack));
        let (status, code) = status_of(
            writer.block_on(
                writer
                    .client()
                    .delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send(),
            ),
        );
        assert_eq!((status, code.as_str()), (403, "AccessDenied"));
        let objects = aws_sdk_s3::types::Delete::builder()
            .objects(
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(&key)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let (status, _) = status_of(
            writer.block_on(
                writer
                    .client()
                    .delete_objects()
                    .bucket(&bucket)
                    .delete(objects)
                    .send(),
            ),
        );
        assert_eq!(status, 403, "batch delete");
        match writer.remove(FileKind::Pack, &pack) {
            Err(holdfast_repo::Error::DeleteDenied { path, .. }) => {
                assert!(path.contains(&pack.to_hex()), "{path}")
            }
            other => panic!("remove as the writer: {other:?}"),
        }
        let (status, code) = status_of(
            writer.block_on(
                writer
                    .client()
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .if_none_match("*")
                    .body(ByteStream::from_static(b"ransom"))
                    .send(),
            ),
        );
        assert_eq!((status, code.as_str()), (412, "PreconditionFailed"));
        assert_eq!(admin.size(FileKind::Pack, &pack).unwrap(), size);
        // RGW 16.2 ignores If-None-Match on a versioned bucket (measured: the PUT above
        // then succeeds as a new version), so versioning comes on only now.
        admin
            .block_on(
                client
                    .put_bucket_versioning()
                    .bucket(&bucket)
                    .versioning_configuration(
                        aws_sdk_s3::types::VersioningConfiguration::builder()
                            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send(),
            )
            .expect("put-bucket-versioning");
        // Without the condition RGW 16 has nothing to refuse it with (it knows no
        // s3:if-none-match policy key); versioning keeps the original, which the owner
        // brings back by deleting the new version.
        let put = writer
            .block_on(
                writer
                    .client()
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from_static(b"ransom"))
                    .send(),
            )
            .expect("a plain overwrite (RGW 16 accepts it)");
        let bad_version = put.version_id().expect("versioned").to_string();
        r.cmd(&["check", "--read-data"]).assert_failed();
        let (status, _) = status_of(
            writer.block_on(
                writer
                    .client()
                    .delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .version_id(&bad_version)
                    .send(),
            ),
        );
        assert_eq!(status, 403, "the writer cannot delete versions either");
        admin
            .block_on(
                client
                    .delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .version_id(&bad_version)
                    .send(),
            )
            .expect("the owner removes the bad version");
        assert_eq!(admin.size(FileKind::Pack, &pack).unwrap(), size);

        // Prune and forget as the writer: refused at once, nothing done.
        let run = as_writer(&r, &writer_keys, &["prune"]);
        run.assert_code(exit::DELETE_DENIED)
            .assert_stderr_contains("refused to delete")
            .assert_stderr_contains("maintenance job");
        let run = as_writer(&r, &writer_keys, &["forget", "--keep-last", "1"]);
        run.assert_code(exit::DELETE_DENIED)
            .assert_stderr_contains("refused to delete");
        assert_eq!(r.snapshot_ids::<&str>(&[]).len(), 2);
        assert!(
            admin.list(FileKind::GcMarker).unwrap().is_empty(),
            "a refused prune wrote nothing"
        );

        // As the owner (the maintenance job's credentials) they work.
        r.cmd(&["forget", "--keep-last", "1"]).assert_ok();
        let report = r.json(&["prune", "--safety-margin", "0s"]);
        assert!(
            report["report"]["stale_sessions_removed"]
                .as_u64()
                .unwrap_or(0)
                >= 2
                || report["stale_sessions_removed"].as_u64().unwrap_or(0) >= 2,
            "the writer's leftover session files are removed: {report}"
        );
        r.cmd(&["prune", "--safety-margin", "0s"]).assert_ok();
        assert!(admin.list(FileKind::Session).unwrap().is_empty());
        r.cmd(&["check", "--read-data"]).assert_ok();
        let target = r.scratch().join("restored");
        r.restore::<&str>("latest", &target, &[]).assert_ok();
    }

    /// The retention of the object under `key`: (mode, until in seconds since the epoch).
    fn retention(b: &S3Backend, key: &str) -> (String, i64) {
        let loc = b.s3_location().clone();
        let r = b
            .block_on(
                b.client()
                    .get_object_retention()
                    .bucket(&loc.bucket)
                    .key(key)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("get-object-retention {key}: {e:?}"));
        let r = r.retention().expect("a retention");
        (
            r.mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
            r.retain_until_date().expect("a date").secs(),
        )
    }

    fn now_s() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// On a bucket with Object Lock, `HOLDFAST_S3_OBJECT_LOCK_DAYS` gives every object a
    /// retention (GetObjectRetention shows it); a delete of a locked version fails for the
    /// bucket's owner too; prune extends the retention of what stays (a longer period on
    /// the prune's side makes every lock "due"), and its deletes succeed as delete markers
    /// while the locked versions stay; the repository checks clean and restores.
    #[test]
    fn object_lock() {
        let endpoint = rgw_env("HOLDFAST_TEST_RGW");
        let bucket = unique("lock");
        let location = format!("s3:{endpoint}/{bucket}/repo");
        let admin = backend(&location, admin_keys());
        let c = admin.client().clone();
        admin
            .block_on(
                c.create_bucket()
                    .bucket(&bucket)
                    .object_lock_enabled_for_bucket(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("create a bucket with Object Lock: {e:?}"));
        let r = s3_repo(&location);
        let days = |n: &str| {
            vec![(
                "HOLDFAST_S3_OBJECT_LOCK_DAYS".to_string(),
                std::ffi::OsString::from(n),
            )]
        };
        let run = |args: &[&str], env: &[(String, std::ffi::OsString)]| {
            let env: Vec<(&str, &OsStr)> = env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_os_str()))
                .collect();
            r.cmd_env(args, &env)
        };
        run(
            &["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"],
            &days("1"),
        )
        .assert_ok();
        let src = r.scratch().join("src");
        make_source(&src, 5);
        let t0 = now_s();
        run(&["backup", src.to_str().unwrap()], &days("1")).assert_ok();
        std::fs::write(src.join("big"), random_bytes(2 << 20, 99)).unwrap();
        run(&["backup", src.to_str().unwrap()], &days("1")).assert_ok();
        let loc = admin.s3_location().clone();
        let packs = admin.list(FileKind::Pack).unwrap();
        let snaps = admin.list(FileKind::Snapshot).unwrap();
        assert_eq!(snaps.len(), 2);
        for key in [
            loc.key(&FileKind::Pack.path(&packs[0].0)),
            loc.key(&FileKind::Snapshot.path(&snaps[0].0)),
            loc.key(&FileKind::Config.path(&admin.list(FileKind::Config).unwrap()[0].0)),
        ] {
            let (mode, until) = retention(&admin, &key);
            assert_eq!(mode, "GOVERNANCE", "{key}");
            assert!(
                (t0 + 86_400 - 5..now_s() + 86_400 + 5).contains(&until),
                "{key}: retained until {until}, wanted a day from the write"
            );
        }
        // A locked version cannot be deleted, by the owner either.
        let key = loc.key(&FileKind::Pack.path(&packs[0].0));
        let version = admin
            .block_on(c.head_object().bucket(&bucket).key(&key).send())
            .unwrap()
            .version_id()
            .expect("versioned")
            .to_string();
        let (status, _) = status_of(
            admin.block_on(
                c.delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .version_id(&version)
                    .send(),
            ),
        );
        assert_eq!(status, 403);

        // Forget one snapshot, then prune with a 3-day period: every lock ends within half
        // of it, so everything kept is extended; the sweep's deletes succeed (delete
        // markers), the deleted packs' versions stay locked.
        run(&["forget", "--keep-last", "1"], &days("3")).assert_ok();
        let first = run(&["prune", "--safety-margin", "0s", "--json"], &days("3"));
        first.assert_ok();
        let report = first.json();
        let extended = report["report"]["retention_extended"].as_u64().unwrap();
        assert!(extended >= 3, "{report}");
        let second = run(&["prune", "--safety-margin", "0s", "--json"], &days("3"));
        second.assert_ok();
        let report = second.json();
        let deleted = report["report"]["packs_deleted"].as_u64().unwrap();
        assert!(deleted >= 1, "the sweep deleted packs: {report}");
        let after: std::collections::HashSet<_> = admin
            .list(FileKind::Pack)
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        let gone = packs
            .iter()
            .find(|p| !after.contains(&p.0))
            .expect("a pack deleted");
        let gone_key = loc.key(&FileKind::Pack.path(&gone.0));
        let versions = admin
            .block_on(
                c.list_object_versions()
                    .bucket(&bucket)
                    .prefix(&gone_key)
                    .send(),
            )
            .unwrap();
        let kept = versions.versions();
        assert_eq!(
            kept.len(),
            1,
            "the deleted pack's version stays: {versions:?}"
        );
        assert!(!versions.delete_markers().is_empty());
        let kept_version = kept[0].version_id().unwrap().to_string();
        let (status, _) = status_of(
            admin.block_on(
                c.delete_object()
                    .bucket(&bucket)
                    .key(&gone_key)
                    .version_id(&kept_version)
                    .send(),
            ),
        );
        assert_eq!(status, 403, "the deleted pack's version is still locked");
        for p in &after {
            let (_, until) = retention(&admin, &loc.key(&FileKind::Pack.path(p)));
            assert!(
                until > now_s() + 2 * 86_400,
                "pack {p} not extended: {until}"
            );
        }
        r.cmd(&["check", "--read-data"]).assert_ok();
        let target = r.scratch().join("restored");
        r.restore::<&str>("latest", &target, &[]).assert_ok();
    }
}
