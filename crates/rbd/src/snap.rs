//! Snapshots of an open image.

use rados::{c_string, grow_until_fits, owned_from_ptr, Error, ErrorKind, Fit, Result};

use crate::Image;

/// First guess of the number of snapshots; librbd says how many it needs.
const INITIAL_SNAP_LIST_LEN: usize = 16;

/// A snapshot as `rbd snap ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// The snapshot id.
    pub id: u64,
    /// The image size at the snapshot.
    pub size: u64,
    /// The snapshot name (user snapshots; group snapshots have generated names).
    pub name: String,
}

impl Image {
    fn snap_target(&self, snap: &str) -> String {
        format!("{}@{}", self.spec(), snap)
    }

    fn snap_call(
        &self,
        op: &str,
        snap: &str,
        call: impl FnOnce(ceph_sys::rbd_image_t, *const std::ffi::c_char) -> i32,
    ) -> Result<i32> {
        let target = self.snap_target(snap);
        let c_snap = c_string(snap, &target)?;
        let code = call(self.raw(), c_snap.as_ptr());
        if code == -libc::ENOENT {
            // The image is open, so it is the snapshot that is missing.
            return Err(Error::from_code(code.into(), op, target).with_reason("no such snapshot"));
        }
        Error::check(code, op, &target)
    }

    /// When the snapshot with id `id` (see [`SnapInfo::id`]) was created, by the cluster's
    /// clock (as `rbd snap ls` shows it).
    pub fn snap_timestamp(&self, id: u64) -> Result<std::time::SystemTime> {
        let mut stamp = ceph_sys::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: open image; `stamp` is a live timespec librbd fills in during the call.
        let code = unsafe { ceph_sys::api().rbd_snap_get_timestamp(self.raw(), id, &mut stamp) };
        let target = format!("{} snapshot id {id}", self.spec());
        Error::check(code, "read the creation time of", &target)?;
        let seconds = u64::try_from(stamp.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(stamp.tv_nsec).unwrap_or(0);
        Ok(std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
    }

    /// Creates a snapshot. Skips the quiesce hooks (none run outside `rbd-nbd`/krbd mappings).
    pub fn snap_create(&self, snap: &str) -> Result<()> {
        self.snap_call("create snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name, no progress callback.
            unsafe {
                ceph_sys::api().rbd_snap_create2(
                    image,
                    name,
                    ceph_sys::RBD_SNAP_CREATE_SKIP_QUIESCE,
                    None,
                    std::ptr::null_mut(),
                )
            }
        })
        .map(drop)
    }

    /// Removes a snapshot (it must be unprotected and have no children).
    pub fn snap_remove(&self, snap: &str) -> Result<()> {
        self.snap_call("remove snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name.
            unsafe { ceph_sys::api().rbd_snap_remove(image, name) }
        })
        .map(drop)
        .map_err(|e| match e.kind() {
            // librbd says only EBUSY: say why, as `rbd snap rm` does.
            ErrorKind::Busy if self.snap_is_protected(snap).unwrap_or(false) => e.with_reason(
                "the snapshot is protected: unprotect it first (its clones must be flattened \
                 or removed)",
            ),
            _ => e,
        })
    }

    /// Protects a snapshot, as v1 clones require.
    pub fn snap_protect(&self, snap: &str) -> Result<()> {
        self.snap_call("protect snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name.
            unsafe { ceph_sys::api().rbd_snap_protect(image, name) }
        })
        .map(drop)
        .map_err(|e| match e.kind() {
            // librbd says only EBUSY: say why.
            ErrorKind::Busy if self.snap_is_protected(snap).unwrap_or(false) => {
                e.with_reason("the snapshot is protected already")
            }
            _ => e,
        })
    }

    /// Unprotects a snapshot; fails with `Busy` while a v1 clone depends on it.
    pub fn snap_unprotect(&self, snap: &str) -> Result<()> {
        self.snap_call("unprotect snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name.
            unsafe { ceph_sys::api().rbd_snap_unprotect(image, name) }
        })
        .map(drop)
        .map_err(|e| match e.kind() {
            // librbd says only EINVAL or EBUSY: say why.
            ErrorKind::InvalidArgument if !self.snap_is_protected(snap).unwrap_or(true) => {
                e.with_reason("the snapshot is not protected")
            }
            ErrorKind::Busy => {
                e.with_reason("clones of the snapshot depend on it: flatten or remove them first")
            }
            _ => e,
        })
    }

    /// Whether a snapshot is protected.
    pub fn snap_is_protected(&self, snap: &str) -> Result<bool> {
        let mut protected = 0;
        self.snap_call("check protection of snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name, valid out-pointer.
            unsafe { ceph_sys::api().rbd_snap_is_protected(image, name, &mut protected) }
        })?;
        Ok(protected != 0)
    }

    /// Whether a user snapshot of that name exists.
    pub fn snap_exists(&self, snap: &str) -> Result<bool> {
        let mut exists = false;
        self.snap_call("look up snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name, valid out-pointer.
            unsafe { ceph_sys::api().rbd_snap_exists(image, name, &mut exists) }
        })?;
        Ok(exists)
    }

    /// Rolls the image head back to a snapshot.
    pub fn snap_rollback(&self, snap: &str) -> Result<()> {
        self.snap_call("roll back to snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name.
            unsafe { ceph_sys::api().rbd_snap_rollback(image, name) }
        })
        .map(drop)
    }

    /// The id of a user snapshot.
    pub fn snap_id(&self, snap: &str) -> Result<u64> {
        let mut id = 0u64;
        self.snap_call("look up snapshot", snap, |image, name| {
            // SAFETY: open image, NUL-terminated name, valid out-pointer.
            unsafe { ceph_sys::api().rbd_snap_get_id(image, name, &mut id) }
        })?;
        Ok(id)
    }

    /// The snapshots of the image, in creation order.
    pub fn snap_list(&self) -> Result<Vec<SnapInfo>> {
        let op = "list snapshots of";
        type Entry = ceph_sys::rbd_snap_info_t;
        grow_until_fits::<Entry, _>(INITIAL_SNAP_LIST_LEN, op, &self.spec(), |len| {
            let mut snaps = vec![Entry::default(); len];
            let mut count = i32::try_from(len).unwrap_or(i32::MAX);
            // SAFETY: `snaps` holds at least `count` initialised entries for librbd to
            // overwrite; on -ERANGE it sets `count` to the number needed and fills nothing.
            let code = unsafe {
                ceph_sys::api().rbd_snap_list(self.raw(), snaps.as_mut_ptr(), &mut count)
            };
            if code == -libc::ERANGE {
                return Ok(Fit::Grow(usize::try_from(count).unwrap_or(0)));
            }
            let filled = Error::check(code, op, &self.spec())? as usize;
            let list = snaps[..filled]
                .iter()
                .map(|s| SnapInfo {
                    id: s.id,
                    size: s.size,
                    // SAFETY: names are NUL-terminated and owned by the list until
                    // `rbd_snap_list_end` below.
                    name: unsafe { owned_from_ptr(s.name) },
                })
                .collect();
            // SAFETY: frees the names librbd allocated in this list, once.
            unsafe { ceph_sys::api().rbd_snap_list_end(snaps.as_mut_ptr()) };
            Ok(Fit::Done(list))
        })
    }
}
