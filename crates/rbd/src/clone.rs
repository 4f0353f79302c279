//! Copy-on-write clones, flatten, children and parent.

use rados::{c_string, grow_until_fits, owned_from_ptr, Error, ErrorKind, Fit, IoCtx, Result};

use crate::image::{which_is_missing, Missing};
use crate::options::ImageOptions;
use crate::{Features, Image, OpenMode};

/// First guess of the number of children; librbd says how many it needs.
const INITIAL_CHILDREN_LEN: usize = 16;

/// Which clone format to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneFormat {
    /// v1: the parent snapshot must be protected; it cannot be unprotected while children
    /// exist.
    V1 = 1,
    /// v2 (Mimic and later): no protection needed; the parent snapshot is kept (moved to the
    /// trash namespace) until its last child goes.
    V2 = 2,
}

impl CloneFormat {
    /// Every format by name, each with what it means in a few words, for help texts.
    pub const NAMES: [(&'static str, &'static str); 2] = [
        ("v1", "the parent snapshot must be protected"),
        ("v2", "no protection needed"),
    ];

    /// `v1` or `v2`, as `rbd clone --rbd-default-clone-format` numbers them.
    pub fn name(self) -> &'static str {
        match self {
            CloneFormat::V1 => "v1",
            CloneFormat::V2 => "v2",
        }
    }
}

impl std::fmt::Display for CloneFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a [name](CloneFormat::name): `v1` or `v2`.
impl std::str::FromStr for CloneFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<CloneFormat> {
        match s {
            "v1" => Ok(CloneFormat::V1),
            "v2" => Ok(CloneFormat::V2),
            other => Err(
                Error::new(ErrorKind::InvalidArgument, "use clone format", other)
                    .with_reason("expected v1 or v2"),
            ),
        }
    }
}

/// How to create a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneOptions {
    /// The clone format.
    pub format: CloneFormat,
    /// The clone's features.
    pub features: Features,
}

impl Default for CloneOptions {
    fn default() -> Self {
        CloneOptions {
            format: CloneFormat::V2,
            features: Features::DEFAULT,
        }
    }
}

/// An image in a parent/child relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedImage {
    /// Pool name.
    pub pool: String,
    /// Pool namespace (empty for the default).
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// Whether the image is in the trash.
    pub trash: bool,
}

impl LinkedImage {
    /// Copies a librbd linked-image spec.
    ///
    /// # Safety
    /// The strings of `spec` must be NUL-terminated (or null) and valid for the call.
    unsafe fn from_raw(spec: &ceph_sys::rbd_linked_image_spec_t) -> LinkedImage {
        // SAFETY: guaranteed by the caller.
        unsafe {
            LinkedImage {
                pool: owned_from_ptr(spec.pool_name),
                namespace: owned_from_ptr(spec.pool_namespace),
                image: owned_from_ptr(spec.image_name),
                trash: spec.trash,
            }
        }
    }
}

/// Creates `child` as a copy-on-write clone of `parent@snap`. Constant time: no data is
/// copied. A missing parent image or snapshot, and an unprotected snapshot under
/// [`CloneFormat::V1`], are errors that say so (librbd's errno alone does not).
pub fn clone(
    parent_ioctx: &IoCtx,
    parent: &str,
    snap: &str,
    child_ioctx: &IoCtx,
    child: &str,
    options: &CloneOptions,
) -> Result<()> {
    let target = format!(
        "{}/{}@{} to {}/{}",
        parent_ioctx.pool(),
        parent,
        snap,
        child_ioctx.pool(),
        child
    );
    let c_parent = c_string(parent, &target)?;
    let c_snap = c_string(snap, &target)?;
    let c_child = c_string(child, &target)?;
    let mut opts = ImageOptions::with_features(options.features)?;
    opts.set_u64(
        ceph_sys::RBD_IMAGE_OPTION_CLONE_FORMAT,
        options.format as u64,
        "clone format",
    )?;
    // SAFETY: both I/O contexts live for the call; names NUL-terminated; live option bag.
    let code = unsafe {
        ceph_sys::api().rbd_clone3(
            parent_ioctx.as_raw(),
            c_parent.as_ptr(),
            c_snap.as_ptr(),
            child_ioctx.as_raw(),
            c_child.as_ptr(),
            opts.raw(),
        )
    };
    if code == -libc::ENOENT {
        let err = Error::from_code(code.into(), "clone", &target);
        let image_spec = format!("{}/{parent}", parent_ioctx.pool());
        return Err(match which_is_missing(parent_ioctx, parent, snap) {
            Missing::Image => {
                err.with_reason(format!("the parent image {image_spec} does not exist"))
            }
            Missing::Snapshot => err.with_reason(format!(
                "the parent snapshot does not exist (image {image_spec} does)"
            )),
            Missing::Unknown => err,
        });
    }
    if code == -libc::EINVAL
        && options.format == CloneFormat::V1
        && !parent_snap_is_protected(parent_ioctx, parent, snap)
    {
        return Err(
            Error::from_code(code.into(), "clone", target).with_reason(format!(
                "snapshot {}/{parent}@{snap} must be protected before a format-1 clone \
                 (protect it, or use clone format 2)",
                parent_ioctx.pool()
            )),
        );
    }
    Error::check(code, "clone", &target).map(drop)
}

/// Whether `parent@snap` is protected; `true` when that cannot be found out, so that only a
/// snapshot known to be unprotected is blamed.
fn parent_snap_is_protected(ioctx: &IoCtx, parent: &str, snap: &str) -> bool {
    Image::open(ioctx, parent, OpenMode::ReadOnly)
        .and_then(|image| image.snap_is_protected(snap))
        .unwrap_or(true)
}

impl Image {
    /// Copies all parent data into this clone and detaches it from the parent. An image that
    /// is no clone is an [`ErrorKind::InvalidArgument`] saying so.
    pub fn flatten(&self) -> Result<()> {
        // SAFETY: open image.
        let code = unsafe { ceph_sys::api().rbd_flatten(self.raw()) };
        // librbd answers EINVAL to an image without a parent.
        if code == -libc::EINVAL && matches!(self.parent(), Ok(None)) {
            return Err(Error::from_code(code.into(), "flatten", self.spec())
                .with_reason("not a clone; nothing to flatten"));
        }
        Error::check(code, "flatten", &self.spec()).map(drop)
    }

    /// The clones of this image's snapshot (open the image at the snapshot first).
    pub fn children(&self) -> Result<Vec<LinkedImage>> {
        let op = "list children of";
        type Entry = ceph_sys::rbd_linked_image_spec_t;
        grow_until_fits::<Entry, _>(INITIAL_CHILDREN_LEN, op, &self.spec(), |len| {
            let mut specs: Vec<Entry> = Vec::with_capacity(len);
            let mut count = len;
            // SAFETY: `specs` has room for `count` entries; on -ERANGE librbd sets `count` to
            // the number needed.
            let code = unsafe {
                ceph_sys::api().rbd_list_children3(self.raw(), specs.as_mut_ptr(), &mut count)
            };
            if code == -libc::ERANGE {
                return Ok(Fit::Grow(count));
            }
            Error::check(code, op, &self.spec())?;
            // SAFETY: librbd initialised `count` <= capacity entries.
            unsafe { specs.set_len(count) };
            // SAFETY: entries' strings are valid until the cleanup below.
            let children = specs
                .iter()
                .map(|s| unsafe { LinkedImage::from_raw(s) })
                .collect();
            // SAFETY: frees exactly the entries librbd filled, once.
            unsafe {
                ceph_sys::api().rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), count)
            };
            Ok(Fit::Done(children))
        })
    }

    /// The parent image and snapshot name of a clone; `None` for an image with no parent.
    pub fn parent(&self) -> Result<Option<(LinkedImage, String)>> {
        let mut image = ceph_sys::rbd_linked_image_spec_t {
            pool_id: 0,
            pool_name: std::ptr::null_mut(),
            pool_namespace: std::ptr::null_mut(),
            image_id: std::ptr::null_mut(),
            image_name: std::ptr::null_mut(),
            trash: false,
        };
        let mut snap = ceph_sys::rbd_snap_spec_t {
            id: 0,
            namespace_type: 0,
            name: std::ptr::null_mut(),
        };
        // SAFETY: open image; valid out-structs that librbd fills and we clean up below.
        let code = unsafe { ceph_sys::api().rbd_get_parent(self.raw(), &mut image, &mut snap) };
        if code == -libc::ENOENT {
            return Ok(None);
        }
        Error::check(code, "get parent of", &self.spec())?;
        // SAFETY: filled by librbd above; strings valid until cleanup.
        let parent = unsafe { LinkedImage::from_raw(&image) };
        // SAFETY: as above.
        let snap_name = unsafe { owned_from_ptr(snap.name) };
        // SAFETY: frees what `rbd_get_parent` allocated, once each.
        unsafe {
            ceph_sys::api().rbd_linked_image_spec_cleanup(&mut image);
            ceph_sys::api().rbd_snap_spec_cleanup(&mut snap);
        }
        if parent.image.is_empty() {
            return Err(Error::new(ErrorKind::Other, "get parent of", self.spec()));
        }
        Ok(Some((parent, snap_name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_formats_parse_back_by_name() {
        for (name, _) in CloneFormat::NAMES {
            let format: CloneFormat = name.parse().unwrap();
            assert_eq!(format.to_string(), name);
        }
        assert_eq!("v2".parse::<CloneFormat>(), Ok(CloneFormat::V2));
        let err = "v3".parse::<CloneFormat>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(err.to_string(), "use clone format v3: expected v1 or v2");
    }
}
