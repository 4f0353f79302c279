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
//!
//! Locks outlive the processes that die holding them (SIGKILL, a lost store at release). A
//! lock not refreshed for [`LOCK_DURATION`] is expired: Longhorn ignores it in every check
//! (reference §4.4, step 3), so it holds nothing back, and [`VolumeLock::acquire`] removes
//! the expired locks of its volume before it writes its own, after a second look at each
//! (a live owner refreshes every [`LOCK_REFRESH_INTERVAL`], far inside the expiry; were one
//! merely late, its next refresh rewrites the file). A lock younger than that is never
//! touched, whoever wrote it.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
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
/// How long a release waits for a refresh already sent to finish before it removes the file:
/// a refresh the store completes after the removal would put the lock back.
pub const REFRESH_STOP_WAIT: Duration = Duration::from_secs(10);

/// Timing of the lock protocol (the defaults are Longhorn's), and who takes the locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// Wait before checking for conflicts.
    pub check_wait: Duration,
    /// Refresh period of a held lock.
    pub refresh_interval: Duration,
    /// Age after which another lock is ignored.
    pub expiry: Duration,
    /// Recorded in each lock taken ([`crate::cfg::WRITER_FIELD`], `HOST PID`), so that a
    /// caller that can prove the process gone may remove its lock before it expires
    /// ([`crate::LockEntry::writer`]). `None` writes locks as Longhorn does.
    pub writer: Option<String>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            check_wait: LOCK_CHECK_WAIT_TIME,
            refresh_interval: LOCK_REFRESH_INTERVAL,
            expiry: LOCK_DURATION,
            writer: None,
        }
    }
}

/// A held lock on a backup volume. Call [`VolumeLock::release`]; dropping it without release
/// removes the file in the background when a Tokio runtime is available.
#[derive(Debug)]
pub struct VolumeLock {
    driver: Arc<dyn BackupStoreDriver>,
    path: String,
    refresh: Option<Refresh>,
    released: bool,
}

/// The task that rewrites a held lock, and how to stop it between two rewrites.
#[derive(Debug)]
struct Refresh {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Refresh {
    fn start(
        driver: Arc<dyn BackupStoreDriver>,
        path: String,
        body: Bytes,
        every: Duration,
    ) -> Self {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.notified() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                // Not interrupted by a stop: a rewrite cut off after it was sent could still
                // be carried out by the store after the release removed the file.
                if let Err(e) = driver.put(&path, body.clone()).await {
                    tracing::warn!(lock = %path, error = %e, "failed to refresh backup-store lock");
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the rewrites, waiting (at most [`REFRESH_STOP_WAIT`]) for one under way.
    async fn stop(mut self) {
        self.stop.notify_one();
        if tokio::time::timeout(REFRESH_STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
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

/// The locks of `volume` other than `ours` (`lock-<16 hex>`), each with its server time (a
/// lock released while we look is simply gone: once its read fails, its time is not asked
/// for; on S3, asking about a missing object costs a second request).
async fn scan_locks(
    driver: &dyn BackupStoreDriver,
    volume: &VolumeName,
    ours: Option<&str>,
) -> Result<Vec<Seen>> {
    let dir = locks_dir(volume);
    let mut out = Vec::new();
    for entry in driver.list(&dir).await? {
        let Some(stem) = entry.strip_suffix(LOCK_SUFFIX) else {
            continue;
        };
        if ours == Some(stem) {
            continue;
        }
        let path = format!("{dir}/{entry}");
        let Ok(data) = driver.get(&path).await else {
            continue;
        };
        let Ok(Some(info)) = driver.stat(&path).await else {
            continue;
        };
        let Ok(file) = LockFile::from_json(&data, &path) else {
            continue;
        };
        out.push(Seen {
            file,
            server_time: info.modified,
        });
    }
    Ok(out)
}

/// Whether a lock last written at `server_time` is expired at `now` (Longhorn ignores it).
fn expired(server_time: SystemTime, now: SystemTime, opts: &LockOptions) -> bool {
    now.duration_since(server_time)
        .is_ok_and(|age| age > opts.expiry)
}

/// The first unexpired lock among `seen` of a type other than `lock_type` that has priority
/// over `ours`; with `ours` still unwritten (`None`), the first such lock that is acquired
/// (an acquired lock has priority over any lock not yet acquired).
fn find_conflict(
    seen: Vec<Seen>,
    lock_type: LockType,
    ours: Option<&Seen>,
    opts: &LockOptions,
) -> Option<Seen> {
    let now = SystemTime::now();
    seen.into_iter().find(|other| {
        let has_priority = match ours {
            Some(ours) => priority(other, ours) == Ordering::Less,
            None => other.file.acquired,
        };
        other.file.lock_type != lock_type && !expired(other.server_time, now, opts) && has_priority
    })
}

/// Removes the expired locks among `seen` (each looked at again first: one rewritten since
/// the scan is live and stays) and returns the others.
async fn remove_expired(
    driver: &dyn BackupStoreDriver,
    volume: &VolumeName,
    seen: Vec<Seen>,
    opts: &LockOptions,
) -> Result<Vec<Seen>> {
    let mut live = Vec::with_capacity(seen.len());
    for other in seen {
        let now = SystemTime::now();
        if !expired(other.server_time, now, opts) {
            live.push(other);
            continue;
        }
        let path = lock_path(volume, &other.file.name);
        match driver.stat(&path).await? {
            Some(info) if expired(info.modified, now, opts) => {}
            Some(info) => {
                live.push(Seen {
                    server_time: info.modified,
                    ..other
                });
                continue;
            }
            None => continue,
        }
        driver.delete(std::slice::from_ref(&path)).await?;
        let age = now
            .duration_since(other.server_time)
            .unwrap_or_default()
            .as_secs();
        tracing::info!(
            volume = %volume,
            lock = %other.file.name,
            lock_type = other.file.lock_type.value(),
            age_seconds = age,
            expiry_seconds = opts.expiry.as_secs(),
            "removed an expired backup-store lock (not refreshed since; Longhorn ignores it)"
        );
    }
    Ok(live)
}

impl VolumeLock {
    /// Takes a lock of `lock_type` on `volume`, or fails with [`Error::LockConflict`]: at once,
    /// writing nothing, when a conflicting lock is already acquired; otherwise after writing
    /// ours and waiting `opts.check_wait`, as Longhorn does. Expired locks of the volume (any
    /// type, anyone's) are removed first (see the module).
    pub async fn acquire(
        driver: Arc<dyn BackupStoreDriver>,
        volume: &VolumeName,
        lock_type: LockType,
        opts: &LockOptions,
    ) -> Result<Self> {
        Self::acquire_unless(driver, volume, lock_type, opts, &Notify::new()).await
    }

    /// Starts taking a lock in the background ([`VolumeLock::acquire`]), so that the
    /// protocol's wait passes while the caller does work that needs no lock (reading its
    /// source, reading metadata it checks again under the lock).
    pub fn start(
        driver: Arc<dyn BackupStoreDriver>,
        volume: &VolumeName,
        lock_type: LockType,
        opts: &LockOptions,
    ) -> PendingLock {
        let abandon = Arc::new(Notify::new());
        let (volume, opts, stop) = (volume.clone(), opts.clone(), abandon.clone());
        let task = tokio::spawn(async move {
            Self::acquire_unless(driver, &volume, lock_type, &opts, &stop).await
        });
        PendingLock {
            abandon,
            task: Some(task),
        }
    }

    /// [`VolumeLock::acquire`], given up (our file removed, an error returned) when `abandon`
    /// is notified during the wait.
    async fn acquire_unless(
        driver: Arc<dyn BackupStoreDriver>,
        volume: &VolumeName,
        lock_type: LockType,
        opts: &LockOptions,
        abandon: &Notify,
    ) -> Result<Self> {
        let name = format!("{LOCK_PREFIX}-{}", random_hex16());
        let seen = scan_locks(&*driver, volume, None).await?;
        let seen = remove_expired(&*driver, volume, seen, opts).await?;
        if let Some(other) = find_conflict(seen, lock_type, None, opts) {
            return Err(conflict(volume, &name, lock_type, other));
        }
        let path = lock_path(volume, &name);
        let mut file = LockFile {
            name: name.clone(),
            lock_type,
            acquired: false,
            writer: opts.writer.clone(),
        };
        driver.put(&path, Bytes::from(file.to_json())).await?;
        let mut lock = Self {
            driver: driver.clone(),
            path: path.clone(),
            refresh: None,
            released: false,
        };
        let server_time = match driver.stat(&path).await {
            Ok(Some(i)) => i.modified,
            Ok(None) => SystemTime::now(),
            Err(e) => {
                let _ = lock.release().await;
                return Err(e.into());
            }
        };
        let ours = Seen {
            file: file.clone(),
            server_time,
        };
        let abandoned = tokio::select! {
            _ = tokio::time::sleep(opts.check_wait) => false,
            _ = abandon.notified() => true,
        };
        if abandoned {
            lock.release().await?;
            return Err(Error::Refused {
                volume: volume.to_string(),
                reason: format!("lock {name} given up before it was acquired"),
            });
        }
        let seen = match scan_locks(&*driver, volume, Some(&name)).await {
            Ok(seen) => seen,
            Err(e) => {
                let _ = lock.release().await;
                return Err(e);
            }
        };
        if let Some(other) = find_conflict(seen, lock_type, Some(&ours), opts) {
            lock.release().await?;
            return Err(conflict(volume, &name, lock_type, other));
        }
        file.acquired = true;
        let body = Bytes::from(file.to_json());
        if let Err(e) = driver.put(&path, body.clone()).await {
            let _ = lock.release().await;
            return Err(e.into());
        }
        lock.refresh = Some(Refresh::start(driver, path, body, opts.refresh_interval));
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

    /// Stops refreshing (after a rewrite under way, if any, has finished: otherwise the store
    /// could carry it out after the removal and put the lock back) and removes the lock file.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(refresh) = self.refresh.take() {
            refresh.stop().await;
        }
        self.driver.delete(std::slice::from_ref(&self.path)).await?;
        Ok(())
    }
}

/// A lock being taken in the background ([`VolumeLock::start`]). Use it with
/// [`PendingLock::wait`], or give it up with [`PendingLock::abandon`], which removes whatever
/// it wrote; dropped, it is given up in the background.
#[derive(Debug)]
pub struct PendingLock {
    abandon: Arc<Notify>,
    task: Option<JoinHandle<Result<VolumeLock>>>,
}

impl PendingLock {
    /// The lock, once taken (or why it could not be).
    pub async fn wait(mut self) -> Result<VolumeLock> {
        let task = self.task.take().expect("a pending lock is waited for once");
        task.await.map_err(|e| Error::Task(e.to_string()))?
    }

    /// Gives the lock up: stops the acquisition during its wait, or releases the lock if it
    /// was already taken, and returns once its file is removed.
    pub async fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            give_up(&self.abandon, task).await;
        }
    }
}

/// Stops an acquisition in its wait (or releases the lock it already took), once it ends.
async fn give_up(abandon: &Notify, task: JoinHandle<Result<VolumeLock>>) {
    abandon.notify_one();
    if let Ok(Ok(lock)) = task.await {
        let _ = lock.release().await;
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if let (Some(task), Ok(rt)) = (self.task.take(), tokio::runtime::Handle::try_current()) {
            let abandon = self.abandon.clone();
            rt.spawn(async move { give_up(&abandon, task).await });
        }
    }
}

impl Drop for VolumeLock {
    fn drop(&mut self) {
        if let Some(refresh) = self.refresh.take() {
            refresh.task.abort();
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

    /// Writes a lock file of another process, last written `age` ago.
    fn foreign_lock(
        root: &std::path::Path,
        v: &VolumeName,
        name: &str,
        lock_type: LockType,
        acquired: bool,
        age: Duration,
    ) -> std::path::PathBuf {
        let path = root.join(lock_path(v, name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = LockFile {
            name: name.to_owned(),
            lock_type,
            acquired,
            writer: None,
        };
        std::fs::write(&path, file.to_json()).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    /// A lock not refreshed for longer than LOCK_DURATION (a killed owner's) is removed by
    /// the next acquisition, of any type; a younger one of another process, even one an
    /// instant short of expiry, stays and still excludes.
    #[tokio::test]
    async fn expired_locks_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d: Arc<dyn BackupStoreDriver> = Arc::new(VfsDriver::new(dir.path()).unwrap());
        let v = VolumeName::new("vol").unwrap();
        let stale_backup = foreign_lock(
            dir.path(),
            &v,
            "lock-00000000000000a1",
            LockType::BackupOrRestore,
            true,
            LOCK_DURATION + Duration::from_secs(30),
        );
        let stale_deletion = foreign_lock(
            dir.path(),
            &v,
            "lock-00000000000000a2",
            LockType::Deletion,
            true,
            LOCK_DURATION + Duration::from_secs(1),
        );
        let lock = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &fast())
            .await
            .expect("an expired deletion lock does not exclude");
        assert!(!stale_backup.exists() && !stale_deletion.exists());
        lock.release().await.unwrap();
        let live = foreign_lock(
            dir.path(),
            &v,
            "lock-00000000000000b1",
            LockType::Deletion,
            true,
            LOCK_DURATION - Duration::from_secs(5),
        );
        let err = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &fast())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::LockConflict { other_type: 2, .. }),
            "{err}"
        );
        assert!(
            live.exists(),
            "a live lock of another process is never removed"
        );
    }

    /// A vfs driver on which a lock write, once sent, is carried out by the "store" even when
    /// the client stops waiting for it (as a request already sent to S3 is), after a delay.
    #[derive(Debug)]
    struct SlowWrites {
        inner: Arc<VfsDriver>,
        delay: Duration,
    }

    #[async_trait]
    impl BackupStoreDriver for SlowWrites {
        async fn get(&self, path: &str) -> std::result::Result<Bytes, DriverError> {
            self.inner.get(path).await
        }
        async fn put(&self, path: &str, data: Bytes) -> std::result::Result<(), DriverError> {
            let (inner, path, delay) = (self.inner.clone(), path.to_owned(), self.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.put(&path, data).await
            })
            .await
            .expect("the write task")
        }
        async fn stat(&self, path: &str) -> std::result::Result<Option<ObjectInfo>, DriverError> {
            self.inner.stat(path).await
        }
        async fn list(&self, dir: &str) -> std::result::Result<Vec<String>, DriverError> {
            self.inner.list(dir).await
        }
        async fn delete(&self, paths: &[String]) -> std::result::Result<(), DriverError> {
            self.inner.delete(paths).await
        }
    }

    /// A release while a refresh is under way waits for it before removing the file: a
    /// refresh cut off on our side but carried out by the store afterwards put the lock back
    /// (a failed backup, released while the store was slow, left its lock that way).
    #[tokio::test]
    async fn a_refresh_under_way_does_not_put_a_released_lock_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(SlowWrites {
            inner: Arc::new(VfsDriver::new(dir.path()).unwrap()),
            delay: Duration::from_millis(60),
        });
        let v = VolumeName::new("vol").unwrap();
        let opts = LockOptions {
            check_wait: Duration::from_millis(10),
            refresh_interval: Duration::from_millis(5),
            ..LockOptions::default()
        };
        let lock = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &opts)
            .await
            .unwrap();
        // The first refresh was sent 5 ms after the acquisition and lands 60 ms later.
        tokio::time::sleep(Duration::from_millis(20)).await;
        lock.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            d.list(&locks_dir(&v)).await.unwrap().is_empty(),
            "the released lock is back"
        );
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
