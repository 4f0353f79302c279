//! A local directory as a backup store (Longhorn's `vfs://` driver).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use super::{check_store_path, BackupStoreDriver, ObjectInfo};
use crate::error::DriverError;

/// Infix of the temporary files `put` renames into place, as Longhorn's fs drivers name them.
const TMP_INFIX: &str = ".tmp.";
/// How many directory levels above a deleted file are removed when emptied
/// (`MaxCleanupLevel` of Longhorn's fs drivers).
const MAX_CLEANUP_LEVEL: usize = 10;

/// A backup store in a local directory (the directory that holds `backupstore/`).
#[derive(Debug, Clone)]
pub struct VfsDriver {
    root: PathBuf,
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

    fn local(&self, path: &str) -> Result<PathBuf, DriverError> {
        check_store_path(path)?;
        Ok(self.root.join(path.trim_end_matches('/')))
    }

    /// Removes the directories above the deleted `file` that are now empty, as Longhorn's fs
    /// drivers do after every removal (`locks/`, `blocks/XX/YY/`, ...): up to
    /// [`MAX_CLEANUP_LEVEL`] levels, never the root nor the `backupstore` directory, and
    /// stopping at the first directory that is not empty.
    async fn remove_empty_parents(&self, file: &Path) {
        let mut dir = file.parent();
        for _ in 0..MAX_CLEANUP_LEVEL {
            let Some(d) = dir else { break };
            if d == self.root
                || !d.starts_with(&self.root)
                || d.file_name() == Some(crate::paths::BACKUPSTORE_BASE.as_ref())
            {
                break;
            }
            // rmdir(2) refuses a directory that is not empty: that is the check.
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
    }
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
        let p = self.local(path)?;
        match tokio::fs::read(&p).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(DriverError::NotFound {
                path: path.to_owned(),
            }),
            Err(e) => Err(io_err("read", &p, e)),
        }
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<(), DriverError> {
        let p = self.local(path)?;
        if let Some(dir) = p.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err("mkdir", dir, e))?;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut tmp = p.clone().into_os_string();
        tmp.push(format!("{TMP_INFIX}{nanos}"));
        let tmp = PathBuf::from(tmp);
        let mut written = tokio::fs::write(&tmp, &data).await;
        if let (Err(e), Some(dir)) = (&written, p.parent()) {
            // A deletion may have removed the directory it emptied between our mkdir and
            // write: make it again, once.
            if e.kind() == ErrorKind::NotFound {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| io_err("mkdir", dir, e))?;
                written = tokio::fs::write(&tmp, &data).await;
            }
        }
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err("write", &tmp, e));
        }
        if let Err(e) = tokio::fs::rename(&tmp, &p).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err("rename", &p, e));
        }
        Ok(())
    }

    async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>, DriverError> {
        let p = self.local(path)?;
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(Some(ObjectInfo {
                size: m.len(),
                modified: m.modified().map_err(|e| io_err("stat", &p, e))?,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p, e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DriverError> {
        let p = self.local(dir)?;
        let mut rd = match tokio::fs::read_dir(&p).await {
            Ok(rd) => rd,
            // Object-store semantics: a missing directory, or a file, has no children.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(io_err("list", &p, e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = rd.next_entry().await.map_err(|e| io_err("list", &p, e))? {
            // Names that are not UTF-8 cannot be Longhorn's; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, paths: &[String]) -> Result<(), DriverError> {
        for path in paths {
            let p = self.local(path)?;
            match tokio::fs::remove_file(&p).await {
                Ok(()) => self.remove_empty_parents(&p).await,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete", &p, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
