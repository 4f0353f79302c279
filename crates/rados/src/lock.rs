//! Advisory exclusive locks on RADOS objects, with a lease: how several processes share work
//! through the cluster itself (Ceph's `lock` object class, the one `rbd lock` uses).
//!
//! A lock is named (`lock_name`) on one object and held by an owner: the pair of this
//! connection's client instance (`client.4567`, one per [`Cluster`](crate::Cluster)
//! connection) and a caller-chosen cookie. Behaviour measured on Ceph 16.2 (Pacific), and
//! checked by the integration tests:
//! - Taking the lock makes the object if it does not exist (an empty object, which stays
//!   after the lock is released).
//! - While an owner holds it, every other owner is refused with `EBUSY`
//!   ([`LockError::HeldElsewhere`]): another cookie on the same connection, and the same
//!   cookie on another connection alike, since the client instance is part of the owner.
//! - The same owner taking it again is refused with `EEXIST` ([`LockError::AlreadyHeld`]):
//!   one [`Lock`] per lock, so that one holder's unlock cannot release another's.
//! - The lease runs from when the OSD grants or renews the lock. Once it lapses, the holder
//!   is gone (no longer listed): any owner can take the lock, and the old holder's
//!   [`Lock::renew`] and [`Lock::unlock`] answer [`LockError::Lost`] (`ENOENT`), whether or
//!   not someone took it meanwhile, without disturbing a new holder.
//! - [`Lock::renew`] sends `LIBRADOS_LOCK_FLAG_MUST_RENEW`: it extends a lease that is still
//!   held and never takes a lock afresh, so a holder learns that it lost the lock instead of
//!   silently re-taking it after someone else had it.
//!
//! The OSD's clock decides expiry; [`Lock::lease_valid_until`] is a local instant before
//! which the lease certainly still holds (measured from when the request was sent).

use std::ffi::CString;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cstr::c_string;
use crate::grow::{grow_until_fits, Fit};
use crate::{Error, ErrorKind, IoCtx};

/// No flag: take the lock, failing if this owner already holds it.
const LOCK_FLAGS_TAKE: u8 = 0;
/// `LIBRADOS_LOCK_FLAG_MUST_RENEW`: extend this owner's lock, `ENOENT` if it does not hold
/// it (any more). librados takes the flags as a `uint8_t`; the value is 2.
const LOCK_FLAGS_RENEW: u8 = ceph_sys::LIBRADOS_LOCK_FLAG_MUST_RENEW as u8;
/// The shortest lease accepted. A lease of zero is an infinite lock at the OSD (a crashed
/// holder would keep it forever), and one shorter than a round trip lapses before it can be
/// renewed.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// First size of each of the four buffers `rados_list_lockers` fills; it says how large
/// they must be when that is too small.
const LOCKERS_INITIAL_BUFFER_BYTES: usize = 256;

/// Why a lock could not be taken, renewed or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another owner (another cookie, or the same cookie on another connection) holds the
    /// lock and its lease has not lapsed (`EBUSY`).
    #[error("lock {lock:?} on object {pool}/{object} is held by another owner")]
    HeldElsewhere {
        /// The pool.
        pool: String,
        /// The object.
        object: String,
        /// The lock's name.
        lock: String,
    },
    /// This connection already holds the lock with this cookie (`EEXIST`): renew the [`Lock`]
    /// it has rather than taking the lock twice.
    #[error(
        "lock {lock:?} on object {pool}/{object} is already held by this connection with \
         cookie {cookie:?}: renew that lock instead of taking it again"
    )]
    AlreadyHeld {
        /// The pool.
        pool: String,
        /// The object.
        object: String,
        /// The lock's name.
        lock: String,
        /// The cookie.
        cookie: String,
    },
    /// The lock is no longer held by this owner: its lease lapsed (or it was broken) before
    /// it was renewed or released; another owner may hold it now (`ENOENT`).
    #[error(
        "lock {lock:?} on object {pool}/{object} (cookie {cookie:?}) was lost: its lease lapsed \
         or it was broken before it was renewed or released"
    )]
    Lost {
        /// The pool.
        pool: String,
        /// The object.
        object: String,
        /// The lock's name.
        lock: String,
        /// The cookie.
        cookie: String,
    },
    /// Any other failure of the call (cluster unreachable, permission denied, bad argument).
    #[error(transparent)]
    Rados(#[from] Error),
}

/// An owner of a lock, as `rados_list_lockers` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The client instance, e.g. `client.4567`.
    pub client: String,
    /// The holder's cookie.
    pub cookie: String,
    /// The client's address, e.g. `127.0.0.1:0/1206952089`.
    pub address: String,
}

/// The current owners of a named lock on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Whether the lock is exclusive (one owner) rather than shared.
    pub exclusive: bool,
    /// The lock's tag (empty for exclusive locks).
    pub tag: String,
    /// The owners; empty when nobody holds it. An owner whose lease lapsed is not listed.
    pub lockers: Vec<Locker>,
}

/// An exclusive lock this process holds, until [`Lock::unlock`], drop, or its lease lapses.
///
/// Dropping it releases it (a blocking call to the cluster; errors are ignored, since the
/// lease ends it anyway). Keep it for as long as the work it guards runs, and call
/// [`Lock::renew`] well within each lease.
pub struct Lock {
    ioctx: IoCtx,
    object: String,
    name: String,
    cookie: String,
    description: String,
    lease: Duration,
    /// A local instant before which the lease certainly has not lapsed.
    valid_until: Mutex<Instant>,
    released: bool,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("pool", &self.ioctx.pool())
            .field("object", &self.object)
            .field("name", &self.name)
            .field("cookie", &self.cookie)
            .field("lease", &self.lease)
            .finish()
    }
}

impl IoCtx {
    /// Takes the exclusive lock `lock_name` on `object` for the owner (this connection,
    /// `cookie`), for `lease` from now, with `description` shown to anyone listing owners
    /// (`rados lock info`). The object is made if missing.
    ///
    /// Refused with [`LockError::HeldElsewhere`] while another owner's lease runs, and with
    /// [`LockError::AlreadyHeld`] if this owner holds it already. A lease shorter than
    /// [`MIN_LEASE`] is refused. Blocks for one round trip to the OSD.
    pub fn lock_exclusive(
        &self,
        object: &str,
        lock_name: &str,
        cookie: &str,
        description: &str,
        lease: Duration,
    ) -> Result<Lock, LockError> {
        if lease < MIN_LEASE {
            return Err(
                Error::new(ErrorKind::InvalidArgument, "lock", self.object_name(object))
                    .with_reason(format!(
                        "a lease of {lease:?} is too short: give at least {MIN_LEASE:?}"
                    ))
                    .into(),
            );
        }
        let mut lock = Lock {
            ioctx: self.clone(),
            object: object.to_string(),
            name: lock_name.to_string(),
            cookie: cookie.to_string(),
            description: description.to_string(),
            lease,
            valid_until: Mutex::new(Instant::now()),
            // Not held yet: a failed attempt has nothing to release on drop.
            released: true,
        };
        lock.call_lock(LOCK_FLAGS_TAKE)?;
        lock.released = false;
        Ok(lock)
    }

    /// The owners of the lock `lock_name` on `object`. Fails with [`ErrorKind::NotFound`]
    /// when the object does not exist.
    pub fn lockers(&self, object: &str, lock_name: &str) -> crate::Result<LockInfo> {
        let target = self.object_name(object);
        let c_object = c_string(object, &target)?;
        let c_name = c_string(lock_name, lock_name)?;
        grow_until_fits::<u8, _>(
            LOCKERS_INITIAL_BUFFER_BYTES,
            "list lockers of",
            &target,
            |len| {
                let mut exclusive: std::ffi::c_int = 0;
                let mut bufs = [
                    vec![0u8; len],
                    vec![0u8; len],
                    vec![0u8; len],
                    vec![0u8; len],
                ];
                let mut lens = [len; 4];
                let [tag, clients, cookies, addrs] = &mut bufs;
                let [tag_len, clients_len, cookies_len, addrs_len] = &mut lens;
                // SAFETY: `as_raw` is a live I/O context; the names are NUL-terminated; each
                // buffer is `len` bytes and its length pointer says so; librados writes no
                // more than the lengths given and updates them to what it needs.
                let code = unsafe {
                    ceph_sys::api().rados_list_lockers(
                        self.as_raw(),
                        c_object.as_ptr(),
                        c_name.as_ptr(),
                        &mut exclusive,
                        tag.as_mut_ptr().cast(),
                        tag_len,
                        clients.as_mut_ptr().cast(),
                        clients_len,
                        cookies.as_mut_ptr().cast(),
                        cookies_len,
                        addrs.as_mut_ptr().cast(),
                        addrs_len,
                    )
                };
                // ssize_t: the number of lockers, or a negative errno.
                let code = i64::try_from(code).unwrap_or(i64::MIN);
                if code == -i64::from(libc::ERANGE) {
                    return Ok(Fit::Grow(lens.into_iter().max().unwrap_or(0)));
                }
                if code < 0 {
                    return Err(Error::from_code(code, "list lockers of", &target));
                }
                let count = usize::try_from(code).unwrap_or(0);
                let [tag, clients, cookies, addrs] = &bufs;
                let (clients, cookies, addrs) = (
                    nul_separated(clients, count),
                    nul_separated(cookies, count),
                    nul_separated(addrs, count),
                );
                let lockers = clients
                    .into_iter()
                    .zip(cookies)
                    .zip(addrs)
                    .map(|((client, cookie), address)| Locker {
                        client,
                        cookie,
                        address,
                    })
                    .collect();
                Ok(Fit::Done(LockInfo {
                    exclusive: exclusive != 0,
                    tag: nul_separated(tag, 1).remove(0),
                    lockers,
                }))
            },
        )
    }

    /// Removes the owner (`client`, `cookie`) from the lock `lock_name` on `object`, whatever
    /// its lease: for an operator who knows that holder is gone. The holder is not told; its
    /// next renew or unlock answers [`LockError::Lost`]. `ENOENT` ([`ErrorKind::NotFound`])
    /// when that owner does not hold it.
    pub fn break_lock(
        &self,
        object: &str,
        lock_name: &str,
        client: &str,
        cookie: &str,
    ) -> crate::Result<()> {
        let target = self.object_name(object);
        let c_object = c_string(object, &target)?;
        let c_name = c_string(lock_name, lock_name)?;
        let c_client = c_string(client, client)?;
        let c_cookie = c_string(cookie, cookie)?;
        // SAFETY: live I/O context and NUL-terminated strings that outlive the call.
        let code = unsafe {
            ceph_sys::api().rados_break_lock(
                self.as_raw(),
                c_object.as_ptr(),
                c_name.as_ptr(),
                c_client.as_ptr(),
                c_cookie.as_ptr(),
            )
        };
        Error::check(code, "break lock on", &target).map(|_| ())
    }

    /// `POOL/OBJECT`, for messages.
    fn object_name(&self, object: &str) -> String {
        format!("{}/{}", self.pool(), object)
    }
}

impl Lock {
    /// Extends the lease to `lease` from now. Fails with [`LockError::Lost`] when the lock is
    /// no longer this owner's (the lease lapsed, or it was broken): then stop the work it
    /// guards, another owner may be doing it. Blocks for one round trip.
    pub fn renew(&self) -> Result<(), LockError> {
        self.call_lock(LOCK_FLAGS_RENEW)
    }

    /// Releases the lock. [`LockError::Lost`] when it was no longer held (the lease lapsed
    /// or it was broken): another owner's lock is never touched.
    pub fn unlock(mut self) -> Result<(), LockError> {
        self.released = true;
        self.call_unlock()
    }

    /// The object the lock is on.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The owner's cookie.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The lease each lock or renew call asks for.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A local instant before which the lease certainly has not lapsed: when the last
    /// successful lock or renew request was sent, plus the lease (the OSD starts the lease
    /// when it receives the request, later).
    pub fn lease_valid_until(&self) -> Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One `rados_lock_exclusive` call with `flags`, mapping the answers the lock class
    /// gives to [`LockError`].
    fn call_lock(&self, flags: u8) -> Result<(), LockError> {
        let (target, [c_object, c_name, c_cookie]) = self.c_names()?;
        let c_desc = c_string(&self.description, &self.description)?;
        let mut duration = ceph_sys::timeval {
            tv_sec: self.lease.as_secs().try_into().unwrap_or(i64::MAX),
            tv_usec: self.lease.subsec_micros().into(),
        };
        let sent = Instant::now();
        // SAFETY: live I/O context; NUL-terminated strings and the timeval outlive the call;
        // librados only reads the timeval.
        let code = unsafe {
            ceph_sys::api().rados_lock_exclusive(
                self.ioctx.as_raw(),
                c_object.as_ptr(),
                c_name.as_ptr(),
                c_cookie.as_ptr(),
                c_desc.as_ptr(),
                &mut duration,
                flags,
            )
        };
        let op = if flags == LOCK_FLAGS_RENEW {
            "renew lock on"
        } else {
            "lock"
        };
        match code {
            0 => {
                *self
                    .valid_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = sent + self.lease;
                Ok(())
            }
            c if c == -libc::EBUSY => Err(LockError::HeldElsewhere {
                pool: self.ioctx.pool().to_string(),
                object: self.object.clone(),
                lock: self.name.clone(),
            }),
            c if c == -libc::EEXIST => Err(LockError::AlreadyHeld {
                pool: self.ioctx.pool().to_string(),
                object: self.object.clone(),
                lock: self.name.clone(),
                cookie: self.cookie.clone(),
            }),
            c if c == -libc::ENOENT && flags == LOCK_FLAGS_RENEW => Err(self.lost()),
            c => Err(Error::from_code(c.into(), op, &target).into()),
        }
    }

    /// One `rados_unlock` call.
    fn call_unlock(&self) -> Result<(), LockError> {
        let (target, [c_object, c_name, c_cookie]) = self.c_names()?;
        // SAFETY: live I/O context and NUL-terminated strings that outlive the call.
        let code = unsafe {
            ceph_sys::api().rados_unlock(
                self.ioctx.as_raw(),
                c_object.as_ptr(),
                c_name.as_ptr(),
                c_cookie.as_ptr(),
            )
        };
        match code {
            0 => Ok(()),
            c if c == -libc::ENOENT => Err(self.lost()),
            c => Err(Error::from_code(c.into(), "unlock", &target).into()),
        }
    }

    /// `POOL/OBJECT` for messages, and the object, lock name and cookie for C.
    fn c_names(&self) -> crate::Result<(String, [CString; 3])> {
        let target = self.ioctx.object_name(&self.object);
        let names = [
            c_string(&self.object, &target)?,
            c_string(&self.name, &self.name)?,
            c_string(&self.cookie, &self.cookie)?,
        ];
        Ok((target, names))
    }

    fn lost(&self) -> LockError {
        LockError::Lost {
            pool: self.ioctx.pool().to_string(),
            object: self.object.clone(),
            lock: self.name.clone(),
            cookie: self.cookie.clone(),
        }
    }
}

/// The first `count` NUL-terminated strings of `buf` (empty ones included, unlike
/// [`split_nul_list`](crate::split_nul_list), since a cookie may be empty); missing ones are
/// empty.
fn nul_separated(buf: &[u8], count: usize) -> Vec<String> {
    let mut parts = buf.split(|&b| b == 0);
    (0..count)
        .map(|_| {
            parts
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default()
        })
        .collect()
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.released {
            // Best effort: if this fails, the lease ends the lock.
            let _ = self.call_unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renew_flag_is_must_renew_and_fits_the_flags_byte() {
        assert_eq!(
            u32::from(LOCK_FLAGS_RENEW),
            ceph_sys::LIBRADOS_LOCK_FLAG_MUST_RENEW
        );
        assert_ne!(LOCK_FLAGS_RENEW, LOCK_FLAGS_TAKE);
    }

    #[test]
    fn lock_errors_name_the_object_lock_and_cookie() {
        let lost = LockError::Lost {
            pool: "rbd".into(),
            object: "diskferry.lock".into(),
            lock: "nightly".into(),
            cookie: "host-a".into(),
        };
        let text = lost.to_string();
        for needle in ["rbd/diskferry.lock", "\"nightly\"", "\"host-a\"", "lapsed"] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
    }
}
