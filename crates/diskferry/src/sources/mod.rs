//! Sources: raw and qcow2 images behind any range reader (file, HTTP(S), S3), and RBD images.

mod detect;
mod qcow2;
mod raw;
mod rbd;
pub mod zstd_raw;

pub use self::detect::{
    detect_format, open_object, open_source, open_source_as, recorded_format, MAGIC_PROBE_LEN,
};
pub use self::qcow2::{
    Qcow2Source, QCOW2_READ_AHEAD_BYTES, QCOW2_REMOTE_READ_AHEAD_BYTES, QCOW2_REMOTE_READ_SIZE,
};
pub use self::raw::RawSource;
pub use self::rbd::{RbdSource, RbdSourceOptions};
pub use self::zstd_raw::ZstdRawSource;

/// Default size of one read from a range reader (a ranged GET for S3 and HTTP).
pub const DEFAULT_READ_SIZE: usize = 4 << 20;
/// Default number of reads in flight per source.
pub const DEFAULT_READS_IN_FLIGHT: usize = 8;
