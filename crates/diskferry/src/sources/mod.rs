//! Sources: raw, qcow2 and raw.zst images behind any range reader (file, HTTP(S), S3; their
//! readers live with their writers in [`crate::formats`]), and RBD images.

mod detect;
mod rbd;

pub use self::detect::{
    detect_format, open_object, open_object_as, open_source, open_source_as, recorded_format,
    MAGIC_PROBE_LEN,
};
pub use self::rbd::{RbdSource, RbdSourceOptions};
pub use crate::formats::{
    Qcow2Source, RawSource, ZstdRawSource, QCOW2_READ_AHEAD_BYTES, QCOW2_REMOTE_READ_AHEAD_BYTES,
    QCOW2_REMOTE_READ_SIZE,
};

/// Default size of one read from a range reader (a ranged GET for S3 and HTTP).
pub const DEFAULT_READ_SIZE: usize = 4 << 20;
/// Default number of reads in flight per source.
pub const DEFAULT_READS_IN_FLIGHT: usize = 8;
