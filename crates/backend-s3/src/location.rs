//! Parsing `s3:` repository locations.

use std::fmt;

use crate::S3Error;

/// Where an S3 repository lives: an endpoint (or AWS's own), a bucket and a key prefix.
///
/// Accepted forms:
/// * `s3:http://HOST:PORT/BUCKET[/PREFIX]` and `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`: a
///   custom endpoint (Ceph RGW, MinIO, ...), addressed path-style;
/// * `s3:BUCKET[/PREFIX]` and `s3://BUCKET[/PREFIX]`: AWS S3 with its default endpoint
///   resolution (virtual-hosted style).
///
/// Empty path segments are dropped, so `s3:b//x/` is bucket `b`, prefix `x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `scheme://host[:port]` of a custom endpoint; `None` for AWS.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Parses a location (with its `s3:` scheme).
    pub fn parse(location: &str) -> Result<S3Location, S3Error> {
        let bad = |why: &str| S3Error::InvalidLocation {
            location: location.to_string(),
            why: why.to_string(),
        };
        let rest = location
            .strip_prefix("s3:")
            .ok_or_else(|| bad("it does not start with \"s3:\""))?;
        let (endpoint, path) = if let Some(scheme) = ["http://", "https://"]
            .into_iter()
            .find(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s))
        {
            let after = &rest[scheme.len()..];
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(bad("no host after the scheme"));
            }
            if host.contains(['?', '#', '@']) {
                return Err(bad("the endpoint must be scheme://host[:port] only"));
            }
            (Some(format!("{}{host}", scheme.to_ascii_lowercase())), path)
        } else {
            (None, rest.strip_prefix("//").unwrap_or(rest))
        };
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let bucket = segments
            .next()
            .ok_or_else(|| bad("no bucket name"))?
            .to_string();
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(bad(&format!(
                "bucket name {bucket:?} may hold only letters, digits, '.', '-' and '_'"
            )));
        }
        let prefix = segments.collect::<Vec<_>>().join("/");
        if prefix.chars().any(char::is_control) {
            return Err(bad("control characters in the prefix"));
        }
        Ok(S3Location {
            endpoint,
            bucket,
            prefix,
        })
    }

    /// The object key for a path relative to the repository root.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "s3:{e}/{}", self.bucket)?,
            None => write!(f, "s3:{}", self.bucket)?,
        }
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> S3Location {
        S3Location::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn custom_endpoints() {
        let l = p("s3:http://127.0.0.1:8000/bucket/some/prefix");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "some/prefix");
        assert_eq!(l.key("config/ab"), "some/prefix/config/ab");
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:8000/bucket/some/prefix");

        let l = p("s3:HTTPS://s3.lan/b/");
        assert_eq!(l.endpoint.as_deref(), Some("https://s3.lan"));
        assert_eq!(l.bucket, "b");
        assert_eq!(l.prefix, "");
        assert_eq!(l.key("keys/x"), "keys/x");

        let l = p("s3:http://h:1//b//x//y/");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "x/y"));
    }

    #[test]
    fn aws_locations() {
        for s in ["s3:my-bucket/repo/one", "s3://my-bucket/repo/one"] {
            let l = p(s);
            assert_eq!(l.endpoint, None);
            assert_eq!(l.bucket, "my-bucket");
            assert_eq!(l.prefix, "repo/one");
            assert_eq!(l.to_string(), "s3:my-bucket/repo/one");
        }
        assert_eq!(p("s3:b").prefix, "");
    }

    #[test]
    fn rejects_bad_locations() {
        for s in [
            "http://h/b",
            "s3:",
            "s3:http://",
            "s3:http:///b",
            "s3:http://h:1",
            "s3:http://h:1/",
            "s3:http://user@h/b",
            "s3:bad bucket/x",
            "s3:b/x\ny",
        ] {
            assert!(S3Location::parse(s).is_err(), "{s:?} accepted");
        }
        let e = S3Location::parse("s3:http://h:1/").unwrap_err().to_string();
        assert!(e.contains("no bucket") && e.contains("expected s3:"), "{e}");
    }
}
