//! A quick walk over the backup sources that adds up the sizes of their regular files, run
//! beside the backup so that its progress display can show a total and an ETA (restic's
//! scanner does the same). Only an estimate: files change while it runs, and unreadable
//! directories count as empty.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::filter::PathFilter;

/// Adds the size of every regular file below `paths` (not following symlinks, skipping
/// what `excludes` matches, staying on each path's file system if `one_file_system`) to
/// `total`, until done or `stop` is set. Returns the number of files seen.
pub fn scan_total(
    paths: &[PathBuf],
    excludes: &PathFilter,
    one_file_system: bool,
    total: &AtomicU64,
    stop: &AtomicBool,
) -> u64 {
    let mut files = 0;
    for root in paths {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let dev = meta.dev();
        let mut todo = vec![(root.clone(), meta)];
        while let Some((path, meta)) = todo.pop() {
            if stop.load(Ordering::Relaxed) {
                return files;
            }
            if meta.is_file() {
                files += 1;
                total.fetch_add(meta.len(), Ordering::Relaxed);
            } else if meta.is_dir() && (!one_file_system || meta.dev() == dev) {
                let Ok(rd) = std::fs::read_dir(&path) else {
                    continue;
                };
                for e in rd.flatten() {
                    let child = e.path();
                    if !excludes.is_empty() && excludes.matches(child.as_os_str().as_bytes()) {
                        continue;
                    }
                    if let Ok(m) = e.metadata() {
                        todo.push((child, m));
                    }
                }
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_regular_files_and_honours_excludes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/one"), vec![1u8; 1000]).unwrap();
        std::fs::write(d.path().join("a/b/two"), vec![2u8; 2500]).unwrap();
        std::fs::write(d.path().join("a/b/skip.tmp"), vec![3u8; 7000]).unwrap();
        std::os::unix::fs::symlink("one", d.path().join("a/link")).unwrap();
        let total = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let ex = PathFilter::new(&["*.tmp"]).unwrap();
        let n = scan_total(&[d.path().to_path_buf()], &ex, false, &total, &stop);
        assert_eq!((n, total.load(Ordering::Relaxed)), (2, 3500));

        let total = AtomicU64::new(0);
        let n = scan_total(
            &[d.path().join("a/b"), d.path().join("missing")],
            &PathFilter::default(),
            true,
            &total,
            &stop,
        );
        assert_eq!((n, total.load(Ordering::Relaxed)), (2, 9500));

        stop.store(true, Ordering::Relaxed);
        let total = AtomicU64::new(0);
        assert_eq!(
            scan_total(&[d.path().to_path_buf()], &ex, false, &total, &stop),
            0
        );
    }
}
