//! Sinks: RBD images, and a null sink that only digests (verification).

mod compare;
mod null;
mod object;
mod open;
mod rbd;
mod verified;

pub use self::compare::{CompareSink, Comparison};
pub use self::null::NullSink;
pub use self::object::{
    check_cluster_size, ObjectSink, ObjectSinkOptions, DEFAULT_CLEANUP_PATIENCE,
    DEFAULT_EXPORT_PART_SIZE, DEFAULT_ZSTD_LEVEL, S3_METADATA_COMPRESSION, S3_METADATA_DIGEST,
    S3_METADATA_DIGEST_ALGORITHM, S3_METADATA_FORMAT, S3_METADATA_SOURCE,
    S3_METADATA_SOURCE_FORMAT, S3_METADATA_VIRTUAL_SIZE,
};
pub use self::open::{check_object_destination, check_sink, open_sink, SinkOptions};
pub(crate) use self::rbd::{refuse_working_name, working_image_writer, WorkingTail, WorkingWriter};
pub use self::rbd::{
    RbdSink, RbdSinkOptions, DEFAULT_WRITES_IN_FLIGHT, METADATA_DIGEST, METADATA_DIGEST_ALGORITHM,
    METADATA_KEPT, METADATA_SOURCE, METADATA_SOURCE_FORMAT, METADATA_WRITER, WORKING_NAME_INFIX,
};
pub use self::verified::Verified;
pub use crate::format::ObjectFormat;
