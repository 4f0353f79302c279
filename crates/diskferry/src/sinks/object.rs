//! The object sink: a disk stored as one object, an S3/RGW object (multipart upload) or a
//! local file, as qcow2, raw, or zstd-compressed raw (`raw.zst`).
//!
//! The sink is an [`Encoder`] of the format ([`crate::formats`]) in front of the store's
//! [`ObjectWriter`]. Nothing is staged on local disk and memory is bounded by configuration,
//! not by the disk:
//! - **qcow2**: [`Qcow2Encoder`] emits data clusters at increasing offsets from one cluster
//!   on, then the metadata tail, then the header at offset 0: the order an S3 writer takes
//!   with part 1 (which holds the header) kept in memory and uploaded last.
//! - **raw**: [`RawEncoder`] passes the data as it comes; the object writer fills the holes
//!   between extents with zeros (an uploaded object gets them written; a local file keeps
//!   them as holes).
//! - **raw.zst**: [`RawZstEncoder`], one zstd stream (see [`crate::formats::raw_zst`] for its
//!   framing), compressed on the blocking pool one extent at a time; holes become RLE frames
//!   without compression.
//!
//! The object goes to any [`ObjectStore`] (an S3 bucket, a local directory) through its
//! [`ObjectWriter`]. Failure or interruption aborts the upload (or removes the temporary
//! file): no partial object becomes visible. If the store cannot be reached to abort, the
//! writer retries for [`ObjectSinkOptions::cleanup_patience`] before the error names the
//! upload left behind.
//!
//! # Object metadata
//! The object carries [`S3_METADATA_VIRTUAL_SIZE`], [`S3_METADATA_FORMAT`],
//! [`S3_METADATA_COMPRESSION`], [`S3_METADATA_SOURCE`], [`S3_METADATA_SOURCE_FORMAT`],
//! [`S3_METADATA_DIGEST`] and [`S3_METADATA_DIGEST_ALGORITHM`] (on S3 as `x-amz-meta-`
//! headers, on a local file as `user.` extended attributes). The content digest and the
//! source's format are known only once the last extent has been read, so they are given to
//! the writer at the end ([`ObjectWriter::set_metadata`]); an S3 writer whose upload has
//! started adds them with a server-side copy of the object onto itself (see
//! [`objstore::S3Writer`]). Between the two requests the object exists without
//! [`S3_METADATA_DIGEST`]; readers should treat an object without it as incomplete. If the
//! metadata update fails, the object is deleted and the export fails.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
pub use objstore::DEFAULT_CLEANUP_PATIENCE;
use objstore::{ObjectStore, ObjectWriter, PutOptions, WriteOptions, DEFAULT_PARTS_IN_FLIGHT};
use qcow2::codec::Codec;
use qcow2::WriterOptions;

use crate::formats::{Chunk, Encoder, Qcow2Encoder, RawEncoder, RawZstEncoder};
use crate::{Address, Context, Error, Extent, ObjectFormat, Result, Sink, SinkReport, Summary};

/// S3 metadata key: the content digest (set when the upload is complete).
pub const S3_METADATA_DIGEST: &str = "diskferry-digest";
/// S3 metadata key: the digest's algorithm ([`crate::DigestAlgorithm::name`]).
pub const S3_METADATA_DIGEST_ALGORITHM: &str = "diskferry-digest-algorithm";
/// S3 metadata key: the virtual disk size in bytes.
pub const S3_METADATA_VIRTUAL_SIZE: &str = "diskferry-virtual-size";
/// S3 metadata key: the object format (`qcow2`, `raw`, `raw.zst`).
pub const S3_METADATA_FORMAT: &str = "diskferry-format";
/// S3 metadata key: the qcow2 cluster compression (`none`, `deflate`, `zstd`), or `zstd` for
/// `raw.zst`, `none` for raw.
pub const S3_METADATA_COMPRESSION: &str = "diskferry-compression";
/// S3 metadata key: where the disk came from (e.g. `rbd:pool/image@snap`).
pub const S3_METADATA_SOURCE: &str = "diskferry-source";
/// S3 metadata key: the source's format.
pub const S3_METADATA_SOURCE_FORMAT: &str = "diskferry-source-format";

/// Default S3 part size of exports: 8 MiB. With [`DEFAULT_PARTS_IN_FLIGHT`] uploads, part 1
/// and the part being filled, the sink holds at most 6 × 8 MiB = 48 MiB of parts; measured
/// here, 16 MiB parts were no faster and took the whole export past 256 MiB of RSS. Raised
/// automatically for objects that could need more than 10 000 parts (from 78 GiB on).
pub const DEFAULT_EXPORT_PART_SIZE: usize = 8 << 20;
/// Default zstd level of `raw.zst` (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How an [`ObjectSink`] encodes and stores the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSinkOptions {
    /// The object format.
    pub format: ObjectFormat,
    /// qcow2 cluster compression (`None`: uncompressed). Only for qcow2.
    pub compression: Option<Codec>,
    /// qcow2 cluster size.
    pub cluster_size: u64,
    /// Compression tasks in flight for qcow2 (default: the number of cores).
    pub threads: usize,
    /// zstd level of `raw.zst`.
    pub zstd_level: i32,
    /// S3 part size: a lower bound, raised when the object could need more than 10 000 parts.
    pub part_size: usize,
    /// S3 part uploads in flight.
    pub parts_in_flight: usize,
    /// Replace an existing object (`--force`); otherwise an existing one is refused before
    /// anything is written.
    pub force: bool,
    /// How long to keep retrying the abort of an upload when the store is unreachable.
    pub cleanup_patience: Duration,
    /// Flush a local file to stable storage before it appears under its name (S3 objects
    /// are durable when the upload completes).
    pub sync: bool,
}

impl Default for ObjectSinkOptions {
    fn default() -> Self {
        ObjectSinkOptions {
            format: ObjectFormat::Qcow2,
            compression: None,
            cluster_size: WriterOptions::default().cluster_size,
            threads: WriterOptions::default().threads,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            part_size: DEFAULT_EXPORT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            force: false,
            cleanup_patience: DEFAULT_CLEANUP_PATIENCE,
            sync: true,
        }
    }
}

impl ObjectSinkOptions {
    /// The compression's name as recorded in metadata and reports.
    pub fn compression_name(&self) -> &'static str {
        match (self.format, self.compression) {
            (ObjectFormat::Qcow2, Some(Codec::Deflate { .. })) => "deflate",
            (ObjectFormat::Qcow2, Some(Codec::Zstd { .. })) | (ObjectFormat::RawZstd, _) => "zstd",
            _ => "none",
        }
    }

    /// Checks that the options fit together (done again by [`ObjectSink::create`]).
    pub fn validate(&self) -> Result<()> {
        if self.compression.is_some() && self.format != ObjectFormat::Qcow2 {
            return Err(Error::InvalidOption(format!(
                "cluster compression is a qcow2 option; for {} use the raw.zst format to compress",
                self.format
            )));
        }
        if self.parts_in_flight == 0 {
            return Err(Error::InvalidOption(
                "parts in flight must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The encoder of the format, for a disk of `size` bytes; `location` names the object
    /// in errors. A bad option fails here, before any store is touched.
    pub fn encoder(&self, size: u64, location: &str) -> Result<Box<dyn Encoder>> {
        Ok(match self.format {
            ObjectFormat::Qcow2 => Box::new(Qcow2Encoder::new(
                size,
                self.cluster_size,
                self.compression,
                self.threads,
                location,
            )?),
            ObjectFormat::Raw => Box::new(RawEncoder::new(size)),
            ObjectFormat::RawZstd => Box::new(RawZstEncoder::new(size, self.zstd_level, location)?),
        })
    }
}

/// Writes a disk as one object (see the module documentation).
#[derive(Debug)]
pub struct ObjectSink {
    location: String,
    format: ObjectFormat,
    writer: Box<dyn ObjectWriter>,
    /// Taken when the disk ends.
    encoder: Option<Box<dyn Encoder>>,
}

impl ObjectSink {
    /// Prepares the object `destination` (S3 or a local path) for a disk of `size` bytes from
    /// `source` (recorded in the metadata). An existing object is refused unless
    /// `options.force`, before anything is written.
    pub async fn create(
        ctx: &Context,
        destination: &Address,
        size: u64,
        source: &str,
        options: &ObjectSinkOptions,
    ) -> Result<ObjectSink> {
        options.validate()?;
        let (store, key) = ctx.store_for(destination).await?;
        Self::create_in(store.as_ref(), &key, size, source, options).await
    }

    /// Prepares the object `key` of `store` for a disk of `size` bytes from `source`, as
    /// [`ObjectSink::create`] does.
    pub async fn create_in(
        store: &dyn ObjectStore,
        key: &str,
        size: u64,
        source: &str,
        options: &ObjectSinkOptions,
    ) -> Result<ObjectSink> {
        options.validate()?;
        let location = store.describe(key);
        let mut encoder = options.encoder(size, &location)?;
        let metadata: HashMap<String, String> = [
            (S3_METADATA_VIRTUAL_SIZE, size.to_string()),
            (S3_METADATA_FORMAT, options.format.name().to_string()),
            (
                S3_METADATA_COMPRESSION,
                options.compression_name().to_string(),
            ),
            (S3_METADATA_SOURCE, header_value(source)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let write = WriteOptions {
            put: PutOptions {
                metadata,
                content_type: Some(options.format.content_type().to_string()),
                overwrite: options.force,
            },
            part_size: options.part_size,
            parts_in_flight: options.parts_in_flight,
            expected_size: Some(encoder.estimated_size()),
            sparse_size: encoder.sparse_size(),
            sync: options.sync,
            cleanup_patience: options.cleanup_patience,
        };
        let writer = store.writer(key, write).await?;
        let start = encoder.start();
        let mut sink = ObjectSink {
            location,
            format: options.format,
            writer,
            encoder: Some(encoder),
        };
        if let Err(e) = sink.put(start).await {
            return Err(sink.fail(e).await);
        }
        Ok(sink)
    }

    /// The object format.
    pub fn format(&self) -> ObjectFormat {
        self.format
    }

    /// The S3 part size in use (`None` for local files).
    pub fn part_size(&self) -> Option<usize> {
        self.writer.part_size()
    }

    /// Writes encoded bytes where they belong in the object.
    async fn put(&mut self, chunks: Vec<Chunk>) -> Result<()> {
        for chunk in chunks.into_iter().filter(|c| !c.data.is_empty()) {
            self.writer
                .write_at(chunk.offset, chunk.data)
                .await
                .map_err(object_error)?;
        }
        Ok(())
    }

    /// The error for data after the end (the encoder is gone).
    fn ended(&self) -> Error {
        Error::SourceContract {
            source_name: self.location.clone(),
            reason: "data came after the end of the disk".into(),
        }
    }

    async fn write_extent(&mut self, extent: Extent) -> Result<()> {
        // Explicit zero ranges read as zeros like holes: every format fills or skips holes.
        let Extent::Data { offset, data } = extent else {
            return Ok(());
        };
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(self.ended());
        };
        let chunks = encoder.push(offset, data).await?;
        self.put(chunks).await
    }

    /// Writes what remains after the last extent.
    async fn write_tail(&mut self) -> Result<()> {
        let Some(encoder) = self.encoder.take() else {
            return Err(self.ended());
        };
        let chunks = encoder.finish().await?;
        self.put(chunks).await
    }

    /// Aborts after `error`, and returns `error` (or both errors if the cleanup failed).
    async fn fail(self, error: Error) -> Error {
        let left_behind = self.describe();
        error.after_cleanup(self.cleanup().await, left_behind)
    }

    /// Aborts the upload or removes the temporary file (the writer retries an abort that
    /// cannot reach the store for `cleanup_patience`).
    async fn cleanup(self) -> Result<()> {
        self.writer.abort().await.map_err(object_error)
    }
}

/// An object store's error as this crate's: a failure whose cleanup failed too keeps that
/// kind ([`Error::CleanupFailed`]).
fn object_error(error: objstore::Error) -> Error {
    match error {
        objstore::Error::CleanupFailed {
            error,
            cleanup,
            left_behind,
        } => Error::Object(*error).after_cleanup(Err(Error::Object(*cleanup)), left_behind),
        other => Error::Object(other),
    }
}

/// A metadata value as an HTTP header allows it: printable ASCII, the rest percent-encoded.
fn header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[async_trait]
impl Sink for ObjectSink {
    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        self.write_extent(extent).await
    }

    async fn finish(mut self: Box<Self>, summary: &Summary) -> Result<SinkReport> {
        if let Err(error) = self.write_tail().await {
            return Err((*self).fail(error).await);
        }
        let ObjectSink {
            location,
            mut writer,
            ..
        } = *self;
        writer.set_metadata(S3_METADATA_DIGEST, &summary.digest);
        // The algorithm actually used (the source's, when it recorded one).
        writer.set_metadata(
            S3_METADATA_DIGEST_ALGORITHM,
            summary.digest_algorithm.name(),
        );
        writer.set_metadata(
            S3_METADATA_SOURCE_FORMAT,
            &header_value(summary.source_format),
        );
        // A writer whose `finish` fails has cleaned up already.
        let written = writer.finish().await.map_err(object_error)?;
        Ok(SinkReport {
            location,
            bytes_written: written.size,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        (*self).cleanup().await
    }
}

/// `--cluster-size`: a power of two that qcow2 takes (512 B to 2 MiB), refused before
/// anything is written otherwise.
pub fn check_cluster_size(bytes: u64) -> Result<()> {
    use qcow2::format::{MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
    let bits = bytes.trailing_zeros();
    if bytes.is_power_of_two() && (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "--cluster-size {bytes}: a power of two from {} B to {} MiB",
        1u64 << MIN_CLUSTER_BITS,
        (1u64 << MAX_CLUSTER_BITS) >> 20
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        for (name, format) in [
            ("vm/disk.qcow2", Some(ObjectFormat::Qcow2)),
            ("DISK.QCOW2", Some(ObjectFormat::Qcow2)),
            ("disk.raw", Some(ObjectFormat::Raw)),
            ("disk.img", Some(ObjectFormat::Raw)),
            ("disk.raw.zst", Some(ObjectFormat::RawZstd)),
            ("disk.zst", Some(ObjectFormat::RawZstd)),
            ("disk", None),
            ("disk.vmdk", None),
        ] {
            assert_eq!(ObjectFormat::from_name(name), format, "{name}");
        }
        let dest = Address::parse("s3://bkt/x/disk").unwrap();
        assert_eq!(ObjectFormat::for_destination(&dest), ObjectFormat::Qcow2);
        assert_eq!(
            "raw.zst".parse::<ObjectFormat>().unwrap(),
            ObjectFormat::RawZstd
        );
        assert!("vhd".parse::<ObjectFormat>().is_err());
    }

    #[test]
    fn compression_is_a_qcow2_option() {
        let options = ObjectSinkOptions {
            format: ObjectFormat::Raw,
            compression: Some(Codec::Zstd { level: 3 }),
            ..Default::default()
        };
        assert!(options
            .validate()
            .unwrap_err()
            .to_string()
            .contains("raw.zst"));
        assert_eq!(
            ObjectSinkOptions {
                format: ObjectFormat::RawZstd,
                ..Default::default()
            }
            .compression_name(),
            "zstd"
        );
    }

    #[test]
    fn metadata_values_are_encoded() {
        assert_eq!(header_value("rbd:p/img@s"), "rbd:p/img@s");
        assert_eq!(header_value("rbd:p/é%"), "rbd:p/%C3%A9%25");
    }
}
