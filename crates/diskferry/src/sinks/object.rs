//! The object sink: a disk stored as one object, an S3/RGW object (multipart upload) or a
//! local file, as qcow2, raw, or zstd-compressed raw (`raw.zst`).
//!
//! Nothing is staged on local disk and memory is bounded by configuration, not by the disk:
//! - **qcow2**: the metadata-last [`Qcow2Writer`] emits data clusters at increasing offsets
//!   from one cluster on, then the metadata tail, then the header at offset 0. That is the
//!   [`S3Writer`] contract: part 1 (which holds the header) stays in memory and is uploaded
//!   last; every other part is uploaded, in parallel, as soon as it is full.
//! - **raw**: data as it comes; the object writer fills the holes between extents with
//!   zeros (an uploaded object gets them written; a local file keeps them as holes).
//! - **raw.zst**: one zstd stream (see [`crate::sources::zstd_raw`] for its framing), compressed
//!   on the blocking pool one extent at a time; holes become RLE frames without compression.
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
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
pub use objstore::DEFAULT_CLEANUP_PATIENCE;
use objstore::{ObjectStore, ObjectWriter, PutOptions, WriteOptions, DEFAULT_PARTS_IN_FLIGHT};
use qcow2::codec::Codec;
use qcow2::{Qcow2Writer, WriterOptions};
use zstd::stream::raw::{InBuffer, Operation as _, OutBuffer};

use crate::digest::DIGEST_ALGORITHM;
use crate::sources::zstd_raw;
use crate::{Address, Context, Error, Extent, ObjectFormat, Result, Sink, SinkReport, Summary};

/// S3 metadata key: the content digest (set when the upload is complete).
pub const S3_METADATA_DIGEST: &str = "diskferry-digest";
/// S3 metadata key: the digest's algorithm ([`DIGEST_ALGORITHM`]).
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
/// Holes at least this long become zero-run frames in `raw.zst` (shorter ones are compressed).
const ZERO_FRAME_MIN: u64 = 1 << 20;
/// Piece size of the zeros compressed into `raw.zst` for short holes.
const ZERO_PIECE: usize = 1 << 20;

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

    /// An upper estimate of the object size for a disk of `size` bytes (part sizing).
    fn estimated_object_size(&self, size: u64) -> u64 {
        match self.format {
            // L2 tables (8 bytes per cluster) and refcounts: far below 1/64.
            ObjectFormat::Qcow2 => size + size / 64 + 4 * self.cluster_size,
            ObjectFormat::Raw => size,
            // zstd's worst-case expansion is tiny; plus the header frame.
            ObjectFormat::RawZstd => size + size / 128 + (1 << 20),
        }
    }
}

/// How the disk is turned into object bytes.
enum Encoder {
    Qcow2(Box<Qcow2Writer>),
    Raw,
    /// The zstd state lives on the blocking pool while a step runs.
    Zstd(Option<ZstdState>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Qcow2(_) => "Qcow2",
            Encoder::Raw => "Raw",
            Encoder::Zstd(_) => "Zstd",
        })
    }
}

struct ZstdState {
    encoder: zstd::stream::raw::Encoder<'static>,
    /// Compressed bytes not yet handed out.
    out: Vec<u8>,
    /// Whether the current zstd frame has input (and so must be finished).
    frame_open: bool,
}

/// Room reserved in the output before each call into the encoder.
const ZSTD_OUT_RESERVE: usize = 256 * 1024;

impl ZstdState {
    fn new(level: i32) -> std::io::Result<ZstdState> {
        let mut encoder = zstd::stream::raw::Encoder::new(level)?;
        encoder.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
        Ok(ZstdState {
            encoder,
            out: Vec::new(),
            frame_open: false,
        })
    }

    fn compress(&mut self, input: &[u8]) -> std::io::Result<()> {
        let mut src = InBuffer::around(input);
        while src.pos < input.len() {
            self.out.reserve(ZSTD_OUT_RESERVE);
            let pos = self.out.len();
            let mut dst = OutBuffer::around_pos(&mut self.out, pos);
            self.encoder.run(&mut src, &mut dst)?;
        }
        self.frame_open = true;
        Ok(())
    }

    /// Ends the current frame (if it has input); the next input starts a new one.
    fn end_frame(&mut self) -> std::io::Result<()> {
        if !self.frame_open {
            return Ok(());
        }
        loop {
            self.out.reserve(ZSTD_OUT_RESERVE);
            let pos = self.out.len();
            let mut dst = OutBuffer::around_pos(&mut self.out, pos);
            if self.encoder.finish(&mut dst, true)? == 0 {
                break;
            }
        }
        self.encoder.reinit()?;
        self.frame_open = false;
        Ok(())
    }

    fn take_output(&mut self, out: &mut Vec<Bytes>) {
        if !self.out.is_empty() {
            out.push(Bytes::from(std::mem::take(&mut self.out)));
        }
    }

    /// `gap` zeros then `data`; returns the object bytes produced, in order.
    fn step(&mut self, gap: u64, data: &[u8], end: bool) -> std::io::Result<Vec<Bytes>> {
        let mut out = Vec::new();
        if gap >= ZERO_FRAME_MIN {
            self.end_frame()?;
            self.take_output(&mut out);
            out.extend(zstd_raw::zero_frame(gap));
        } else if gap > 0 {
            let zeros = zero_piece();
            let mut left = gap;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                self.compress(&zeros[..n])?;
                left -= n as u64;
            }
        }
        if !data.is_empty() {
            self.compress(data)?;
        }
        if end {
            self.end_frame()?;
        }
        self.take_output(&mut out);
        Ok(out)
    }
}

fn zero_piece() -> &'static Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    // calloc'd: the pages are never touched, so they cost no memory.
    ZEROS.get_or_init(|| Bytes::from(vec![0u8; ZERO_PIECE]))
}

/// Writes a disk as one object (see the module documentation).
#[derive(Debug)]
pub struct ObjectSink {
    location: String,
    size: u64,
    format: ObjectFormat,
    writer: Box<dyn ObjectWriter>,
    encoder: Encoder,
    /// Disk bytes consumed so far (raw.zst compresses the gaps up to here).
    position: u64,
    /// Object bytes written so far (raw.zst appends here).
    object_position: u64,
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
        let compression = options.compression_name();
        let content_type = options.format.content_type();
        let metadata: HashMap<String, String> = [
            (S3_METADATA_VIRTUAL_SIZE, size.to_string()),
            (S3_METADATA_FORMAT, options.format.name().to_string()),
            (S3_METADATA_COMPRESSION, compression.to_string()),
            (S3_METADATA_SOURCE, header_value(source)),
            (S3_METADATA_DIGEST_ALGORITHM, DIGEST_ALGORITHM.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // The encoder first: a bad option fails before the store is touched.
        let encoder = match options.format {
            ObjectFormat::Qcow2 => {
                let writer = Qcow2Writer::new(
                    size,
                    WriterOptions {
                        cluster_size: options.cluster_size,
                        compression: options.compression,
                        threads: options.threads.max(1),
                        ..WriterOptions::default()
                    },
                )
                .map_err(|source| Error::Qcow2Write {
                    address: location.clone(),
                    source,
                })?;
                Encoder::Qcow2(Box::new(writer))
            }
            ObjectFormat::Raw => Encoder::Raw,
            ObjectFormat::RawZstd => {
                let state = ZstdState::new(options.zstd_level).map_err(|e| {
                    Error::InvalidOption(format!("zstd level {}: {e}", options.zstd_level))
                })?;
                Encoder::Zstd(Some(state))
            }
        };
        let write = WriteOptions {
            put: PutOptions {
                metadata,
                content_type: Some(content_type.to_string()),
                overwrite: options.force,
            },
            part_size: options.part_size,
            parts_in_flight: options.parts_in_flight,
            expected_size: Some(options.estimated_object_size(size)),
            // A raw object is the disk: its holes are zeros, which the writer fills in (a
            // new local file has them for free).
            sparse_size: (options.format == ObjectFormat::Raw).then_some(size),
            sync: options.sync,
            cleanup_patience: options.cleanup_patience,
        };
        let writer = store.writer(key, write).await?;
        let mut sink = ObjectSink {
            location,
            size,
            format: options.format,
            writer,
            encoder,
            position: 0,
            object_position: 0,
        };
        if options.format == ObjectFormat::RawZstd {
            if let Err(e) = sink.append(vec![zstd_raw::header_frame(size)]).await {
                return Err(sink.fail(e).await);
            }
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

    async fn put(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.writer
            .write_at(offset, data)
            .await
            .map_err(object_error)
    }

    /// Appends object bytes (raw.zst).
    async fn append(&mut self, pieces: Vec<Bytes>) -> Result<()> {
        for piece in pieces {
            let len = piece.len() as u64;
            self.put(self.object_position, piece).await?;
            self.object_position += len;
        }
        Ok(())
    }

    /// One zstd step on the blocking pool.
    async fn zstd_step(&mut self, gap: u64, data: Bytes, end: bool) -> Result<()> {
        let Encoder::Zstd(slot) = &mut self.encoder else {
            unreachable!("zstd step on another encoder")
        };
        let mut state = slot.take().ok_or_else(|| Error::SourceContract {
            source_name: self.location.clone(),
            reason: "the zstd encoder was lost after an earlier failure".into(),
        })?;
        let (state, produced) = tokio::task::spawn_blocking(move || {
            let produced = state.step(gap, &data, end);
            (state, produced)
        })
        .await
        .map_err(|e| Error::io("compress with zstd", std::io::Error::other(e)))?;
        *slot = Some(state);
        let pieces = produced.map_err(|e| Error::io("compress with zstd", e))?;
        self.append(pieces).await
    }

    fn qcow2_error(&self, source: qcow2::WriteError) -> Error {
        Error::Qcow2Write {
            address: self.location.clone(),
            source,
        }
    }

    async fn write_extent(&mut self, extent: Extent) -> Result<()> {
        // Explicit zero ranges read as zeros like holes: every format fills or skips holes.
        let Extent::Data { offset, data } = extent else {
            return Ok(());
        };
        let end = offset + data.len() as u64;
        match &mut self.encoder {
            Encoder::Qcow2(writer) => {
                let pushed = writer.push(offset, data).await;
                let chunks = pushed.map_err(|e| self.qcow2_error(e))?;
                for chunk in chunks {
                    self.put(chunk.file_offset, chunk.data).await?;
                }
            }
            Encoder::Raw => self.put(offset, data).await?,
            Encoder::Zstd(_) => {
                let gap = offset - self.position;
                self.zstd_step(gap, data, false).await?;
            }
        }
        self.position = end;
        Ok(())
    }

    /// Writes what remains after the last extent.
    async fn write_tail(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.encoder, Encoder::Raw) {
            Encoder::Qcow2(writer) => {
                let finished = writer.finish().await.map_err(|e| self.qcow2_error(e))?;
                for chunk in finished.tail_chunks {
                    self.put(chunk.file_offset, chunk.data).await?;
                }
                // Cluster 0 last: for S3 it is in part 1, which goes up last anyway.
                let header = finished.header_chunk;
                self.put(header.file_offset, header.data).await?;
            }
            Encoder::Raw => {}
            zstd @ Encoder::Zstd(_) => {
                self.encoder = zstd;
                let gap = self.size - self.position;
                self.zstd_step(gap, Bytes::new(), true).await?;
            }
        }
        self.position = self.size;
        Ok(())
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

    #[test]
    fn the_zstd_stream_decompresses_to_the_disk() {
        let mut state = ZstdState::new(3).unwrap();
        let mut object = Vec::new();
        let mut disk = Vec::new();
        for (gap, data) in [
            (0u64, b"abc".to_vec()),
            (10, vec![1u8; 100_000]),
            (3 << 20, b"after a long hole".to_vec()),
            (ZERO_FRAME_MIN, vec![]),
        ] {
            for piece in state.step(gap, &data, false).unwrap() {
                object.extend_from_slice(&piece);
            }
            disk.resize(disk.len() + gap as usize, 0);
            disk.extend_from_slice(&data);
        }
        for piece in state.step(5, &[], true).unwrap() {
            object.extend_from_slice(&piece);
        }
        disk.resize(disk.len() + 5, 0);
        assert_eq!(zstd::stream::decode_all(&object[..]).unwrap(), disk);
    }
}
