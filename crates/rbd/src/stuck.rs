//! Zero-copy writes librbd has failed but will never complete: found and reported instead of
//! waited on forever.
//!
//! With zero-copy writes librbd wraps the caller's buffer and holds the write's completion
//! until it has dropped its last reference to that buffer (`UserBufferDeleter`,
//! `librbd/librbd.cc`). When librbd fails a write before it has split it into object requests,
//! the request it fails still holds the buffer, so the completion never runs. Seen with librbd
//! 16.2.15, each case failing at once when librbd copies the buffer instead:
//! - a write to an image opened read-only or at a snapshot (`EROFS`), or beyond the image's
//!   end (`EINVAL`): refused before submission by [`crate::Image::write`];
//! - a write by a client the cluster has blocklisted (`ESHUTDOWN`);
//! - a write while another client holds the image's exclusive lock and does not release it
//!   (`EROFS`).
//!
//! The last two depend on the cluster, so a zero-copy write that has not completed after
//! [`PROBE_EVERY`] is looked into, and again at that interval while it waits. The checks are
//! read-only and cheap (one object stat, then a lock query), and run on a thread of their own,
//! since each is a synchronous round trip to the cluster. A write found stuck fails with the
//! error librbd would have given, with the cause in words; its buffer stays with librbd
//! (leaked, never freed under it), and closing the image no longer waits for it.
//!
//! A write that is merely slow (an OSD down, a full pool) is not stuck: it keeps waiting, as
//! it does when librbd copies.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rados::{Error, Result};
use tokio::sync::oneshot;

use crate::image::{ImageHandle, Ticket};

/// How long a write waits before it is looked into, and between checks while it waits.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long a write may wait while another client holds the image's exclusive lock before it
/// is taken as refused. A holder that releases on request hands the lock over in well under a
/// second; one that died is broken by librbd once its watch has timed out
/// (`osd_client_watch_timeout`, 30 s by default).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Lock owners asked for at once; an exclusive lock has one.
const MAX_LOCK_OWNERS: usize = 4;

/// Room for an image id (12–16 hex digits in Pacific).
const IMAGE_ID_LEN: usize = 64;

/// The header object of a format-2 image is `rbd_header.<id>`.
const HEADER_PREFIX: &str = "rbd_header.";

/// Why a write will never complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stuck {
    /// The cluster blocklisted this client: every operation of it now fails.
    Blocklisted,
    /// Another client (its address) holds the image's exclusive lock.
    LockedBy(String),
}

impl Stuck {
    /// The error the write fails with: librbd's own errno for the cause, the cause in words.
    pub(crate) fn error(&self, op: &str, target: &str, image: &str, waited: Duration) -> Error {
        let secs = waited.as_secs();
        match self {
            Stuck::Blocklisted => Error::from_code((-libc::ESHUTDOWN).into(), op, target)
                .with_reason(format!(
                    "the cluster has blocklisted this client (`ceph osd blocklist ls`), so the \
                     write cannot complete (waited {secs} s)"
                )),
            Stuck::LockedBy(owner) => Error::from_code((-libc::EROFS).into(), op, target)
                .with_reason(format!(
                    "another client ({owner}) holds the image's exclusive lock and has not \
                     released it in {secs} s, so the write cannot complete (`rbd status {image}` \
                     lists the clients that have it open)"
                )),
        }
    }
}

/// Waits for a zero-copy write's completion, looking into it while it waits (see the module
/// docs). `Err` when the write was found stuck; otherwise what the completion channel gave.
/// Outside a Tokio runtime it simply waits.
pub(crate) async fn wait<T>(
    mut done: oneshot::Receiver<T>,
    ticket: &Ticket,
    handle: Arc<ImageHandle>,
    op: &'static str,
    target: &str,
) -> Result<std::result::Result<T, oneshot::error::RecvError>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(done.await);
    }
    let started = Instant::now();
    loop {
        if let Ok(outcome) = tokio::time::timeout(PROBE_EVERY, &mut done).await {
            return Ok(outcome);
        }
        let waited = started.elapsed();
        let (found, mut finding) = oneshot::channel();
        let probed = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("rbd-stuck-write".into())
            .spawn(move || {
                let _ = found.send(diagnose(&probed, waited));
            });
        if spawned.is_err() {
            continue;
        }
        // A check that hangs (the cluster unreachable) leaves the write waiting, as before.
        tokio::select! {
            outcome = &mut done => return Ok(outcome),
            finding = &mut finding => {
                if let Ok(Some(stuck)) = finding {
                    handle.in_flight.abandon(ticket);
                    tracing::warn!(image = %handle.spec, cause = ?stuck, "write given up");
                    return Err(stuck.error(op, target, &handle.spec, started.elapsed()));
                }
            }
        }
    }
}

/// Why writes to the image will never complete, if the cluster says so; `None` when nothing is
/// known to be wrong. Blocks for the cluster's answers.
fn diagnose(handle: &ImageHandle, waited: Duration) -> Option<Stuck> {
    if header_stat(handle) == Some(-libc::ESHUTDOWN) {
        return Some(Stuck::Blocklisted);
    }
    if waited < LOCK_WAIT {
        return None;
    }
    let mut owner: i32 = 0;
    // SAFETY: open image (the handle is alive for this call); valid out-pointer.
    let code = unsafe { ceph_sys::api().rbd_is_exclusive_lock_owner(handle.raw, &mut owner) };
    if code == -libc::ESHUTDOWN {
        return Some(Stuck::Blocklisted);
    }
    if code < 0 || owner != 0 {
        return None;
    }
    lock_owner(handle).map(Stuck::LockedBy)
}

/// The return code of a stat of the image's header object (0 when it answered), or `None` when
/// the image has no id (format 1).
fn header_stat(handle: &ImageHandle) -> Option<i32> {
    let mut id = [0 as c_char; IMAGE_ID_LEN];
    // SAFETY: open image; the buffer is writable for its length.
    let code = unsafe { ceph_sys::api().rbd_get_id(handle.raw, id.as_mut_ptr(), id.len()) };
    if code < 0 {
        return None;
    }
    let id = rados::string_from_c_buf(&id);
    let oid = rados::c_string(&format!("{HEADER_PREFIX}{id}"), &handle.spec).ok()?;
    let (mut size, mut mtime) = (0u64, 0 as libc::time_t);
    // SAFETY: live I/O context (the handle owns a clone); NUL-terminated name; valid
    // out-pointers.
    let code = unsafe {
        ceph_sys::api().rados_stat(handle.ioctx.as_raw(), oid.as_ptr(), &mut size, &mut mtime)
    };
    Some(code)
}

/// The address of the client holding the image's exclusive lock, if another one does.
fn lock_owner(handle: &ImageHandle) -> Option<String> {
    let mut mode: ceph_sys::rbd_lock_mode_t = ceph_sys::RBD_LOCK_MODE_EXCLUSIVE;
    let mut owners: [*mut c_char; MAX_LOCK_OWNERS] = [std::ptr::null_mut(); MAX_LOCK_OWNERS];
    let mut count = MAX_LOCK_OWNERS;
    // SAFETY: open image; `owners` has room for `count` pointers, which librbd fills with
    // strings it allocates and sets `count` to the number filled (or fails with none filled).
    let code = unsafe {
        ceph_sys::api().rbd_lock_get_owners(handle.raw, &mut mode, owners.as_mut_ptr(), &mut count)
    };
    if code < 0 || count == 0 {
        return None;
    }
    let count = count.min(MAX_LOCK_OWNERS);
    // SAFETY: the first `count` entries are NUL-terminated strings librbd allocated.
    let first = unsafe { rados::owned_from_ptr(owners[0]) };
    // SAFETY: frees exactly the strings librbd filled, once.
    unsafe { ceph_sys::api().rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), count) };
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_librbds_errno_and_the_cause_in_words() {
        let waited = Duration::from_secs(61);
        let err = Stuck::Blocklisted.error("write to", "rbd/a [0..+4]", "rbd/a", waited);
        assert_eq!(err.errno(), libc::ESHUTDOWN);
        assert_eq!(
            err.to_string(),
            "write to rbd/a [0..+4]: the cluster has blocklisted this client (`ceph osd \
             blocklist ls`), so the write cannot complete (waited 61 s)"
        );
        let err = Stuck::LockedBy("127.0.0.1:0/42".into()).error("write to", "t", "rbd/a", waited);
        assert_eq!(err.kind(), rados::ErrorKind::ReadOnly);
        let text = err.to_string();
        for part in [
            "another client (127.0.0.1:0/42)",
            "in 61 s",
            "`rbd status rbd/a`",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }
}
