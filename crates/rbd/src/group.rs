//! Groups: images snapshotted together (crash-consistent multi-disk snapshots).

use rados::{c_string, grow_until_fits, owned_from_ptr, Error, Fit, IoCtx, Result};

use crate::Image;

/// First guess of the number of group snapshots; librbd says how many it needs.
const INITIAL_GROUP_SNAP_LEN: usize = 16;

/// A snapshot of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnap {
    /// The group snapshot's name.
    pub name: String,
    /// Whether every member image's snapshot was taken.
    pub complete: bool,
}

fn group_target(ioctx: &IoCtx, group: &str) -> String {
    format!("group {}/{}", ioctx.pool(), group)
}

/// Creates a group.
pub fn group_create(ioctx: &IoCtx, group: &str) -> Result<()> {
    let target = group_target(ioctx, group);
    let c_group = c_string(group, &target)?;
    // SAFETY: live I/O context, NUL-terminated name.
    let code = unsafe { ceph_sys::api().rbd_group_create(ioctx.as_raw(), c_group.as_ptr()) };
    Error::check(code, "create", &target).map(drop)
}

/// Removes a group (its member images stay; its snapshots are removed).
pub fn group_remove(ioctx: &IoCtx, group: &str) -> Result<()> {
    let target = group_target(ioctx, group);
    let c_group = c_string(group, &target)?;
    // SAFETY: live I/O context, NUL-terminated name.
    let code = unsafe { ceph_sys::api().rbd_group_remove(ioctx.as_raw(), c_group.as_ptr()) };
    Error::check(code, "remove", &target).map(drop)
}

/// The signature librbd's group membership calls share.
type GroupImageCall = unsafe extern "C" fn(
    ceph_sys::rados_ioctx_t,
    *const std::os::raw::c_char,
    ceph_sys::rados_ioctx_t,
    *const std::os::raw::c_char,
) -> std::os::raw::c_int;

/// Adds an image (of `image_ioctx`'s pool) to a group.
pub fn group_image_add(ioctx: &IoCtx, group: &str, image_ioctx: &IoCtx, image: &str) -> Result<()> {
    group_image_call(
        ceph_sys::api().rbd_group_image_add,
        "add image to",
        ioctx,
        group,
        image_ioctx,
        image,
    )
}

/// Removes an image from a group.
pub fn group_image_remove(
    ioctx: &IoCtx,
    group: &str,
    image_ioctx: &IoCtx,
    image: &str,
) -> Result<()> {
    group_image_call(
        ceph_sys::api().rbd_group_image_remove,
        "remove image from",
        ioctx,
        group,
        image_ioctx,
        image,
    )
}

/// Runs one of librbd's group membership calls (`call`) for `image` of `image_ioctx`'s pool;
/// `operation` names it in errors.
fn group_image_call(
    call: GroupImageCall,
    operation: &str,
    ioctx: &IoCtx,
    group: &str,
    image_ioctx: &IoCtx,
    image: &str,
) -> Result<()> {
    let target = format!(
        "{} with image {}/{}",
        group_target(ioctx, group),
        image_ioctx.pool(),
        image
    );
    let c_group = c_string(group, &target)?;
    let c_image = c_string(image, &target)?;
    // SAFETY: `call` is one of librbd's group image calls, which take two live I/O contexts
    // and two NUL-terminated names, all of which outlive the call.
    let code = unsafe {
        call(
            ioctx.as_raw(),
            c_group.as_ptr(),
            image_ioctx.as_raw(),
            c_image.as_ptr(),
        )
    };
    Error::check(code, operation, &target).map(drop)
}

/// Snapshots every image of the group at one point in time.
pub fn group_snap_create(ioctx: &IoCtx, group: &str, snap: &str) -> Result<()> {
    let target = format!("{}@{}", group_target(ioctx, group), snap);
    let c_group = c_string(group, &target)?;
    let c_snap = c_string(snap, &target)?;
    // SAFETY: live I/O context, NUL-terminated names.
    let code = unsafe {
        ceph_sys::api().rbd_group_snap_create(ioctx.as_raw(), c_group.as_ptr(), c_snap.as_ptr())
    };
    Error::check(code, "create snapshot", &target).map(drop)
}

/// Removes a group snapshot (and each member image's snapshot of it).
pub fn group_snap_remove(ioctx: &IoCtx, group: &str, snap: &str) -> Result<()> {
    let target = format!("{}@{}", group_target(ioctx, group), snap);
    let c_group = c_string(group, &target)?;
    let c_snap = c_string(snap, &target)?;
    // SAFETY: live I/O context, NUL-terminated names.
    let code = unsafe {
        ceph_sys::api().rbd_group_snap_remove(ioctx.as_raw(), c_group.as_ptr(), c_snap.as_ptr())
    };
    Error::check(code, "remove snapshot", &target).map(drop)
}

/// The snapshots of a group.
pub fn group_snap_list(ioctx: &IoCtx, group: &str) -> Result<Vec<GroupSnap>> {
    let target = group_target(ioctx, group);
    let c_group = c_string(group, &target)?;
    type Entry = ceph_sys::rbd_group_snap_info_t;
    let entry_size = std::mem::size_of::<Entry>();
    let op = "list snapshots of";
    grow_until_fits::<Entry, _>(INITIAL_GROUP_SNAP_LEN, op, &target, |len| {
        let mut snaps: Vec<Entry> = Vec::with_capacity(len);
        let mut count = len;
        // SAFETY: room for `count` entries of `entry_size` bytes; on -ERANGE librbd sets
        // `count` to the number needed.
        let code = unsafe {
            ceph_sys::api().rbd_group_snap_list(
                ioctx.as_raw(),
                c_group.as_ptr(),
                snaps.as_mut_ptr(),
                entry_size,
                &mut count,
            )
        };
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(count));
        }
        Error::check(code, op, &target)?;
        // SAFETY: librbd initialised `count` <= capacity entries.
        unsafe { snaps.set_len(count) };
        let list = snaps
            .iter()
            .map(|s| GroupSnap {
                // SAFETY: valid until the cleanup below.
                name: unsafe { owned_from_ptr(s.name) },
                complete: s.state == ceph_sys::RBD_GROUP_SNAP_STATE_COMPLETE,
            })
            .collect();
        // SAFETY: frees exactly the entries librbd filled, once.
        unsafe {
            ceph_sys::api().rbd_group_snap_list_cleanup(snaps.as_mut_ptr(), entry_size, count)
        };
        Ok(Fit::Done(list))
    })
}

impl Image {
    /// The id of this image's snapshot taken by group snapshot `group_snap` of `group`, if
    /// any. Open the image at that id with [`crate::OpenMode::SnapshotId`] to read it.
    pub fn group_snap_id(&self, group: &str, group_snap: &str) -> Result<Option<u64>> {
        for snap in self.snap_list()? {
            let mut kind: ceph_sys::rbd_snap_namespace_type_t = 0;
            // SAFETY: open image, valid out-pointer.
            let code = unsafe {
                ceph_sys::api().rbd_snap_get_namespace_type(self.raw(), snap.id, &mut kind)
            };
            Error::check(code, "get snapshot namespace of", &self.spec())?;
            if kind != ceph_sys::RBD_SNAP_NAMESPACE_TYPE_GROUP {
                continue;
            }
            let mut ns = ceph_sys::rbd_snap_group_namespace_t {
                group_pool: 0,
                group_name: std::ptr::null_mut(),
                group_snap_name: std::ptr::null_mut(),
            };
            // SAFETY: open image; out-struct of the size passed; cleaned up below.
            let code = unsafe {
                ceph_sys::api().rbd_snap_get_group_namespace(
                    self.raw(),
                    snap.id,
                    &mut ns,
                    std::mem::size_of_val(&ns),
                )
            };
            Error::check(code, "get group of snapshot of", &self.spec())?;
            // SAFETY: strings filled above, valid until cleanup.
            let (name, snap_name) = unsafe {
                (
                    owned_from_ptr(ns.group_name),
                    owned_from_ptr(ns.group_snap_name),
                )
            };
            // SAFETY: frees what `rbd_snap_get_group_namespace` allocated, once.
            unsafe {
                ceph_sys::api()
                    .rbd_snap_group_namespace_cleanup(&mut ns, std::mem::size_of_val(&ns))
            };
            if name == group && snap_name == group_snap {
                return Ok(Some(snap.id));
            }
        }
        Ok(None)
    }
}
