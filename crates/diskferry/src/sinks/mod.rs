//! Sinks: RBD images, and a null sink that only digests (verification).

mod null;
mod rbd;

pub use self::null::NullSink;
pub use self::rbd::{
    RbdSink, RbdSinkOptions, DEFAULT_WRITES_IN_FLIGHT, METADATA_DIGEST, METADATA_DIGEST_ALGORITHM,
    METADATA_SOURCE, METADATA_SOURCE_FORMAT,
};
