//! RAII wrapper of `rbd_image_options_t`, the option bag of create and clone.

use rados::{c_string, Error, Result};

use crate::Features;

pub(crate) struct ImageOptions {
    raw: ceph_sys::rbd_image_options_t,
}

impl ImageOptions {
    pub(crate) fn new() -> ImageOptions {
        let mut raw: ceph_sys::rbd_image_options_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; librbd allocates the option bag.
        unsafe { ceph_sys::api().rbd_image_options_create(&mut raw) };
        ImageOptions { raw }
    }

    /// A new option bag with the image features set, as create and clone both start.
    pub(crate) fn with_features(features: Features) -> Result<ImageOptions> {
        let mut opts = ImageOptions::new();
        opts.set_u64(
            ceph_sys::RBD_IMAGE_OPTION_FEATURES,
            features.bits(),
            "features",
        )?;
        Ok(opts)
    }

    pub(crate) fn set_u64(&mut self, option: u32, value: u64, what: &str) -> Result<()> {
        // SAFETY: `raw` is a live option bag owned by `self`.
        let code =
            unsafe { ceph_sys::api().rbd_image_options_set_uint64(self.raw, option as i32, value) };
        Error::check(code, "set image option", &what).map(drop)
    }

    pub(crate) fn set_str(&mut self, option: u32, value: &str, what: &str) -> Result<()> {
        let c_value = c_string(value, what)?;
        // SAFETY: live option bag; librbd copies the NUL-terminated string.
        let code = unsafe {
            ceph_sys::api().rbd_image_options_set_string(self.raw, option as i32, c_value.as_ptr())
        };
        Error::check(code, "set image option", &what).map(drop)
    }

    pub(crate) fn raw(&self) -> ceph_sys::rbd_image_options_t {
        self.raw
    }
}

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: created by `rbd_image_options_create`, destroyed once.
        unsafe { ceph_sys::api().rbd_image_options_destroy(self.raw) };
    }
}
