//! Opening a repository by its location, as the command-line tool and the Kubernetes
//! agent both do: the backend for the location, the repository with a password, and the
//! local cache.
//!
//! Locations: a directory path, `local:PATH`, or an `s3:` location (see
//! [`holdfast_backend_s3::S3Location`]); any other `SCHEME://` is refused. S3 repositories
//! take their tunables from the `HOLDFAST_S3_*` variables and their credentials from the
//! standard AWS chain ([`holdfast_backend_s3::S3Options::from_env`]).

use std::path::PathBuf;
use std::sync::Arc;

use holdfast_backend_s3::{S3Backend, S3Options};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::throttle::Throttled;
use holdfast_repo::backend::Backend;
use holdfast_repo::cache::Cache;
use holdfast_repo::repository::{KeyHint, Repository};

use crate::error::{EngineError, Result};

/// Which local cache an opened repository uses. Only remote (S3) repositories are cached:
/// a cache of a repository on a local path would only copy it to another local path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheChoice {
    /// Remote repositories are cached in [`holdfast_repo::cache::default_dir`]
    /// (`$XDG_CACHE_HOME/holdfast` or `~/.cache/holdfast`); none if that is unknown.
    #[default]
    Default,
    /// Remote repositories are cached under this directory.
    Dir(PathBuf),
    /// No cache: everything is read from the repository.
    Off,
}

/// Where a repository is and how to open it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The location: a directory path, `local:PATH` or `s3:...`.
    pub location: String,
    /// Region of an S3 repository (`None`: `AWS_REGION` or the AWS profile's, else
    /// `us-east-1`).
    pub s3_region: Option<String>,
    /// The local cache.
    pub cache: CacheChoice,
    /// Upload limit, KiB/s (`None` or 0: none), as restic's `--limit-upload`.
    pub limit_upload_kib: Option<u64>,
    /// Download limit, KiB/s (`None` or 0: none).
    pub limit_download_kib: Option<u64>,
    /// Which key files to try first (`--key-hint`, and this host's per-node key).
    pub key_hint: KeyHint,
    /// Keys for an S3 repository instead of the standard AWS chain: the agent's
    /// maintenance job opens the repository with credentials that may delete, beside the
    /// writer-only ones its backups use.
    pub s3_credentials: Option<S3Keys>,
}

/// An S3 access key and its secret (the secret never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    /// The access key ID.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Keys({}, <secret>)", self.access_key)
    }
}

impl OpenOptions {
    /// Options for `location`, with the default cache and region.
    pub fn new(location: impl Into<String>) -> OpenOptions {
        OpenOptions {
            location: location.into(),
            ..OpenOptions::default()
        }
    }
}

/// The storage backend for `opts.location`, throttled to the options' limits; nothing is
/// read yet (an S3 backend resolves its credentials, failing at once when there are none).
pub fn backend(opts: &OpenOptions) -> Result<Arc<dyn Backend>> {
    Ok(Throttled::wrap(
        unthrottled(opts)?,
        opts.limit_upload_kib,
        opts.limit_download_kib,
    ))
}

fn unthrottled(opts: &OpenOptions) -> Result<Arc<dyn Backend>> {
    let loc = opts.location.as_str();
    if let Some(rest) = loc.strip_prefix("local:") {
        return Ok(Arc::new(LocalBackend::new(rest)));
    }
    if loc.starts_with("s3:") {
        let s3 = |source| EngineError::S3 {
            location: loc.to_string(),
            source,
        };
        let mut options = S3Options::from_env().map_err(s3)?;
        options.region = opts.s3_region.clone();
        if let Some(k) = &opts.s3_credentials {
            options.credentials = Some((k.access_key.clone(), k.secret_key.clone()));
        }
        return Ok(Arc::new(S3Backend::new(loc, options).map_err(s3)?));
    }
    if loc.contains("://") {
        return Err(EngineError::UnknownScheme {
            location: loc.to_string(),
        });
    }
    Ok(Arc::new(LocalBackend::new(loc)))
}

/// Opens the repository at `opts.location` with `password`, without a cache: for
/// operations that verify what the repository itself holds (check, repair).
pub fn open_uncached(opts: &OpenOptions, password: &[u8]) -> Result<Repository> {
    open_uncached_on(backend(opts)?, opts, password)
}

/// Opens the repository at `opts.location` with `password`, with the cache `opts.cache`
/// chooses (see [`CacheChoice`]).
pub fn open(opts: &OpenOptions, password: &[u8]) -> Result<Repository> {
    open_on(backend(opts)?, opts, password)
}

/// [`open_uncached`] on a backend already made by [`backend`] (a caller that asks for the
/// password only once the location is known to be usable).
pub fn open_uncached_on(
    backend: Arc<dyn Backend>,
    opts: &OpenOptions,
    password: &[u8],
) -> Result<Repository> {
    Repository::open_hinted(backend, password, &opts.key_hint).map_err(|source| EngineError::Open {
        location: opts.location.clone(),
        source,
    })
}

/// [`open`] on a backend already made by [`backend`].
pub fn open_on(
    backend: Arc<dyn Backend>,
    opts: &OpenOptions,
    password: &[u8],
) -> Result<Repository> {
    let mut repo = open_uncached_on(backend, opts, password)?;
    let cache = cache_for(opts, &repo);
    repo.set_cache(cache);
    Ok(repo)
}

/// The cache `opts` chooses for an opened repository.
fn cache_for(opts: &OpenOptions, repo: &Repository) -> Option<Cache> {
    if !repo.backend().is_remote() {
        return None;
    }
    let base = match &opts.cache {
        CacheChoice::Off => return None,
        CacheChoice::Dir(d) if !d.as_os_str().is_empty() => d.clone(),
        CacheChoice::Dir(_) | CacheChoice::Default => holdfast_repo::cache::default_dir()?,
    };
    Some(Cache::new(&base, &repo.config().repo_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `e` holds a repository error that `is` accepts.
    fn assert_repo_error(e: &EngineError, is: fn(&holdfast_repo::Error) -> bool) {
        assert!(e.repo_error().is_some_and(is), "{e:?}");
    }

    #[test]
    fn unknown_scheme_is_refused_with_its_location() {
        let e = backend(&OpenOptions::new("ftp://host/repo")).unwrap_err();
        assert!(
            matches!(&e, EngineError::UnknownScheme { location } if location == "ftp://host/repo"),
            "{e:?}"
        );
        assert!(e.to_string().contains("unknown scheme"), "{e}");
        assert!(open(&OpenOptions::new("ftp://host/repo"), b"pw").is_err());
    }

    #[test]
    fn missing_repository_is_typed_and_named() {
        let d = tempfile::tempdir().unwrap();
        let loc = d.path().join("nothing-here").display().to_string();
        for opts in [
            OpenOptions::new(loc.clone()),
            OpenOptions::new(format!("local:{loc}")),
        ] {
            let e = open(&opts, b"pw").unwrap_err();
            assert_repo_error(&e, |r| {
                matches!(r, holdfast_repo::Error::RepositoryNotFound { .. })
            });
            assert_eq!(
                e.to_string(),
                format!("cannot open repository {}", opts.location)
            );
        }
    }

    #[test]
    fn wrong_password_and_local_repositories_have_no_cache() {
        let d = tempfile::tempdir().unwrap();
        crate::testing::repo(d.path());
        let opts = OpenOptions {
            cache: CacheChoice::Dir(d.path().join("cache")),
            ..OpenOptions::new(d.path().display().to_string())
        };
        let e = open(&opts, b"wrong").unwrap_err();
        assert_repo_error(&e, |r| {
            matches!(r, holdfast_repo::Error::WrongPassword { .. })
        });
        let repo = open(&opts, b"pw").unwrap();
        assert!(repo.cache().is_none());
    }

    #[test]
    fn invalid_s3_location_is_an_s3_error() {
        let e = backend(&OpenOptions::new("s3:")).unwrap_err();
        assert!(matches!(e, EngineError::S3 { .. }), "{e:?}");
    }

    #[test]
    fn key_hints_open_a_per_node_key_with_one_derivation() {
        let d = tempfile::tempdir().unwrap();
        let repo = crate::testing::repo(d.path());
        let kdf = holdfast_repo::keyfile::KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        };
        let mut ids = Vec::new();
        for n in 1..=6 {
            let pw = format!("pw-node-{n}");
            ids.push(
                repo.add_key(pw.as_bytes(), kdf, 0, &format!("node-{n}"), "u")
                    .unwrap(),
            );
        }
        let loc = d.path().display().to_string();
        let open_as = |pw: &str, hint: KeyHint| {
            let opts = OpenOptions {
                key_hint: hint,
                ..OpenOptions::new(loc.clone())
            };
            open(&opts, pw.as_bytes()).unwrap()
        };
        // Without a hint: name order, so node 5's key costs one run per key before it.
        let mut by_name = ids.clone();
        by_name.push(repo.key_id());
        by_name.sort();
        let pos = by_name.iter().position(|k| *k == ids[4]).unwrap();
        assert_eq!(
            open_as("pw-node-5", KeyHint::default()).keys_tried(),
            pos + 1
        );
        // The node's name as the host: one run.
        let host = |h: &str| KeyHint {
            host: Some(h.into()),
            ..KeyHint::default()
        };
        let r = open_as("pw-node-5", host("node-5"));
        assert_eq!((r.keys_tried(), r.key_id()), (1, ids[4]));
        // An ID prefix wins over the host; a wrong hint still opens, only slower.
        let by_id = KeyHint {
            id_prefix: Some(ids[2].to_hex()[..8].to_uppercase()),
            host: Some("node-5".into()),
        };
        assert_eq!(open_as("pw-node-3", by_id).keys_tried(), 1);
        assert!(open_as("pw-node-3", host("node-5")).keys_tried() >= 2);
        // Wrong password: every key is still tried.
        let e = open(
            &OpenOptions {
                key_hint: host("node-5"),
                ..OpenOptions::new(loc.clone())
            },
            b"nope",
        )
        .unwrap_err();
        assert_repo_error(&e, |r| {
            matches!(r, holdfast_repo::Error::WrongPassword { tried: 7 })
        });
    }
}
