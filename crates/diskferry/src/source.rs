//! The `Source` role: a disk whose allocated extents can be read in offset order.

use async_trait::async_trait;

use crate::{Extent, FormatOrigin, Result};

/// A readable disk image.
///
/// Implementations read ahead in parallel behind [`Source::next_extent`] with a bounded number
/// of buffers, so the pipeline only pulls. Unallocated and known-zero ranges are simply not
/// yielded: they cost nothing.
#[async_trait]
pub trait Source: Send {
    /// The source's address, for messages.
    fn describe(&self) -> String;

    /// The format: `"qcow2"`, `"raw"`, `"raw.zst"`, `"rbd"`.
    fn format(&self) -> &'static str;

    /// How the format was decided (see [`crate::FormatOrigin`]). Sources that can only be
    /// of their format (an RBD image, a Longhorn backup) keep the default, `Recorded`;
    /// [`crate::sources::open_source`] says which it was for objects.
    fn format_origin(&self) -> FormatOrigin {
        FormatOrigin::Recorded
    }

    /// The content digest, with its algorithm, that diskferry recorded with the source when
    /// it wrote it (an export's object metadata), if any: a copy of it is digested with that
    /// algorithm and must end with the same digest.
    fn recorded_digest(&self) -> Option<crate::digest::RecordedDigest> {
        None
    }

    /// The algorithm a copy of this source is digested with: that of its recorded digest
    /// (the default does so), or one the source's own check needs (a Longhorn backup's
    /// label), so no byte is hashed twice; `None` for the default of new copies.
    fn digest_algorithm(&self) -> Option<crate::digest::DigestAlgorithm> {
        self.recorded_digest().map(|r| r.algorithm)
    }

    /// The virtual disk size in bytes.
    fn size(&self) -> u64;

    /// The next extent, in strictly increasing, non-overlapping offset order, inside
    /// `[0, size)`; `None` at the end.
    async fn next_extent(&mut self) -> Result<Option<Extent>>;
}
