//! Key management: several passwords for one repository, removing keys, changing the
//! password.

use std::ffi::OsStr;
use std::fs;

use holdfast_e2e::*;

const SECOND: &str = "second password";

fn keys(repo: &Repo, password: &str) -> Vec<Value> {
    let run = repo.cmd_env(
        &["key", "list", "--json"],
        &[("HOLDFAST_PASSWORD", OsStr::new(password))],
    );
    run.assert_ok();
    run.json().as_array().expect("key list is an array").clone()
}

fn current_key(list: &[Value]) -> String {
    let cur: Vec<&Value> = list.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(cur.len(), 1, "exactly one key is current: {list:?}");
    cur[0]["id"].as_str().unwrap().to_string()
}

fn with_pw(pw: &str) -> [(&'static str, &OsStr); 1] {
    [("HOLDFAST_PASSWORD", OsStr::new(pw))]
}

/// `key add` adds a password that opens the repository; `key list` shows both keys;
/// the other key can be removed (by ID or prefix); the key in use cannot; after removal
/// the removed password no longer opens the repository.
#[test]
fn key_add_list_remove() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("f"), b"data\n");
    repo.backup(&[&src], &[] as &[&str]);

    let pw_file = work.path().join("newpw");
    fs::write(&pw_file, format!("{SECOND}\n")).unwrap();
    let run = repo.cmd(&[
        OsStr::new("key"),
        OsStr::new("add"),
        OsStr::new("--new-password-file"),
        pw_file.as_os_str(),
        OsStr::new("--json"),
    ]);
    run.assert_ok();
    let added = run.json()["id"]
        .as_str()
        .expect("key add --json gives the id")
        .to_string();
    assert!(is_hex_id(&added), "{run}");

    let list = keys(&repo, PASSWORD);
    assert_eq!(list.len(), 2, "{list:?}");
    let first = current_key(&list);
    assert_ne!(first, added);
    assert_eq!(keys(&repo, SECOND).len(), 2);
    assert_eq!(current_key(&keys(&repo, SECOND)), added);

    // Both passwords read the data.
    for pw in [PASSWORD, SECOND] {
        let f = src.join("f");
        let run = repo.cmd_env(
            &["dump".as_ref(), "latest".as_ref(), f.as_os_str()],
            &with_pw(pw),
        );
        run.assert_ok();
        assert_eq!(run.stdout, b"data\n");
    }

    // The key in use cannot be removed.
    repo.cmd(&["key", "remove", &first])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains_any(&["in use", "current", "refus", "cannot remove"]);
    assert_eq!(keys(&repo, PASSWORD).len(), 2);

    // Remove the second key using the first password, by unique prefix.
    let prefix = &added[..10];
    repo.cmd(&["key", "remove", prefix]).assert_ok();
    let list = keys(&repo, PASSWORD);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(current_key(&list), first);
    repo.cmd_env(&["snapshots"], &with_pw(SECOND))
        .assert_code(exit::WRONG_PASSWORD);
    // Removing it again fails cleanly.
    repo.cmd(&["key", "remove", &added]).assert_failed();
}

/// `key add` takes the new password from HOLDFAST_NEW_PASSWORD too, and refuses to run
/// without a new password (no prompt without a terminal).
#[test]
fn key_add_from_environment_and_without_new_password() {
    let repo = Repo::new();
    repo.cmd(&["key", "add"]).assert_failed();
    assert_eq!(repo.files("keys").len(), 1);
    repo.cmd_env(
        &["key", "add"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new(SECOND))],
    )
    .assert_ok();
    assert_eq!(repo.files("keys").len(), 2);
    repo.cmd_env(&["snapshots"], &with_pw(SECOND)).assert_ok();
}

/// `key passwd` changes the password of the key in use: the old password then fails with
/// 12, the new one opens the repository and reads the data; the number of keys stays.
#[test]
fn key_passwd_changes_password() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("f"), &random_bytes(100_000, 5));
    repo.backup(&[&src], &[] as &[&str]);
    let before = keys(&repo, PASSWORD);
    assert_eq!(before.len(), 1);

    let pw_file = work.path().join("newpw");
    fs::write(&pw_file, SECOND).unwrap();
    repo.cmd(&[
        OsStr::new("key"),
        OsStr::new("passwd"),
        OsStr::new("--new-password-file"),
        pw_file.as_os_str(),
    ])
    .assert_ok();

    repo.cmd(&["snapshots"])
        .assert_code(exit::WRONG_PASSWORD)
        .assert_stderr_contains("password");
    let after = keys(&repo, SECOND);
    assert_eq!(after.len(), 1, "passwd must replace the key: {after:?}");
    let t = tempdir();
    let mut args: Vec<std::ffi::OsString> =
        vec!["restore".into(), "latest".into(), "--target".into()];
    args.push(t.path().into());
    repo.cmd_env(&args, &with_pw(SECOND)).assert_ok();
    assert_trees_equal(&src, &restored(t.path(), &src));

    // A backup with the new password works and deduplicates against the old data.
    let mut c = repo.command(&[
        OsStr::new("backup"),
        OsStr::new("--json"),
        OsStr::new("--force"),
        src.as_os_str(),
    ]);
    c.env("HOLDFAST_PASSWORD", SECOND);
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_ok();
    assert_eq!(run.json()["summary"]["data_blobs_added"], 0, "{run}");
}

/// With two keys, `passwd` replaces only the key in use; the other password still works.
#[test]
fn key_passwd_keeps_other_keys() {
    let repo = Repo::new();
    repo.cmd_env(
        &["key", "add"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new(SECOND))],
    )
    .assert_ok();
    repo.cmd_env(
        &["key", "passwd"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new("third"))],
    )
    .assert_ok();
    assert_eq!(keys(&repo, "third").len(), 2);
    repo.cmd_env(&["snapshots"], &with_pw(SECOND)).assert_ok();
    repo.cmd(&["snapshots"]).assert_code(exit::WRONG_PASSWORD);
}

/// An empty password is refused wherever a new password is set (`init`, `key add`,
/// `key passwd`), from the environment or a file, as the interactive prompt already
/// refuses it: an empty password would leave the repository protected by nothing.
#[test]
fn empty_new_password_is_refused() {
    let work = tempdir();
    let empty_file = work.path().join("empty");
    fs::write(&empty_file, "\n").unwrap();

    let repo = Repo::uninit();
    repo.cmd_env(
        &["init", "--kdf-memory-kib", "8", "--kdf-iterations", "1"],
        &[("HOLDFAST_PASSWORD", OsStr::new(""))],
    )
    .assert_failed()
    .assert_stderr_contains("password");
    assert!(
        repo.files("keys").is_empty(),
        "init stored a key for an empty password"
    );
    let mut c = repo.command(&[
        OsStr::new("init"),
        OsStr::new("--kdf-memory-kib"),
        OsStr::new("8"),
        OsStr::new("--password-file"),
        empty_file.as_os_str(),
    ]);
    c.env_remove("HOLDFAST_PASSWORD");
    run_command(c, COMMAND_TIMEOUT)
        .assert_failed()
        .assert_stderr_contains("password");
    assert!(
        repo.files("keys").is_empty(),
        "init stored a key for an empty password"
    );

    let repo = Repo::new();
    repo.cmd_env(
        &["key", "add"],
        &[("HOLDFAST_NEW_PASSWORD", OsStr::new(""))],
    )
    .assert_failed()
    .assert_stderr_contains("password");
    repo.cmd(&[
        OsStr::new("key"),
        OsStr::new("passwd"),
        OsStr::new("--new-password-file"),
        empty_file.as_os_str(),
    ])
    .assert_failed()
    .assert_stderr_contains("password");
    assert_eq!(repo.files("keys").len(), 1);
    repo.cmd(&["snapshots"]).assert_ok();
    repo.cmd_env(&["snapshots"], &with_pw(""))
        .assert_code(exit::WRONG_PASSWORD);
}

/// One password per node: `key add --host` labels the key, a process whose host is that
/// node opens with it (and the key it opened with is the node's), `key remove --host`
/// removes the node's keys so its password no longer opens, and refuses to remove the
/// keys of the node whose password is in use.
#[test]
fn per_node_keys_are_labelled_hinted_and_removed_by_host() {
    let repo = Repo::new();
    let work = tempdir();
    for node in ["node-a", "node-b"] {
        let f = work.path().join(node);
        fs::write(&f, format!("password of {node}\n")).unwrap();
        repo.cmd(&[
            OsStr::new("key"),
            OsStr::new("add"),
            OsStr::new("--host"),
            OsStr::new(node),
            OsStr::new("--new-password-file"),
            f.as_os_str(),
        ])
        .assert_ok();
    }
    let list = keys(&repo, PASSWORD);
    let hosts: Vec<&str> = list.iter().map(|k| k["host"].as_str().unwrap()).collect();
    assert!(
        hosts.contains(&"node-a") && hosts.contains(&"node-b"),
        "{list:?}"
    );
    let id_of = |host: &str| {
        list.iter().find(|k| k["host"] == host).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Node b, as itself, opens with its key (the host hint); a key hint by ID works too.
    let as_b = [
        ("HOLDFAST_PASSWORD", OsStr::new("password of node-b")),
        ("HOLDFAST_HOST", OsStr::new("node-b")),
    ];
    let run = repo.cmd_env(&["key", "list", "--json"], &as_b);
    assert_eq!(
        current_key(run.assert_ok().json().as_array().unwrap()),
        id_of("node-b")
    );
    let hint = id_of("node-a")[..10].to_string();
    let run = repo.cmd_env(
        &["key", "list", "--json", "--key-hint", &hint],
        &with_pw("password of node-a"),
    );
    assert_eq!(
        current_key(run.assert_ok().json().as_array().unwrap()),
        id_of("node-a")
    );

    // Node b cannot remove its own keys; the admin password removes node a's.
    repo.cmd_env(&["key", "remove", "--host", "node-b"], &as_b)
        .assert_code(exit::USAGE)
        .assert_stderr_contains("another password");
    repo.cmd(&["key", "remove", "--host", "node-a"]).assert_ok();
    repo.cmd(&["key", "remove", "--host", "node-a"])
        .assert_code(exit::USAGE)
        .assert_stderr_contains("no key file is labelled");
    repo.cmd_env(&["snapshots"], &with_pw("password of node-a"))
        .assert_code(exit::WRONG_PASSWORD);
    assert_eq!(keys(&repo, PASSWORD).len(), 2);
    repo.cmd(&["key", "remove"]).assert_code(exit::USAGE);
}
