//! The storage behind the simulated ceph-csi: plain directories ([`Storage::dir`]) or a real
//! Ceph cluster ([`Storage::ceph`]: RBD images through `rbd-fuse` + loop devices, CephFS through
//! `ceph-fuse`). Every object made is recorded, so that [`Backend::teardown`] (run when the
//! simulator is dropped, also after a failed test) can undo it: lazy unmounts first, then loop
//! devices, FUSE mounts, clones, snapshots and images.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixtures::VolumeKind;

/// Where the simulated ceph-csi keeps volumes and snapshots.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Plain directories under a work directory: a volume is a directory (block: an image
    /// file), a snapshot a full copy taken at snapshot time (`cp -a`), and publishing a volume
    /// into a pod copies it into the pod's kubelet path; a read-write publication is copied
    /// back into the volume when it is unpublished (the pod is gone). Needs no root and no
    /// mounts.
    Dir {
        /// Work directory (snapshots and restored volumes live here).
        work: PathBuf,
    },
    /// A real Ceph cluster (needs root, `rbd`, `rbd-fuse`, `ceph-fuse`, `losetup`, `mkfs.ext4`,
    /// `fsfreeze`).
    Ceph {
        /// The cluster's `ceph.conf` (e.g. `$HOLDFAST_TEST_CEPH_CONF`).
        conf: PathBuf,
        /// Work directory for FUSE mount points.
        work: PathBuf,
        /// RBD pool (created and initialized when missing).
        pool: String,
    },
}

impl Storage {
    /// Plain directories under `work`.
    pub fn dir(work: &Path) -> Storage {
        Storage::Dir {
            work: work.to_path_buf(),
        }
    }

    /// The Ceph cluster of `conf`, RBD pool `rbd`, FUSE mount points under `work`.
    pub fn ceph(conf: &Path, work: &Path) -> Storage {
        Storage::Ceph {
            conf: conf.to_path_buf(),
            work: work.to_path_buf(),
            pool: "rbd".into(),
        }
    }
}

/// A volume on the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Vol {
    /// Unique id (also the image / subvolume name stem).
    pub id: String,
    pub kind: VolumeKind,
    /// Dir: the data's path. RBD: the image name. CephFS: the path below the file system root.
    pub loc: PathBuf,
    /// Whether deleting the volume removes `loc` (not for shallow volumes and Dir sources).
    pub owned: bool,
}

/// A snapshot on the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snap {
    /// The CSI snapshot handle.
    pub handle: String,
    pub kind: VolumeKind,
    /// Dir: the copy's path. RBD: `image@snap`. CephFS: the `.snap/NAME` path below the root.
    pub loc: PathBuf,
}

/// One published volume (what the kubelet's NodePublishVolume left at a target path).
#[derive(Clone, Debug)]
struct Publish {
    vol: String,
    /// The loop device the RBD image is attached to.
    loop_dev: Option<String>,
    /// Whether this publication attached `loop_dev` (and detaches it on unpublish, unless
    /// another publication of the same image still uses it: that one then owns it).
    owns_loop: bool,
    /// Whether the target is a mount point (Ceph) or copied data (Dir).
    mounted: bool,
    /// A mounted file system (fsfreeze applies).
    fs: bool,
    read_only: bool,
}

pub(crate) struct Backend {
    storage: Storage,
    /// Target path -> what is published there.
    publishes: BTreeMap<PathBuf, Publish>,
    /// RBD image -> its rbd-fuse mount directory (the image is the file `<dir>/<image>`).
    fuse: BTreeMap<String, PathBuf>,
    /// The ceph-fuse mount of the CephFS root, once mounted.
    cephfs_root: Option<PathBuf>,
    /// Images, snapshots (`image@snap`, with whether protected) and CephFS dirs made, for
    /// teardown.
    images: Vec<String>,
    snaps: BTreeMap<String, bool>,
    cephfs_dirs: Vec<PathBuf>,
    pool_ready: bool,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Runs a command (under `timeout 120`), failing with its stderr.
fn run(cmd: &str, args: &[&str], env: &[(&str, &Path)]) -> io::Result<String> {
    let mut c = Command::new("timeout");
    c.arg("120").arg(cmd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{cmd}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{cmd} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            match out.status.code() {
                Some(124) => " (timed out)",
                _ => "",
            }
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn is_mountpoint(path: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn lazy_umount(path: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stderr(Stdio::null())
        .status();
}

/// `cp -a SRC DST` (DST must not exist): keeps modes, owners, times, links and xattrs.
fn copy_all(src: &Path, dst: &Path) -> io::Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    run("cp", &["-a", "--reflink=auto", p(src), p(dst)], &[]).map(drop)
}

/// Replaces the data of `dst` (a directory or an image file) with that of `src`, keeping
/// `dst` itself (its inode) in place.
fn copy_back(src: &Path, dst: &Path) -> io::Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dst)?;
        for e in fs::read_dir(dst)? {
            remove_any(&e?.path())?;
        }
        let from = format!("{}/.", p(src));
        run("cp", &["-a", "--reflink=auto", &from, p(dst)], &[]).map(drop)
    } else {
        run("cp", &["-a", "--reflink=auto", p(src), p(dst)], &[]).map(drop)
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Parses a Kubernetes quantity of bytes (`1Gi`, `500M`, `1073741824`).
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

impl Backend {
    pub(crate) fn new(storage: Storage) -> io::Result<Backend> {
        match &storage {
            Storage::Dir { work } => fs::create_dir_all(work)?,
            Storage::Ceph { work, .. } => fs::create_dir_all(work)?,
        }
        Ok(Backend {
            storage,
            publishes: BTreeMap::new(),
            fuse: BTreeMap::new(),
            cephfs_root: None,
            images: Vec::new(),
            snaps: BTreeMap::new(),
            cephfs_dirs: Vec::new(),
            pool_ready: false,
        })
    }

    pub(crate) fn is_ceph(&self) -> bool {
        matches!(self.storage, Storage::Ceph { .. })
    }

    fn work(&self) -> &Path {
        match &self.storage {
            Storage::Dir { work } | Storage::Ceph { work, .. } => work,
        }
    }

    fn conf(&self) -> &Path {
        match &self.storage {
            Storage::Ceph { conf, .. } => conf,
            Storage::Dir { .. } => unreachable!("Ceph only"),
        }
    }

    fn pool(&self) -> String {
        match &self.storage {
            Storage::Ceph { pool, .. } => pool.clone(),
            Storage::Dir { .. } => unreachable!("Ceph only"),
        }
    }

    fn rbd(&self, args: &[&str]) -> io::Result<String> {
        let conf = self.conf().to_path_buf();
        let mut all = vec!["-c", p(&conf)];
        all.extend_from_slice(args);
        run("rbd", &all, &[])
    }

    fn ensure_pool(&mut self) -> io::Result<()> {
        if self.pool_ready {
            return Ok(());
        }
        let pool = self.pool();
        let conf = self.conf().to_path_buf();
        let c = p(&conf);
        let have = run("ceph", &["-c", c, "osd", "pool", "ls"], &[])?;
        if !have.lines().any(|l| l.trim() == pool) {
            run("ceph", &["-c", c, "osd", "pool", "create", &pool, "8"], &[])?;
            run("rbd", &["-c", c, "pool", "init", &pool], &[])?;
        }
        self.pool_ready = true;
        Ok(())
    }

    fn cephfs_root(&mut self) -> io::Result<PathBuf> {
        if let Some(r) = &self.cephfs_root {
            return Ok(r.clone());
        }
        let root = self.work().join("cephfs");
        fs::create_dir_all(&root)?;
        let conf = self.conf().to_path_buf();
        // A pid file of its own: the default one is shared by every client of the cluster,
        // and a second ceph-fuse (another test) would refuse to start.
        let pid = self.work().join("ceph-fuse.pid");
        let pid_opt = format!("--pid-file={}", pid.display());
        run("ceph-fuse", &["-c", p(&conf), &pid_opt, p(&root)], &[])?;
        self.cephfs_root = Some(root.clone());
        Ok(root)
    }

    /// The rbd-fuse file of `image` (one rbd-fuse mount per image, so that unmounting it closes
    /// the image and it can be removed).
    fn image_file(&mut self, image: &str) -> io::Result<PathBuf> {
        if let Some(d) = self.fuse.get(image) {
            return Ok(d.join(image));
        }
        let dir = self.work().join("rbd-fuse").join(image);
        fs::create_dir_all(&dir)?;
        let conf = self.conf().to_path_buf();
        let pool = self.pool();
        run(
            "rbd-fuse",
            &["-c", p(&conf), "-p", &pool, "-r", image, p(&dir)],
            &[],
        )?;
        self.fuse.insert(image.to_string(), dir.clone());
        let file = dir.join(image);
        for _ in 0..100 {
            if file.exists() {
                return Ok(file);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(err(format!("rbd-fuse did not show {}", file.display())))
    }

    fn release_image_file(&mut self, image: &str) {
        if self.publishes.values().any(|pb| pb.vol == image) {
            return;
        }
        if let Some(dir) = self.fuse.remove(image) {
            if run("fusermount3", &["-u", p(&dir)], &[]).is_err() {
                lazy_umount(&dir);
            }
            let _ = fs::remove_dir(&dir);
        }
    }

    /// A new source volume of `bytes` (the app's PVC), published read-write at `target`.
    pub(crate) fn create_source(
        &mut self,
        id: &str,
        kind: VolumeKind,
        bytes: u64,
        target: &Path,
    ) -> io::Result<Vol> {
        if let Storage::Dir { .. } = self.storage {
            // The app pod's path itself is the volume.
            if kind.is_block() {
                if !target.exists() {
                    fs::write(target, [])?;
                }
            } else {
                fs::create_dir_all(target)?;
            }
            return Ok(Vol {
                id: id.into(),
                kind,
                loc: target.to_path_buf(),
                owned: false,
            });
        }
        let vol = self.create_empty(id, kind, bytes)?;
        self.publish(&vol, target, false)?;
        Ok(vol)
    }

    /// ceph-csi's CreateVolume without a data source: a new empty volume `id` of `bytes`.
    /// Dir: an empty directory, or (block) a sparse zero-filled image file of `bytes`. Ceph: an
    /// RBD image of `bytes` (rounded up to MiB, at least 16 MiB) with a fresh ext4 (raw for
    /// block), or an empty subvolume-shaped CephFS directory.
    pub(crate) fn create_empty(
        &mut self,
        id: &str,
        kind: VolumeKind,
        bytes: u64,
    ) -> io::Result<Vol> {
        match (&self.storage, kind) {
            (Storage::Dir { work }, _) => {
                let loc = work.join("volumes").join(id);
                if kind.is_block() {
                    fs::create_dir_all(work.join("volumes"))?;
                    let f = fs::File::create(&loc)?;
                    f.set_len(bytes)?;
                } else {
                    fs::create_dir_all(&loc)?;
                }
                Ok(Vol {
                    id: id.into(),
                    kind,
                    loc,
                    owned: true,
                })
            }
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                let root = self.cephfs_root()?;
                let rel = PathBuf::from(format!(
                    "volumes/csi/csi-vol-{id}/{}",
                    crate::store::new_uid()
                ));
                self.cephfs_dirs
                    .push(rel.parent().expect("parent").to_path_buf());
                fs::create_dir_all(root.join(&rel))?;
                Ok(Vol {
                    id: id.into(),
                    kind,
                    loc: rel,
                    owned: true,
                })
            }
            (Storage::Ceph { .. }, _) => {
                self.ensure_pool()?;
                let pool = self.pool();
                let image = format!("csi-vol-{id}");
                let size = format!("{}M", bytes.div_ceil(1 << 20).max(16));
                self.rbd(&["create", &format!("{pool}/{image}"), "--size", &size])?;
                self.images.push(image.clone());
                if kind == VolumeKind::Rbd {
                    let file = self.image_file(&image)?;
                    let res = run(
                        "mkfs.ext4",
                        &[
                            "-q",
                            "-F",
                            "-E",
                            "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                            p(&file),
                        ],
                        &[],
                    );
                    self.release_image_file(&image);
                    res?;
                }
                Ok(Vol {
                    id: id.into(),
                    kind,
                    loc: PathBuf::from(image),
                    owned: true,
                })
            }
        }
    }

    /// Where the data of `vol` can be read from the host: Dir: the directory or image file;
    /// CephFS: the subvolume's directory in the `ceph-fuse` mount; RBD: the image's `rbd-fuse`
    /// file (raw; an ext4 image for Filesystem volumes), valid until the volume is next
    /// unpublished or deleted.
    pub(crate) fn data_path(&mut self, vol: &Vol) -> io::Result<PathBuf> {
        match (&self.storage, vol.kind) {
            (Storage::Dir { .. }, _) => Ok(vol.loc.clone()),
            (Storage::Ceph { .. }, VolumeKind::CephFs) => Ok(self.cephfs_root()?.join(&vol.loc)),
            (Storage::Ceph { .. }, _) => {
                let image = vol.loc.display().to_string();
                self.image_file(&image)
            }
        }
    }

    /// Takes a snapshot `name` of `vol` (freezing its mounted file systems around it).
    pub(crate) fn snapshot(&mut self, vol: &Vol, name: &str) -> io::Result<Snap> {
        match (&self.storage, vol.kind) {
            (Storage::Dir { work }, _) => {
                let dst = work.join("snapshots").join(name);
                copy_all(&vol.loc, &dst)?;
                Ok(Snap {
                    handle: dst.display().to_string(),
                    kind: vol.kind,
                    loc: dst,
                })
            }
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                let root = self.cephfs_root()?;
                let rel = vol.loc.join(".snap").join(name);
                fs::create_dir(root.join(&rel))?;
                Ok(Snap {
                    handle: format!("{}@{name}", vol.loc.display()),
                    kind: vol.kind,
                    loc: rel,
                })
            }
            (Storage::Ceph { .. }, _) => {
                let image = vol.loc.display().to_string();
                let frozen: Vec<PathBuf> = self
                    .publishes
                    .iter()
                    .filter(|(_, pb)| pb.vol == image && pb.fs && !pb.read_only)
                    .map(|(t, _)| t.clone())
                    // Bind mounts of one file system: freezing it once freezes them all.
                    .take(1)
                    .collect();
                for (t, pb) in &self.publishes {
                    if pb.vol == image && !pb.fs {
                        if let Some(dev) = &pb.loop_dev {
                            let _ = run("blockdev", &["--flushbufs", dev], &[]);
                        }
                        let _ = t;
                    }
                }
                let mut thawed = Vec::new();
                for t in &frozen {
                    run("fsfreeze", &["-f", p(t)], &[])?;
                    thawed.push(t.clone());
                }
                let pool = self.pool();
                let spec = format!("{pool}/{image}@{name}");
                let res = self.rbd(&["snap", "create", "--no-progress", &spec]);
                for t in &thawed {
                    let _ = run("fsfreeze", &["-u", p(t)], &[]);
                }
                res?;
                self.snaps.insert(format!("{image}@{name}"), false);
                Ok(Snap {
                    handle: spec,
                    kind: vol.kind,
                    loc: PathBuf::from(format!("{image}@{name}")),
                })
            }
        }
    }

    /// Removes a snapshot (no volume may still depend on it).
    pub(crate) fn delete_snapshot(&mut self, snap: &Snap) -> io::Result<()> {
        match (&self.storage, snap.kind) {
            (Storage::Dir { .. }, _) => remove_any(&snap.loc),
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                let root = self.cephfs_root()?;
                fs::remove_dir(root.join(&snap.loc))
            }
            (Storage::Ceph { .. }, _) => {
                let key = snap.loc.display().to_string();
                let pool = self.pool();
                let spec = format!("{pool}/{key}");
                if self.snaps.get(&key) == Some(&true) {
                    self.rbd(&["snap", "unprotect", &spec])?;
                    self.snaps.insert(key.clone(), false);
                }
                self.rbd(&["snap", "rm", "--no-progress", &spec])?;
                self.snaps.remove(&key);
                Ok(())
            }
        }
    }

    /// A new volume `id` with the data of `snap`. `shallow`: the snapshot itself, read-only
    /// (ceph-csi's CephFS `backingSnapshot`); otherwise a copy (Dir, CephFS) or an RBD clone.
    pub(crate) fn restore(&mut self, snap: &Snap, id: &str, shallow: bool) -> io::Result<Vol> {
        match (&self.storage, snap.kind) {
            (Storage::Dir { work }, _) => {
                if shallow {
                    return Ok(Vol {
                        id: id.into(),
                        kind: snap.kind,
                        loc: snap.loc.clone(),
                        owned: false,
                    });
                }
                let dst = work.join("volumes").join(id);
                copy_all(&snap.loc, &dst)?;
                Ok(Vol {
                    id: id.into(),
                    kind: snap.kind,
                    loc: dst,
                    owned: true,
                })
            }
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                if shallow {
                    return Ok(Vol {
                        id: id.into(),
                        kind: snap.kind,
                        loc: snap.loc.clone(),
                        owned: false,
                    });
                }
                let root = self.cephfs_root()?;
                let rel = PathBuf::from(format!(
                    "volumes/csi/csi-vol-{id}/{}",
                    crate::store::new_uid()
                ));
                self.cephfs_dirs
                    .push(rel.parent().expect("parent").to_path_buf());
                copy_all(&root.join(&snap.loc), &root.join(&rel))?;
                Ok(Vol {
                    id: id.into(),
                    kind: snap.kind,
                    loc: rel,
                    owned: true,
                })
            }
            (Storage::Ceph { .. }, _) => {
                let key = snap.loc.display().to_string();
                let pool = self.pool();
                if self.snaps.get(&key) == Some(&false) {
                    self.rbd(&["snap", "protect", &format!("{pool}/{key}")])?;
                    self.snaps.insert(key.clone(), true);
                }
                let image = format!("csi-vol-{id}");
                self.rbd(&[
                    "clone",
                    &format!("{pool}/{key}"),
                    &format!("{pool}/{image}"),
                ])?;
                self.images.push(image.clone());
                Ok(Vol {
                    id: id.into(),
                    kind: snap.kind,
                    loc: PathBuf::from(image),
                    owned: true,
                })
            }
        }
    }

    /// Removes a volume (it must not be published).
    pub(crate) fn delete_volume(&mut self, vol: &Vol) -> io::Result<()> {
        if !vol.owned {
            return Ok(());
        }
        match (&self.storage, vol.kind) {
            (Storage::Dir { .. }, _) => remove_any(&vol.loc),
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                let root = self.cephfs_root()?;
                let dir = vol.loc.parent().expect("subvolume group dir").to_path_buf();
                remove_any(&root.join(&dir))?;
                self.cephfs_dirs.retain(|d| *d != dir);
                Ok(())
            }
            (Storage::Ceph { .. }, _) => {
                let image = vol.loc.display().to_string();
                self.release_image_file(&image);
                let pool = self.pool();
                let spec = format!("{pool}/{image}");
                // rbd-fuse closes the image asynchronously after its unmount: retry a while.
                let mut last = Ok(String::new());
                for _ in 0..40 {
                    last = self.rbd(&["rm", "--no-progress", &spec]);
                    if last.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                last?;
                self.images.retain(|i| *i != image);
                Ok(())
            }
        }
    }

    /// NodePublishVolume: `vol` at `target` (a `mount/` directory, or the block device file).
    pub(crate) fn publish(&mut self, vol: &Vol, target: &Path, read_only: bool) -> io::Result<()> {
        let block = vol.kind.is_block();
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let key = vol.loc.display().to_string();
        match (&self.storage, vol.kind) {
            (Storage::Dir { .. }, _) => {
                if vol.loc != target {
                    remove_any(target)?;
                    copy_all(&vol.loc, target)?;
                }
                self.publishes.insert(
                    target.to_path_buf(),
                    Publish {
                        vol: key,
                        loop_dev: None,
                        owns_loop: false,
                        mounted: false,
                        fs: !block,
                        read_only,
                    },
                );
                Ok(())
            }
            (Storage::Ceph { .. }, VolumeKind::CephFs) => {
                let root = self.cephfs_root()?;
                fs::create_dir_all(target)?;
                run(
                    "mount",
                    &["--bind", p(&root.join(&vol.loc)), p(target)],
                    &[],
                )?;
                self.publishes.insert(
                    target.to_path_buf(),
                    Publish {
                        vol: key,
                        loop_dev: None,
                        owns_loop: false,
                        mounted: true,
                        fs: true,
                        read_only,
                    },
                );
                if read_only {
                    run("mount", &["-o", "remount,bind,ro", p(target)], &[])?;
                }
                Ok(())
            }
            (Storage::Ceph { .. }, _) => {
                // Already attached on this "node" (e.g. a source claim the app pod mounts): as
                // the kubelet shares one staging per node, bind-mount what is there rather
                // than attach and mount the image a second time.
                let shared = self
                    .publishes
                    .iter()
                    .find(|(_, pb)| pb.vol == key && pb.mounted && pb.loop_dev.is_some())
                    .map(|(t, pb)| (t.clone(), pb.clone()));
                if let Some((t0, pb0)) = shared {
                    if pb0.read_only && !read_only {
                        return Err(err(format!(
                            "{key} is attached read-only at {}; cannot publish it read-write",
                            t0.display()
                        )));
                    }
                    let dev = pb0.loop_dev.clone().expect("loop device");
                    let from = if block {
                        if !target.exists() {
                            fs::write(target, [])?;
                        }
                        dev.clone()
                    } else {
                        fs::create_dir_all(target)?;
                        p(&t0).to_string()
                    };
                    run("mount", &["--bind", &from, p(target)], &[])?;
                    self.publishes.insert(
                        target.to_path_buf(),
                        Publish {
                            vol: key,
                            loop_dev: Some(dev),
                            owns_loop: false,
                            mounted: true,
                            fs: !block,
                            read_only,
                        },
                    );
                    if read_only && !block {
                        run("mount", &["-o", "remount,bind,ro", p(target)], &[])?;
                    }
                    return Ok(());
                }
                let file = self.image_file(&key)?;
                let mut args = vec!["-f", "--show"];
                if read_only {
                    args.push("-r");
                }
                args.push(p(&file));
                let dev = match run("losetup", &args, &[]) {
                    Ok(d) => d,
                    Err(e) => {
                        self.release_image_file(&key);
                        return Err(e);
                    }
                };
                self.publishes.insert(
                    target.to_path_buf(),
                    Publish {
                        vol: key,
                        loop_dev: Some(dev.clone()),
                        owns_loop: true,
                        mounted: false,
                        fs: !block,
                        read_only,
                    },
                );
                let res = if block {
                    if !target.exists() {
                        fs::write(target, [])?;
                    }
                    run("mount", &["--bind", &dev, p(target)], &[])
                } else {
                    fs::create_dir_all(target)?;
                    let opts = if read_only { "ro,noload" } else { "rw" };
                    run("mount", &["-t", "ext4", "-o", opts, &dev, p(target)], &[])
                };
                match res {
                    Ok(_) => {
                        if let Some(pb) = self.publishes.get_mut(target) {
                            pb.mounted = true;
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let _ = self.unpublish(target);
                        Err(e)
                    }
                }
            }
        }
    }

    /// NodeUnpublishVolume (and, for RBD, unstage: the loop device and the FUSE mount go).
    pub(crate) fn unpublish(&mut self, target: &Path) -> io::Result<()> {
        let Some(pb) = self.publishes.get(target).cloned() else {
            return Ok(());
        };
        if pb.mounted {
            if let Err(e) = run("umount", &[p(target)], &[]) {
                if is_mountpoint(target) {
                    return Err(e);
                }
            }
        } else if !self.is_ceph() && Path::new(&pb.vol) != target {
            if !pb.read_only {
                // Dir: what the pod wrote goes back into the volume.
                copy_back(target, Path::new(&pb.vol))?;
            }
            remove_any(target)?;
        }
        if let (Some(dev), true) = (&pb.loop_dev, pb.owns_loop) {
            let heir = self
                .publishes
                .iter()
                .find(|(t, o)| t.as_path() != target && o.vol == pb.vol && o.loop_dev.is_some())
                .map(|(t, _)| t.clone());
            match heir {
                Some(t) => {
                    if let Some(o) = self.publishes.get_mut(&t) {
                        o.owns_loop = true;
                    }
                }
                None => {
                    run("losetup", &["-d", dev], &[])?;
                }
            }
        }
        self.publishes.remove(target);
        if self.is_ceph() && pb.loop_dev.is_some() {
            self.release_image_file(&pb.vol);
        }
        Ok(())
    }

    /// Targets currently published (besides the given sources).
    pub(crate) fn published(&self) -> Vec<PathBuf> {
        self.publishes.keys().cloned().collect()
    }

    /// Undoes everything this backend made, ignoring errors: unmounts (lazily), loop devices,
    /// FUSE mounts, snapshots, clones, images, CephFS directories.
    pub(crate) fn teardown(&mut self) {
        let targets: Vec<PathBuf> = self.publishes.keys().rev().cloned().collect();
        for t in targets {
            if self.unpublish(&t).is_err() {
                if let Some(pb) = self.publishes.remove(&t) {
                    if pb.mounted {
                        lazy_umount(&t);
                    }
                    if let (Some(dev), true) = (pb.loop_dev, pb.owns_loop) {
                        let _ = run("losetup", &["-d", &dev], &[]);
                    }
                }
            }
        }
        if !self.is_ceph() {
            return;
        }
        for (image, dir) in std::mem::take(&mut self.fuse) {
            if run("fusermount3", &["-u", p(&dir)], &[]).is_err() {
                lazy_umount(&dir);
            }
            let _ = fs::remove_dir(&dir);
            let _ = image;
        }
        let pool = self.pool();
        // Clones before the snapshots they depend on, snapshots before their images.
        let images = std::mem::take(&mut self.images);
        let snapped: Vec<String> = self
            .snaps
            .keys()
            .filter_map(|s| s.split('@').next().map(str::to_string))
            .collect();
        let (parents, clones): (Vec<String>, Vec<String>) =
            images.into_iter().partition(|i| snapped.contains(i));
        for image in clones.iter().rev() {
            for _ in 0..20 {
                if self
                    .rbd(&["rm", "--no-progress", &format!("{pool}/{image}")])
                    .is_ok()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        for (snap, protected) in std::mem::take(&mut self.snaps) {
            let spec = format!("{pool}/{snap}");
            if protected {
                let _ = self.rbd(&["snap", "unprotect", &spec]);
            }
            let _ = self.rbd(&["snap", "rm", "--no-progress", &spec]);
        }
        for image in parents.iter().rev() {
            for _ in 0..20 {
                if self
                    .rbd(&["rm", "--no-progress", &format!("{pool}/{image}")])
                    .is_ok()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        if let Some(root) = self.cephfs_root.take() {
            for d in std::mem::take(&mut self.cephfs_dirs) {
                let dir = root.join(&d);
                // Snapshots first (a directory with snapshots cannot be removed).
                if let Ok(rd) = fs::read_dir(&dir) {
                    for sub in rd.flatten() {
                        if let Ok(snaps) = fs::read_dir(sub.path().join(".snap")) {
                            for s in snaps.flatten() {
                                let _ = fs::remove_dir(s.path());
                            }
                        }
                    }
                }
                let _ = remove_any(&dir);
            }
            if run("fusermount3", &["-u", p(&root)], &[]).is_err() {
                lazy_umount(&root);
            }
            let _ = fs::remove_dir(&root);
        }
    }

    /// What exists on the storage now, for tests: (RBD images, RBD snapshots, CephFS dirs).
    pub(crate) fn ledger(&self) -> (Vec<String>, Vec<String>) {
        (self.images.clone(), self.snaps.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("x"), None);
    }
}
