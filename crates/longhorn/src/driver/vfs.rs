//! A local directory as a backup store (Longhorn's `vfs://` driver).
//!
//! Paths below the root come from outside (volume and backup names, block checksums in cfgs,
//! listings of a store others write to), so no symbolic link below the root is followed: every
//! file and directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, so a
//! link planted in the store leads no read, write, listing or deletion out of it, and none can
//! be swapped in between a check and its use. The root itself, which the user names, may be a
//! link.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::{check_store_path, BackupStoreDriver, ObjectInfo};
use crate::error::DriverError;

/// Infix of the temporary files `put` renames into place, as Longhorn's fs drivers name them.
const TMP_INFIX: &str = ".tmp.";
/// How many directory levels above a deleted file are removed when emptied
/// (`MaxCleanupLevel` of Longhorn's fs drivers).
const MAX_CLEANUP_LEVEL: usize = 10;
/// Permissions of new files before the umask, as `open(2)` gives them.
const FILE_MODE: u32 = 0o666;
/// Permissions of new directories before the umask, as `mkdir -p` gives them.
const DIR_MODE: u32 = 0o777;
/// Flags of every open below the root: no link followed, no descriptor left to children.
const BELOW_ROOT: OFlags = OFlags::NOFOLLOW.union(OFlags::CLOEXEC);
/// What a link below the root is told.
const LINK_REFUSED: &str = "it is a symbolic link below the store's root, which is not \
                            followed: a link planted in the store could lead out of it";
/// What a read of anything but a regular file or a directory is told.
const NOT_REGULAR: &str = "it is not a regular file (a FIFO, device or socket)";
/// The largest file [`VfsDriver::get`] reads whole: the cap of an object read from S3
/// (`objstore::GET_MAX`). No file of a backup store comes near it (a 64 GiB volume's backup
/// cfg is ~3 MiB, a block at most 64 MiB), so a larger one is not read into memory.
const READ_MAX: u64 = 1 << 30;

/// A backup store in a local directory (the directory that holds `backupstore/`).
#[derive(Debug, Clone)]
pub struct VfsDriver {
    root: PathBuf,
}

/// A failed step below the root: the path it was at and why, with the operation named when
/// it becomes a [`DriverError`].
struct Failed {
    path: PathBuf,
    source: std::io::Error,
}

impl Failed {
    fn new(path: &Path, errno: Errno) -> Self {
        Self {
            path: path.to_owned(),
            source: errno.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_owned(),
            source,
        }
    }

    fn is_not_found(&self) -> bool {
        self.source.kind() == ErrorKind::NotFound
    }

    /// The error of `op`; `ELOOP` from an `O_NOFOLLOW` open means a link.
    fn into_error(self, op: &'static str) -> DriverError {
        let source = if self.source.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
            std::io::Error::new(ErrorKind::InvalidInput, LINK_REFUSED)
        } else {
            self.source
        };
        io_err(op, &self.path, source)
    }
}

impl VfsDriver {
    /// A driver rooted at `root`, which must be an existing directory (as Longhorn requires).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, DriverError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Self { root }),
            Ok(_) => Err(DriverError::Io {
                op: "open",
                path: root,
                source: std::io::Error::new(ErrorKind::NotADirectory, "not a directory"),
            }),
            Err(source) => Err(DriverError::Io {
                op: "open",
                path: root,
                source,
            }),
        }
    }

    /// The driver for a `vfs:///DIR/` target.
    pub fn from_target(target: &crate::target::BackupTarget) -> Result<Self, DriverError> {
        match &target.location {
            crate::target::TargetLocation::Vfs { dir } => Self::new(dir),
            _ => Err(DriverError::InvalidPath {
                path: target.url.clone(),
                reason: "not a vfs:// target",
            }),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `/`-separated segments of a checked store path.
    fn segments(path: &str) -> Result<Vec<String>, DriverError> {
        check_store_path(path)?;
        Ok(path
            .trim_end_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect())
    }

    /// Runs `f` with the root and the path's segments on the blocking pool.
    async fn blocking<T, F>(&self, op: &'static str, path: &str, f: F) -> Result<T, DriverError>
    where
        F: FnOnce(&Path, &[String]) -> Result<T, DriverError> + Send + 'static,
        T: Send + 'static,
    {
        let segments = Self::segments(path)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root, &segments))
            .await
            .map_err(|e| io_err(op, &self.root, std::io::Error::other(e)))?
    }
}

/// The directory `root/dirs...`, opened without following a link below the root; with
/// `create`, missing ones are made (as `mkdir -p`).
fn open_dir(root: &Path, dirs: &[String], create: bool) -> Result<OwnedFd, Failed> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The root may be a link: the user named it.
    let mut dir =
        rustix::fs::openat(CWD, root, flags, Mode::empty()).map_err(|e| Failed::new(root, e))?;
    let mut path = root.to_path_buf();
    for name in dirs {
        path.push(name);
        let open = |dir: &OwnedFd| {
            rustix::fs::openat(dir, name.as_str(), flags | BELOW_ROOT, Mode::empty())
        };
        let mut opened = open(&dir);
        if create && matches!(opened, Err(Errno::NOENT)) {
            match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) | Err(Errno::EXIST) => opened = open(&dir),
                Err(e) => return Err(Failed::new(&path, e)),
            }
        }
        dir = match opened {
            Ok(opened) => opened,
            // O_DIRECTORY answers a link with ENOTDIR: it was refused, and is named as a link.
            Err(Errno::NOTDIR) if is_link(&dir, name) => {
                return Err(Failed::new(&path, Errno::LOOP))
            }
            Err(e) => return Err(Failed::new(&path, e)),
        };
    }
    Ok(dir)
}

/// The local path of `segments` below `root`, for messages.
fn local_path(root: &Path, segments: &[String]) -> PathBuf {
    segments.iter().fold(root.to_path_buf(), |p, s| p.join(s))
}

/// The type of the entry `name` of `dir`, a link's own rather than its target's.
fn entry_type(dir: &OwnedFd, name: &str) -> Result<FileType, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode))
}

/// Whether the entry `name` of `dir` is a symbolic link (not: absent or not to be examined).
fn is_link(dir: &OwnedFd, name: &str) -> bool {
    entry_type(dir, name) == Ok(FileType::Symlink)
}

/// The parent directory of the file `segments` names, opened as [`open_dir`] does, and the
/// file's name and path.
fn open_parent<'a>(
    root: &Path,
    segments: &'a [String],
    create: bool,
) -> Result<(OwnedFd, &'a str, PathBuf), Failed> {
    let (name, dirs) = segments.split_last().expect("a checked path has a segment");
    let dir = open_dir(root, dirs, create)?;
    let path = local_path(root, segments);
    Ok((dir, name, path))
}

/// Refuses the entry `name` of `dir` if it is a symbolic link; `Ok(false)` if it is absent.
fn refuse_link(dir: &OwnedFd, name: &str, path: &Path) -> Result<bool, Failed> {
    match entry_type(dir, name) {
        Ok(FileType::Symlink) => Err(Failed::new(path, Errno::LOOP)),
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Failed::new(path, e)),
    }
}

/// Reads the regular file `segments` names.
fn read_file(root: &Path, segments: &[String]) -> Result<Vec<u8>, Failed> {
    let (dir, name, path) = open_parent(root, segments, false)?;
    // NONBLOCK: opening a FIFO does not wait for a writer (it is then refused).
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | BELOW_ROOT;
    let fd =
        rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| Failed::new(&path, e))?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| Failed::io(&path, e))?;
    if !meta.is_file() {
        let source = if meta.is_dir() {
            ErrorKind::IsADirectory.into()
        } else {
            std::io::Error::new(ErrorKind::InvalidInput, NOT_REGULAR)
        };
        return Err(Failed::io(&path, source));
    }
    let too_large = || {
        let reason = format!("it is larger than {READ_MAX} bytes, which no backup store file is");
        Failed::io(&path, std::io::Error::new(ErrorKind::InvalidData, reason))
    };
    if meta.len() > READ_MAX {
        return Err(too_large());
    }
    // The size may change under us: read at most one byte past the cap to tell.
    let mut data = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(READ_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| Failed::io(&path, e))?;
    if data.len() as u64 > READ_MAX {
        return Err(too_large());
    }
    Ok(data)
}

/// Writes `data` to a new temporary file beside the file `segments` names and renames it into
/// place (a link of that name is replaced, never written through).
fn write_file(root: &Path, segments: &[String], data: &[u8]) -> Result<(), Failed> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let (mut dir, name, path) = open_parent(root, segments, true)?;
    let tmp = format!("{name}{TMP_INFIX}{nanos}");
    let tmp_path = path.with_file_name(&tmp);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | BELOW_ROOT;
    let mode = Mode::from_raw_mode(FILE_MODE);
    let fd = match rustix::fs::openat(&dir, tmp.as_str(), flags, mode) {
        // A deletion may have removed the directory it emptied between our mkdir and
        // create: make it again, once.
        Err(Errno::NOENT) => {
            dir = open_parent(root, segments, true)?.0;
            rustix::fs::openat(&dir, tmp.as_str(), flags, mode)
        }
        other => other,
    }
    .map_err(|e| Failed::new(&tmp_path, e))?;
    let written = File::from(fd).write_all(data);
    let renamed = written
        .map_err(|e| Failed::io(&tmp_path, e))
        .and_then(|()| {
            rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).map_err(|e| Failed::new(&path, e))
        });
    if renamed.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    }
    renamed
}

/// The size and modification time of the entry `segments` names; `None` if there is none.
fn stat_file(root: &Path, segments: &[String]) -> Result<Option<ObjectInfo>, Failed> {
    let (dir, name, path) = match open_parent(root, segments, false) {
        Ok(opened) => opened,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    // O_PATH opens nothing for reading (a FIFO does not block); with O_NOFOLLOW it opens a
    // link itself, refused by its type.
    let fd = match rustix::fs::openat(&dir, name, OFlags::PATH | BELOW_ROOT, Mode::empty()) {
        Err(Errno::NOENT) => return Ok(None),
        other => other.map_err(|e| Failed::new(&path, e))?,
    };
    let meta = File::from(fd)
        .metadata()
        .map_err(|e| Failed::io(&path, e))?;
    if meta.file_type().is_symlink() {
        return Err(Failed::new(&path, Errno::LOOP));
    }
    let modified = meta.modified().map_err(|e| Failed::io(&path, e))?;
    Ok(Some(ObjectInfo {
        size: meta.len(),
        modified,
    }))
}

/// The names in the directory `segments` names, links left out; none if it is missing or a
/// file (object-store semantics).
fn list_dir(root: &Path, segments: &[String]) -> Result<Vec<String>, Failed> {
    let dir = match open_dir(root, segments, false) {
        Ok(dir) => dir,
        Err(e)
            if matches!(
                e.source.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let path = local_path(root, segments);
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| Failed::new(&path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Failed::new(&path, e))?;
        // Names that are not UTF-8 cannot be Longhorn's; skip them.
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let link = match entry.file_type() {
            FileType::Symlink => true,
            // A file system that does not say: asked (gone meanwhile: not listed).
            FileType::Unknown => match entry_type(&dir, name) {
                Ok(file_type) => file_type == FileType::Symlink,
                Err(_) => continue,
            },
            _ => false,
        };
        // A link is no object of a store that does not follow them.
        if !link {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes the file `segments` names (absent: nothing to do), then the directories above it
/// that are now empty, as Longhorn's fs drivers do after every removal (`locks/`,
/// `blocks/XX/YY/`, ...): up to [`MAX_CLEANUP_LEVEL`] levels, never the root nor the
/// `backupstore` directory, and stopping at the first directory that is not empty.
fn remove_file(root: &Path, segments: &[String]) -> Result<(), Failed> {
    let (dir, name, path) = match open_parent(root, segments, false) {
        Ok(opened) => opened,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    // A link would only remove itself; it is refused as in every other operation.
    if !refuse_link(&dir, name, &path)? {
        return Ok(());
    }
    match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Failed::new(&path, e)),
    }
    let dirs = &segments[..segments.len() - 1];
    for depth in (0..dirs.len()).rev().take(MAX_CLEANUP_LEVEL) {
        let name = &dirs[depth];
        if name == crate::paths::BACKUPSTORE_BASE {
            break;
        }
        let Ok(parent) = open_dir(root, &dirs[..depth], false) else {
            break;
        };
        // rmdir(2) refuses a directory that is not empty (and a link): that is the check.
        if rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
    Ok(())
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> DriverError {
    DriverError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[async_trait]
impl BackupStoreDriver for VfsDriver {
    async fn get(&self, path: &str) -> Result<Bytes, DriverError> {
        let key = path.to_owned();
        self.blocking("read", path, move |root, segments| {
            match read_file(root, segments) {
                Ok(v) => Ok(Bytes::from(v)),
                Err(e) if e.is_not_found() => Err(DriverError::NotFound { path: key }),
                Err(e) => Err(e.into_error("read")),
            }
        })
        .await
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<(), DriverError> {
        self.blocking("write", path, move |root, segments| {
            write_file(root, segments, &data).map_err(|e| e.into_error("write"))
        })
        .await
    }

    async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>, DriverError> {
        self.blocking("stat", path, |root, segments| {
            stat_file(root, segments).map_err(|e| e.into_error("stat"))
        })
        .await
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DriverError> {
        self.blocking("list", dir, |root, segments| {
            list_dir(root, segments).map_err(|e| e.into_error("list"))
        })
        .await
    }

    async fn delete(&self, paths: &[String]) -> Result<(), DriverError> {
        for path in paths {
            self.blocking("delete", path, |root, segments| {
                remove_file(root, segments).map_err(|e| e.into_error("delete"))
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_larger_than_any_store_file_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let driver = VfsDriver::new(tmp.path()).unwrap();
        driver
            .put("backupstore/volumes/huge.cfg", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        // Sparse: no disk space used, and nothing of it may be read.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join("backupstore/volumes/huge.cfg"))
            .unwrap();
        file.set_len(READ_MAX + 1).unwrap();
        let err = driver
            .get("backupstore/volumes/huge.cfg")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
        assert!(err.contains("huge.cfg"), "{err}");
    }

    #[tokio::test]
    async fn put_get_list_stat_delete() {
        let dir = tempfile::tempdir().unwrap();
        let d = VfsDriver::new(dir.path()).unwrap();
        assert!(d.get("a/b.cfg").await.unwrap_err().is_not_found());
        d.put("a/b.cfg", Bytes::from_static(b"one")).await.unwrap();
        d.put("a/b.cfg", Bytes::from_static(b"two!")).await.unwrap();
        assert_eq!(&d.get("a/b.cfg").await.unwrap()[..], b"two!");
        assert_eq!(d.size("a/b.cfg").await.unwrap(), 4);
        assert!(d.exists("a/b.cfg").await.unwrap());
        // No temporary file is left behind.
        assert_eq!(d.list("a").await.unwrap(), vec!["b.cfg".to_string()]);
        assert_eq!(d.list("a/").await.unwrap(), vec!["b.cfg".to_string()]);
        assert!(d.list("missing").await.unwrap().is_empty());
        assert!(d.list("a/b.cfg").await.unwrap().is_empty());
        d.delete(&["a/b.cfg".into(), "a/none".into()])
            .await
            .unwrap();
        assert!(!d.exists("a/b.cfg").await.unwrap());
        assert!(d.get("../etc/passwd").await.is_err());
        // The directory it emptied went with the file, as Longhorn's driver removes it.
        assert!(!dir.path().join("a").exists());
        assert!(d.put("/abs", Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn deletions_remove_the_directories_they_empty_up_to_backupstore() {
        let dir = tempfile::tempdir().unwrap();
        let d = VfsDriver::new(dir.path()).unwrap();
        let vol = "backupstore/volumes/47/e3/vol";
        let (lock, block, other, cfg) = (
            format!("{vol}/locks/lock-0123456789abcdef.lck"),
            format!("{vol}/blocks/ab/cd/abcd.blk"),
            format!("{vol}/blocks/ab/ef/abef.blk"),
            format!("{vol}/volume.cfg"),
        );
        for p in [&lock, &block, &other, &cfg] {
            d.put(p, Bytes::from_static(b"x")).await.unwrap();
        }
        d.delete(&[lock.clone(), block.clone()]).await.unwrap();
        let root = dir.path();
        assert!(!root.join(format!("{vol}/locks")).exists());
        assert!(!root.join(format!("{vol}/blocks/ab/cd")).exists());
        // Not empty: kept.
        assert!(root.join(format!("{vol}/blocks/ab/ef")).exists());
        d.delete(&[other.clone(), cfg.clone()]).await.unwrap();
        // Everything up to, not including, `backupstore`.
        assert!(!root.join("backupstore/volumes").exists());
        assert!(root.join("backupstore").is_dir());
        // A put after its directory went makes it again.
        d.put(&lock, Bytes::from_static(b"y")).await.unwrap();
        assert_eq!(&d.get(&lock).await.unwrap()[..], b"y");
    }

    /// A link planted below the root, to a directory or a file outside, leads no read, write,
    /// listing or deletion out of it; the root itself may be a link.
    #[tokio::test]
    async fn links_below_the_root_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("locks")).unwrap();
        std::fs::write(outside.join("volume.cfg"), b"not yours").unwrap();
        std::fs::write(outside.join("locks/x.lck"), b"not yours").unwrap();
        let real_root = tmp.path().join("store");
        let vols = real_root.join("backupstore/volumes/47/e3");
        std::fs::create_dir_all(vols.join("vol/blocks/ab/cd")).unwrap();
        std::fs::write(vols.join("vol/volume.cfg"), b"{}").unwrap();
        // A volume directory that is a link out, and a block that is one.
        std::os::unix::fs::symlink(&outside, vols.join("evil")).unwrap();
        let block = vols.join("vol/blocks/ab/cd/abcd.blk");
        std::os::unix::fs::symlink(outside.join("volume.cfg"), &block).unwrap();
        let root = tmp.path().join("store-link");
        std::os::unix::fs::symlink(&real_root, &root).unwrap();
        let d = VfsDriver::new(&root).unwrap();
        let vol = "backupstore/volumes/47/e3/vol";
        let evil = "backupstore/volumes/47/e3/evil";

        assert_eq!(
            &d.get(&format!("{vol}/volume.cfg")).await.unwrap()[..],
            b"{}"
        );
        let refused = |what: &str, e: DriverError| {
            let text = e.to_string();
            assert!(text.contains("symbolic link"), "{what}: {text}");
        };
        for path in [
            format!("{evil}/volume.cfg"),
            format!("{vol}/blocks/ab/cd/abcd.blk"),
        ] {
            refused(&path, d.get(&path).await.unwrap_err());
            refused(&path, d.stat(&path).await.unwrap_err());
            refused(
                &path,
                d.delete(std::slice::from_ref(&path)).await.unwrap_err(),
            );
        }
        refused(evil, d.list(evil).await.unwrap_err());
        let lock = format!("{evil}/locks/x.lck");
        refused(
            &lock,
            d.delete(std::slice::from_ref(&lock)).await.unwrap_err(),
        );
        let planted = format!("{evil}/backups/backup_b.cfg");
        refused(
            &planted,
            d.put(&planted, Bytes::from_static(b"x")).await.unwrap_err(),
        );
        // A link is no entry of a listing; a put in its place replaces it, never writes
        // through it.
        assert_eq!(
            d.list("backupstore/volumes/47/e3").await.unwrap(),
            vec!["vol".to_string()]
        );
        assert!(d
            .list(&format!("{vol}/blocks/ab/cd"))
            .await
            .unwrap()
            .is_empty());
        let block_key = format!("{vol}/blocks/ab/cd/abcd.blk");
        d.put(&block_key, Bytes::from_static(b"block"))
            .await
            .unwrap();
        assert!(!block.symlink_metadata().unwrap().is_symlink());

        assert_eq!(
            std::fs::read(outside.join("volume.cfg")).unwrap(),
            b"not yours"
        );
        assert_eq!(
            std::fs::read(outside.join("locks/x.lck")).unwrap(),
            b"not yours"
        );
        assert!(!outside.join("backups").exists());
        assert!(vols.join("evil").symlink_metadata().unwrap().is_symlink());
    }

    /// A FIFO planted as a cfg is no file to read, and does not block the read.
    #[tokio::test]
    async fn a_fifo_below_the_root_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("volume.cfg");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let d = VfsDriver::new(tmp.path()).unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), d.get("volume.cfg"));
        let err = read
            .await
            .expect("the read blocked")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
