//! Typed values of command-line options. Every argument goes through one of these value
//! parsers (or one of clap's) while clap reads the command line, before a repository is
//! opened: a value that is not understood is a usage error (exit code 2) whose message
//! names the option, never a default taken silently.

pub mod duration;

pub use duration::Duration;

use holdfast_engine::checker::ReadData;
use holdfast_engine::filter::PathFilter;
use holdfast_engine::retention::{self, GroupBy};

/// An absolute path (`--device-name`).
pub fn absolute_path(s: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::PathBuf::from(s);
    if p.is_absolute() && p.components().count() > 1 {
        Ok(p)
    } else {
        Err("expected an absolute file path, like /volumes/db".to_string())
    }
}

/// The tags of repeated `--tag` options, each a comma-separated list; empty ones dropped.
pub fn tags(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// `--parent SPEC` as a parent choice: that snapshot, else the automatic one.
pub fn parent_choice(parent: &Option<String>) -> holdfast_engine::backup::ParentChoice {
    use holdfast_engine::backup::ParentChoice;
    match parent {
        Some(spec) => ParentChoice::Id(spec.clone()),
        None => ParentChoice::Auto,
    }
}

/// `--stdin-filename`: a relative path whose components a snapshot can record.
pub fn stdin_filename(s: &str) -> Result<String, String> {
    holdfast_engine::feed::components(s)?;
    Ok(s.trim_matches('/').to_string())
}

/// The byte ranges of a `--changed-extents` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentList(pub Vec<holdfast_engine::image::Extent>);

/// `--changed-extents`: a JSON file of byte ranges, read and checked while the command line
/// is read.
pub fn extents_file(s: &str) -> Result<ExtentList, String> {
    let text = std::fs::read_to_string(s).map_err(|e| format!("cannot read {s}: {e}"))?;
    holdfast_engine::image::parse_extents_json(&text)
        .map(ExtentList)
        .map_err(|e| format!("{s}: {e}"))
}

/// A percentage from 0 to 100, with or without `%` (`--max-unused`).
pub fn percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err("expected a percentage from 0 to 100, like 10 or 2.5".to_string()),
    }
}

/// A `--keep-*` count: a number of snapshots, or `unlimited` (restic's `-1` too).
pub fn count(s: &str) -> Result<u32, String> {
    retention::parse_count(s).map_err(|e| e.to_string())
}

/// `--group-by`: `host`, `paths` and/or `tags`, comma-separated; `""` for one group.
pub fn group_by(s: &str) -> Result<GroupBy, String> {
    s.parse::<GroupBy>().map_err(|e| e.to_string())
}

/// Tags that must all be present: a comma-separated list (`--keep-tag a,b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList(pub Vec<String>);

/// Parses a [`TagList`]; it must name at least one tag.
pub fn tag_list(s: &str) -> Result<TagList, String> {
    let tags: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    if tags.is_empty() {
        return Err("give at least one tag (several, comma-separated, must all be present)".into());
    }
    Ok(TagList(tags))
}

/// `--read-data-subset`: `n/m` or `p%`.
pub fn read_data_subset(s: &str) -> Result<ReadData, String> {
    ReadData::parse_subset(s)
}

/// An include or exclude pattern: checked to compile, kept as written.
pub fn pattern(s: &str) -> Result<String, String> {
    PathFilter::new(&[s]).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// What `restore` restores: `SNAPSHOT` or `SNAPSHOT:/path/inside`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPath {
    /// Snapshot ID, unique prefix or `latest`.
    pub snapshot: String,
    /// The absolute path inside the snapshot, if one was given.
    pub path: Option<Vec<u8>>,
}

/// Parses a [`SnapshotPath`]: the path after `:` must be absolute, as stored.
pub fn snapshot_path(s: &str) -> Result<SnapshotPath, String> {
    let (snapshot, path) = match s.split_once(':') {
        Some((snap, p)) => (snap, Some(p)),
        None => (s, None),
    };
    if snapshot.is_empty() {
        return Err("give a snapshot: an ID, a unique prefix or \"latest\"".to_string());
    }
    if let Some(p) = path {
        if !p.starts_with('/') {
            return Err(
                "the path after ':' must be absolute, as stored in the snapshot (see `holdfast ls`)"
                    .to_string(),
            );
        }
    }
    Ok(SnapshotPath {
        snapshot: snapshot.to_string(),
        path: path.map(|p| p.as_bytes().to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent("10"), Ok(10.0));
        assert_eq!(percent("2.5%"), Ok(2.5));
        assert_eq!(percent("0"), Ok(0.0));
        assert_eq!(percent("100"), Ok(100.0));
        for bad in ["", "-1", "100.5", "NaN", "inf", "ten", "%"] {
            assert!(percent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_lists() {
        assert_eq!(
            tag_list("a, b,,c"),
            Ok(TagList(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert!(tag_list(",").is_err());
        assert!(tag_list("").is_err());
    }

    #[test]
    fn snapshot_paths() {
        assert_eq!(
            snapshot_path("latest"),
            Ok(SnapshotPath {
                snapshot: "latest".into(),
                path: None
            })
        );
        assert_eq!(
            snapshot_path("ab12:/etc/nginx"),
            Ok(SnapshotPath {
                snapshot: "ab12".into(),
                path: Some(b"/etc/nginx".to_vec())
            })
        );
        assert!(snapshot_path("latest:etc").is_err());
        assert!(snapshot_path("latest:").is_err());
        assert!(snapshot_path(":/etc").is_err());
        assert!(snapshot_path("").is_err());
    }

    #[test]
    fn other_parsers() {
        assert_eq!(count("unlimited"), Ok(retention::UNLIMITED));
        assert!(count("-3").is_err());
        assert!(group_by("host,paths").is_ok());
        assert!(group_by("color").is_err());
        assert!(read_data_subset("1/5").is_ok());
        assert!(read_data_subset("6/5").is_err());
        assert_eq!(pattern("*.cache"), Ok("*.cache".to_string()));
        assert!(pattern("a[b").unwrap_err().contains("a[b"));
    }
}
