//! Progress reporting. The library has no UI: the binary implements [`Progress`] with a
//! progress bar, library users with whatever they like.

/// Receives progress of one transfer. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// A transfer of a disk of `size` bytes starts.
    fn start(&self, what: &str, size: u64) {
        let _ = (what, size);
    }

    /// Everything before `offset` of the disk has been handled (written, or skipped as a hole).
    fn position(&self, offset: u64) {
        let _ = offset;
    }

    /// The transfer ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
