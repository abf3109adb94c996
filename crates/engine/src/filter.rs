//! Include/exclude patterns, with restic's meaning: a pattern without `/` matches any path
//! component's name; a pattern with `/` matches the whole absolute path (`**` crosses
//! directories, `*` does not).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{EngineError, Result};

/// A compiled set of glob patterns.
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    by_name: Option<GlobSet>,
    by_path: Option<GlobSet>,
    count: usize,
}

impl PathFilter {
    /// Compiles patterns; an invalid pattern is an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PathFilter> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut nn, mut np) = (0, 0);
        for p in patterns {
            let p = p.as_ref().trim_end_matches('/');
            if p.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| EngineError::Usage(format!("invalid pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
                np += 1;
            } else {
                names.add(glob);
                nn += 1;
            }
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>> {
            if n == 0 {
                return Ok(None);
            }
            b.build()
                .map(Some)
                .map_err(|e| EngineError::Usage(e.to_string()))
        };
        Ok(PathFilter {
            by_name: build(names, nn)?,
            by_path: build(paths, np)?,
            count: nn + np,
        })
    }

    /// Reads patterns from a file: one per line, `#` starts a comment, blank lines ignored.
    pub fn read_pattern_file(path: &std::path::Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::Usage(format!("cannot read pattern file {}: {e}", path.display()))
        })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether an absolute path (as bytes) or its last component matches.
    pub fn matches(&self, abs_path: &[u8]) -> bool {
        let name = abs_path.rsplit(|&b| b == b'/').next().unwrap_or(abs_path);
        let as_path = |b: &[u8]| -> std::path::PathBuf {
            use std::os::unix::ffi::OsStrExt;
            std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b))
        };
        if let Some(s) = &self.by_name {
            if s.is_match(as_path(name)) {
                return true;
            }
        }
        if let Some(s) = &self.by_path {
            if s.is_match(as_path(abs_path)) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let f = PathFilter::new(&["*.log", "/srv/cache", "/home/**/tmp"]).unwrap();
        assert!(f.matches(b"/a/b/x.log"));
        assert!(!f.matches(b"/a/b/x.log.gz"));
        assert!(f.matches(b"/srv/cache"));
        assert!(!f.matches(b"/srv/cache2"));
        assert!(f.matches(b"/home/u/p/tmp"));
        assert!(!f.matches(b"/home/u/p/tmp2"));
        assert!(PathFilter::new(&["a[b"]).is_err());
        assert!(PathFilter::new::<&str>(&[]).unwrap().is_empty());
    }
}
