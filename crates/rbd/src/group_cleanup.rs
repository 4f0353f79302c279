//! What a cleanup needs to find and take apart groups left by killed processes: the groups of
//! a pool, the images of a group, and the group an image belongs to.

use rados::{c_string, grow_until_fits, owned_from_ptr, split_nul_list, Error, Fit, IoCtx, Result};

use crate::Image;

/// First guess of the bytes of a pool's group names; librbd says how many it needs.
const INITIAL_GROUP_LIST_BYTES: usize = 1024;
/// First guess of the number of images in a group; librbd says how many it needs.
const INITIAL_GROUP_IMAGE_LEN: usize = 16;
/// First guess of the bytes of a pool name; librados does not say how many it needs.
const INITIAL_POOL_NAME_BYTES: usize = 128;
/// The pool id librbd gives an image that belongs to no group.
const NO_POOL: i64 = -1;

/// A group, or a member of one, by pool and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolName {
    /// The pool.
    pub pool: String,
    /// The group's or image's name.
    pub name: String,
}

/// The groups of a pool, sorted.
pub fn group_list(ioctx: &IoCtx) -> Result<Vec<String>> {
    let op = "list groups in pool";
    grow_until_fits::<u8, _>(INITIAL_GROUP_LIST_BYTES, op, &ioctx.pool(), |len| {
        let mut buf = vec![0u8; len];
        let mut size = len;
        // SAFETY: `buf` has room for `size` bytes; librbd writes at most that many, or sets
        // `size` to the number needed and answers -ERANGE.
        let code = unsafe {
            ceph_sys::api().rbd_group_list(ioctx.as_raw(), buf.as_mut_ptr().cast(), &mut size)
        };
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(size));
        }
        let filled = Error::check(code, op, &ioctx.pool())?;
        buf.truncate(usize::try_from(filled).unwrap_or(0).min(len));
        let mut names = split_nul_list(&buf);
        names.sort();
        Ok(Fit::Done(names))
    })
}

/// The member images of a group of `ioctx`'s pool (each with its own pool).
pub fn group_image_list(ioctx: &IoCtx, group: &str) -> Result<Vec<PoolName>> {
    let target = format!("group {}/{}", ioctx.pool(), group);
    let c_group = c_string(group, &target)?;
    type Entry = ceph_sys::rbd_group_image_info_t;
    let entry_size = std::mem::size_of::<Entry>();
    let op = "list images of";
    let found = grow_until_fits::<Entry, _>(INITIAL_GROUP_IMAGE_LEN, op, &target, |len| {
        let mut images: Vec<Entry> = Vec::with_capacity(len);
        let mut count = len;
        // SAFETY: room for `count` entries of `entry_size` bytes; on -ERANGE librbd sets
        // `count` to the number needed.
        let code = unsafe {
            ceph_sys::api().rbd_group_image_list(
                ioctx.as_raw(),
                c_group.as_ptr(),
                images.as_mut_ptr(),
                entry_size,
                &mut count,
            )
        };
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(count));
        }
        Error::check(code, op, &target)?;
        // SAFETY: librbd initialised `count` <= capacity entries.
        unsafe { images.set_len(count) };
        let list: Vec<(i64, String)> = images
            .iter()
            // SAFETY: names valid until the cleanup below.
            .map(|i| (i.pool, unsafe { owned_from_ptr(i.name) }))
            .collect();
        // SAFETY: frees exactly the entries librbd filled, once.
        unsafe {
            ceph_sys::api().rbd_group_image_list_cleanup(images.as_mut_ptr(), entry_size, count)
        };
        Ok(Fit::Done(list))
    })?;
    found
        .into_iter()
        .map(|(pool, name)| {
            Ok(PoolName {
                pool: pool_name(ioctx, pool)?,
                name,
            })
        })
        .collect()
}

impl Image {
    /// The group this image belongs to, if any (an image is in one group at most).
    pub fn group(&self) -> Result<Option<PoolName>> {
        let mut info = ceph_sys::rbd_group_info_t {
            name: std::ptr::null_mut(),
            pool: NO_POOL,
        };
        // SAFETY: open image; out-struct of the size passed; cleaned up below.
        let code = unsafe {
            ceph_sys::api().rbd_get_group(self.raw(), &mut info, std::mem::size_of_val(&info))
        };
        Error::check(code, "get the group of", &self.spec())?;
        // SAFETY: filled above (an empty name when in no group), valid until the cleanup.
        let name = unsafe { owned_from_ptr(info.name) };
        let pool = info.pool;
        // SAFETY: frees what `rbd_get_group` allocated, once.
        unsafe { ceph_sys::api().rbd_group_info_cleanup(&mut info, std::mem::size_of_val(&info)) };
        if pool == NO_POOL || name.is_empty() {
            return Ok(None);
        }
        Ok(Some(PoolName {
            pool: pool_name(self.ioctx(), pool)?,
            name,
        }))
    }
}

/// The name of pool `id` of `ioctx`'s cluster.
fn pool_name(ioctx: &IoCtx, id: i64) -> Result<String> {
    let target = format!("pool id {id}");
    let op = "look up the name of";
    grow_until_fits::<u8, _>(INITIAL_POOL_NAME_BYTES, op, &target, |len| {
        let mut buf = vec![0u8; len];
        // SAFETY: live I/O context, so its cluster handle is live; `buf` has room for `len`
        // bytes, which librados writes at most (it answers -ERANGE when the name is longer).
        let code = unsafe {
            let cluster = ceph_sys::api().rados_ioctx_get_cluster(ioctx.as_raw());
            ceph_sys::api().rados_pool_reverse_lookup(cluster, id, buf.as_mut_ptr().cast(), len)
        };
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(0));
        }
        Error::check(code, op, &target)?;
        Ok(Fit::Done(
            split_nul_list(&buf).into_iter().next().unwrap_or_default(),
        ))
    })
}
