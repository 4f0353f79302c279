//! Conversions between Rust strings and the C strings librados and librbd take and return.

use std::ffi::{c_char, CStr, CString};

use crate::{Error, ErrorKind, Result};

/// Converts a name for C, refusing interior NUL bytes (C would silently truncate the name).
pub fn c_string(value: &str, what: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::new(ErrorKind::InvalidName, "use name", what))
}

/// Reads a NUL-terminated string out of a fixed C buffer, stopping at the buffer's end
/// if no NUL is found (never reads past the slice).
pub fn string_from_c_buf(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Copies a C string owned by librados/librbd into an owned `String`.
///
/// Returns an empty string for a null pointer.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string that stays valid for the call.
pub unsafe fn owned_from_ptr(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees a valid NUL-terminated string; null was handled above.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_string_lossy().into_owned()
}

/// Splits a buffer of NUL-separated strings (ending with an empty string) as librados's
/// `rados_pool_list` and librbd's `rbd_metadata_list` fill them.
pub fn split_nul_list(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_list_splits_until_the_empty_entry() {
        assert_eq!(split_nul_list(b"rbd\0.mgr\0\0junk"), vec!["rbd", ".mgr"]);
        assert!(split_nul_list(b"\0").is_empty());
    }

    #[test]
    fn interior_nul_is_refused() {
        let err = c_string("a\0b", "image a\\0b").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);
    }
}
