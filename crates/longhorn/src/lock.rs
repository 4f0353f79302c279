//! Longhorn's lock protocol on `locks/lock-<16 hex>.lck` (backupstore `lock.go`).
//!
//! Write the lock unacquired, wait, then look at every other lock: a lock of another type that
//! has priority (acquired first, then older, then smaller name) and has not expired wins and we
//! back off. Otherwise mark ours acquired and refresh it until released.
//!
//! The wait ([`LOCK_CHECK_WAIT_TIME`]) is what the protocol costs: it lets a lock another
//! process wrote in the same second as ours (store times have second precision) become
//! visible before we decide. Longhorn waits it on every `Lock()`, and only the operations that
//! change or read block data lock at all (backup and restore: type 1; deletion of a backup or
//! a backup volume: type 2); listing, `inspect` and `head` take no lock. So callers check
//! their request first and lock only to act on it, and [`VolumeLock::acquire`] refuses at once,
//! without writing or waiting, when a conflicting lock is already acquired: such a lock has
//! priority over any lock we could write, so the wait could only end in that refusal.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::cfg::{LockFile, LockType};
use crate::driver::BackupStoreDriver;
use crate::error::{Error, Result};
use crate::names::{random_hex16, VolumeName};
use crate::paths::{lock_path, locks_dir, LOCK_SUFFIX};

/// Prefix of lock names.
pub const LOCK_PREFIX: &str = "lock";
/// A lock not refreshed for this long is ignored (`LOCK_DURATION`).
pub const LOCK_DURATION: Duration = Duration::from_secs(150);
/// How often a held lock is rewritten (`LOCK_REFRESH_INTERVAL`).
pub const LOCK_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Wait between writing a lock and checking for conflicts (`LOCK_CHECK_WAIT_TIME`).
pub const LOCK_CHECK_WAIT_TIME: Duration = Duration::from_secs(2);

/// Timing of the lock protocol; the defaults are Longhorn's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// Wait before checking for conflicts.
    pub check_wait: Duration,
    /// Refresh period of a held lock.
    pub refresh_interval: Duration,
    /// Age after which another lock is ignored.
    pub expiry: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            check_wait: LOCK_CHECK_WAIT_TIME,
            refresh_interval: LOCK_REFRESH_INTERVAL,
            expiry: LOCK_DURATION,
        }
    }
}

/// A held lock on a backup volume. Call [`VolumeLock::release`]; dropping it without release
/// removes the file in the background when a Tokio runtime is available.
#[derive(Debug)]
pub struct VolumeLock {
    driver: Arc<dyn BackupStoreDriver>,
    path: String,
    refresh: Option<JoinHandle<()>>,
    released: bool,
}

struct Seen {
    file: LockFile,
    server_time: SystemTime,
}

/// Longhorn's priority order: acquired first, then the older server time, then the name.
fn priority(a: &Seen, b: &Seen) -> Ordering {
    b.file
        .acquired
        .cmp(&a.file.acquired)
        .then(a.server_time.cmp(&b.server_time))
        .then(a.file.name.cmp(&b.file.name))
}

fn conflict(volume: &VolumeName, name: &str, lock_type: LockType, other: Seen) -> Error {
    Error::LockConflict {
        volume: volume.to_string(),
        lock: name.to_owned(),
        lock_type: lock_type.value(),
        other: other.file.name,
        other_type: other.file.lock_type.value(),
    }
}

/// The first unexpired lock of `volume` of a type other than `lock_type` that has priority
/// over `ours`; with `ours` still unwritten (`None`), the first such lock that is acquired
/// (an acquired lock has priority over any lock not yet acquired).
async fn find_conflict(
    driver: &dyn BackupStoreDriver,
    volume: &VolumeName,
    lock_type: LockType,
    ours: Option<&Seen>,
    opts: &LockOptions,
) -> Result<Option<Seen>> {
    let dir = locks_dir(volume);
    let now = SystemTime::now();
    for entry in driver.list(&dir).await? {
        let Some(stem) = entry.strip_suffix(LOCK_SUFFIX) else {
            continue;
        };
        if ours.is_some_and(|o| stem == o.file.name) {
            continue;
        }
        let path = format!("{dir}/{entry}");
        // A lock released while we look is simply gone: once its read fails, its time is not
        // asked for (on S3, asking about a missing object costs a second request).
        let Ok(data) = driver.get(&path).await else {
            continue;
        };
        let Ok(Some(info)) = driver.stat(&path).await else {
            continue;
        };
        let Ok(file) = LockFile::from_json(&data, &path) else {
            continue;
        };
        let other = Seen {
            file,
            server_time: info.modified,
        };
        let expired = now
            .duration_since(other.server_time)
            .is_ok_and(|age| age > opts.expiry);
        let has_priority = match ours {
            Some(ours) => priority(&other, ours) == Ordering::Less,
            None => other.file.acquired,
        };
        if other.file.lock_type != lock_type && !expired && has_priority {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

impl VolumeLock {
    /// Takes a lock of `lock_type` on `volume`, or fails with [`Error::LockConflict`]: at once,
    /// writing nothing, when a conflicting lock is already acquired; otherwise after writing
    /// ours and waiting `opts.check_wait`, as Longhorn does.
    pub async fn acquire(
        driver: Arc<dyn BackupStoreDriver>,
        volume: &VolumeName,
        lock_type: LockType,
        opts: &LockOptions,
    ) -> Result<Self> {
        let name = format!("{LOCK_PREFIX}-{}", random_hex16());
        if let Some(other) = find_conflict(&*driver, volume, lock_type, None, opts).await? {
            return Err(conflict(volume, &name, lock_type, other));
        }
        let path = lock_path(volume, &name);
        let mut file = LockFile {
            name: name.clone(),
            lock_type,
            acquired: false,
        };
        driver.put(&path, Bytes::from(file.to_json())).await?;
        let mut lock = Self {
            driver: driver.clone(),
            path: path.clone(),
            refresh: None,
            released: false,
        };
        let server_time = match driver.stat(&path).await? {
            Some(i) => i.modified,
            None => SystemTime::now(),
        };
        let ours = Seen {
            file: file.clone(),
            server_time,
        };
        tokio::time::sleep(opts.check_wait).await;
        if let Some(other) = find_conflict(&*driver, volume, lock_type, Some(&ours), opts).await? {
            lock.release().await?;
            return Err(conflict(volume, &name, lock_type, other));
        }
        file.acquired = true;
        let body = Bytes::from(file.to_json());
        driver.put(&path, body.clone()).await?;
        let interval = opts.refresh_interval;
        lock.refresh = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = driver.put(&path, body.clone()).await {
                    tracing::warn!(lock = %path, error = %e, "failed to refresh backup-store lock");
                }
            }
        }));
        Ok(lock)
    }

    /// The lock file's store path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The lock's name (`lock-<16 hex>`, its file name without `.lck`).
    pub fn name(&self) -> &str {
        let file = self.path.rsplit('/').next().unwrap_or(&self.path);
        file.strip_suffix(LOCK_SUFFIX).unwrap_or(file)
    }

    /// Stops refreshing and removes the lock file.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(h) = self.refresh.take() {
            h.abort();
        }
        self.driver.delete(std::slice::from_ref(&self.path)).await?;
        Ok(())
    }
}

impl Drop for VolumeLock {
    fn drop(&mut self) {
        if let Some(h) = self.refresh.take() {
            h.abort();
        }
        if !self.released {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let driver = self.driver.clone();
                let path = self.path.clone();
                rt.spawn(async move {
                    let _ = driver.delete(&[path]).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

    use async_trait::async_trait;

    use super::*;
    use crate::driver::{ObjectInfo, VfsDriver};
    use crate::error::DriverError;

    fn fast() -> LockOptions {
        LockOptions {
            check_wait: Duration::from_millis(10),
            ..LockOptions::default()
        }
    }

    #[tokio::test]
    async fn backup_locks_share_deletion_locks_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let d: Arc<dyn BackupStoreDriver> = Arc::new(VfsDriver::new(dir.path()).unwrap());
        let v = VolumeName::new("vol").unwrap();
        let a = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &fast())
            .await
            .unwrap();
        let b = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &fast())
            .await
            .unwrap();
        let err = VolumeLock::acquire(d.clone(), &v, LockType::Deletion, &fast())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::LockConflict { other_type: 1, .. }),
            "{err}"
        );
        a.release().await.unwrap();
        b.release().await.unwrap();
        let del = VolumeLock::acquire(d.clone(), &v, LockType::Deletion, &fast())
            .await
            .unwrap();
        assert!(
            VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &fast())
                .await
                .is_err()
        );
        del.release().await.unwrap();
        // Every lock file is gone, including the ones that failed.
        assert!(d.list(&locks_dir(&v)).await.unwrap().is_empty());
    }

    /// A lock listed but gone when read: released while another process looks.
    const GONE: &str = "lock-0123456789abcdef.lck";

    /// A vfs driver whose lock listings show [`GONE`] too, counting `stat` calls of objects
    /// that do not exist.
    #[derive(Debug)]
    struct Vanishing {
        inner: VfsDriver,
        missing_stats: AtomicUsize,
    }

    #[async_trait]
    impl BackupStoreDriver for Vanishing {
        async fn get(&self, path: &str) -> std::result::Result<Bytes, DriverError> {
            self.inner.get(path).await
        }
        async fn put(&self, path: &str, data: Bytes) -> std::result::Result<(), DriverError> {
            self.inner.put(path, data).await
        }
        async fn stat(&self, path: &str) -> std::result::Result<Option<ObjectInfo>, DriverError> {
            let info = self.inner.stat(path).await?;
            if info.is_none() {
                self.missing_stats.fetch_add(1, AtomicOrdering::SeqCst);
            }
            Ok(info)
        }
        async fn list(&self, dir: &str) -> std::result::Result<Vec<String>, DriverError> {
            let mut names = self.inner.list(dir).await?;
            if dir.ends_with("/locks") {
                names.push(GONE.to_owned());
            }
            Ok(names)
        }
        async fn delete(&self, paths: &[String]) -> std::result::Result<(), DriverError> {
            self.inner.delete(paths).await
        }
    }

    /// A lock released between the listing and its read is skipped without asking for its
    /// time: on S3 that question about a missing object costs a second request.
    #[tokio::test]
    async fn a_lock_gone_when_read_is_not_asked_about_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(Vanishing {
            inner: VfsDriver::new(dir.path()).unwrap(),
            missing_stats: AtomicUsize::new(0),
        });
        let v = VolumeName::new("vol").unwrap();
        let lock = VolumeLock::acquire(d.clone(), &v, LockType::Deletion, &fast())
            .await
            .unwrap();
        lock.release().await.unwrap();
        assert_eq!(d.missing_stats.load(AtomicOrdering::SeqCst), 0);
    }
}
