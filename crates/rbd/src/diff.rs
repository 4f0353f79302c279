//! `rbd_diff_iterate2`: the allocated extents of an image, or the extents changed since a
//! snapshot.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use rados::{c_string, Error, Result};

use crate::Image;

/// The return value that stops the iteration when the visitor asks to stop.
const STOP_ITERATION: c_int = -libc::ECANCELED;

/// One extent reported by [`Image::diff_iterate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// `true` for data; `false` for a range that became a hole (zero) since `from_snap`.
    pub exists: bool,
}

struct Visit<'a> {
    visitor: &'a mut dyn FnMut(DiffExtent) -> bool,
    panic: Option<Box<dyn Any + Send>>,
    stopped: bool,
}

/// The diff callback. Must not unwind into C: a panic is stored and re-raised after the
/// iteration returns.
extern "C" fn visit_extent(offset: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut Visit` passed by `diff_iterate`, which outlives the
    // synchronous `rbd_diff_iterate2` call that invokes this callback.
    let visit = unsafe { &mut *arg.cast::<Visit>() };
    // librbd does not always stop at the first non-zero return (its object-map path keeps
    // calling back): once stopped, or after a panic, the visitor is not called again.
    if visit.stopped || visit.panic.is_some() {
        return STOP_ITERATION;
    }
    let extent = DiffExtent {
        offset,
        len: len as u64,
        exists: exists != 0,
    };
    match catch_unwind(AssertUnwindSafe(|| (visit.visitor)(extent))) {
        Ok(true) => 0,
        Ok(false) => {
            visit.stopped = true;
            STOP_ITERATION
        }
        Err(payload) => {
            visit.panic = Some(payload);
            STOP_ITERATION
        }
    }
}

impl Image {
    /// Calls `visitor` for each extent of `[offset, offset + len)`, in offset order:
    /// with `from_snap` = `None`, the allocated extents; with a snapshot, the extents changed
    /// since it (`exists == false` marks ranges that became holes). `whole_object` reports
    /// whole objects (fast with the fast-diff feature). `include_parent` also reports data a
    /// clone reads from its parent. The visitor returns `false` to stop early.
    ///
    /// Blocks the calling thread: call it from `spawn_blocking` in async code.
    pub fn diff_iterate(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
        visitor: &mut dyn FnMut(DiffExtent) -> bool,
    ) -> Result<()> {
        let target = match from_snap {
            Some(snap) => format!("{} since @{}", self.spec(), snap),
            None => self.spec().to_string(),
        };
        let c_snap = from_snap.map(|s| c_string(s, &target)).transpose()?;
        let snap_ptr = c_snap.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut visit = Visit {
            visitor,
            panic: None,
            stopped: false,
        };
        // SAFETY: open image; snapshot name NUL-terminated or null; the callback matches the
        // C signature and `visit` outlives this synchronous call.
        let code = unsafe {
            ceph_sys::api().rbd_diff_iterate2(
                self.raw(),
                snap_ptr,
                offset,
                len,
                u8::from(include_parent),
                u8::from(whole_object),
                Some(visit_extent),
                (&mut visit as *mut Visit).cast::<c_void>(),
            )
        };
        if let Some(payload) = visit.panic {
            resume_unwind(payload);
        }
        if visit.stopped && (code == STOP_ITERATION || code >= 0) {
            return Ok(());
        }
        Error::check(code, "iterate extents of", &target).map(drop)
    }

    /// Collects [`Image::diff_iterate`] over the whole image into a vector.
    pub fn diff_extents(
        &self,
        from_snap: Option<&str>,
        include_parent: bool,
        whole_object: bool,
    ) -> Result<Vec<DiffExtent>> {
        let size = self.size()?;
        let mut extents = Vec::new();
        self.diff_iterate(
            from_snap,
            0,
            size,
            include_parent,
            whole_object,
            &mut |extent| {
                extents.push(extent);
                true
            },
        )?;
        Ok(extents)
    }
}
