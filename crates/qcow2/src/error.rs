//! Error types. Every validation failure has its own variant so that callers (and the
//! bad-image corpus) can tell them apart.

use std::io;

/// Everything that can go wrong while opening or reading a qcow2 image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// An I/O error from the underlying [`crate::ReadAt`].
    #[error("qcow2: I/O error while reading {what} at offset {offset}: {source}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// File offset of the read.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The reader returned fewer bytes than asked for inside the file.
    #[error("qcow2: short read of {what} at offset {offset}: wanted {wanted} bytes, got {got}")]
    ShortRead {
        /// What was being read.
        what: &'static str,
        /// File offset of the read.
        offset: u64,
        /// Bytes asked for.
        wanted: usize,
        /// Bytes returned.
        got: usize,
    },
    /// The file is shorter than the fixed header.
    #[error("qcow2: header truncated: file has {len} bytes, the header needs {needed}")]
    TruncatedHeader {
        /// File length.
        len: u64,
        /// Bytes the header needs.
        needed: u64,
    },
    /// The magic is not `QFI\xfb`.
    #[error("not a qcow2 image: magic is {0:#010x}, expected 0x514649fb")]
    BadMagic(u32),
    /// Version is neither 2 nor 3.
    #[error("qcow2: unsupported version {0} (only 2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// `cluster_bits` outside 9..=21.
    #[error("qcow2: cluster_bits {0} out of range 9..=21")]
    ClusterBitsOutOfRange(u32),
    /// `header_length` is too small, not a multiple of 8, or larger than a cluster.
    #[error("qcow2: invalid header_length {length} (cluster size {cluster_size})")]
    BadHeaderLength {
        /// The `header_length` field.
        length: u32,
        /// The cluster size.
        cluster_size: u64,
    },
    /// The image has a backing file.
    #[error("qcow2: image has a backing file (offset {offset}, {size} bytes); backing files are refused")]
    BackingFile {
        /// `backing_file_offset`.
        offset: u64,
        /// `backing_file_size`.
        size: u32,
    },
    /// The image is encrypted.
    #[error("qcow2: image is encrypted (crypt_method {0}); encryption is refused")]
    Encrypted(u32),
    /// The dirty bit is set: refcounts may be stale, the image needs `qemu-img check -r`.
    #[error("qcow2: image is dirty (not closed cleanly); run `qemu-img check -r all` first")]
    Dirty,
    /// The corrupt bit is set.
    #[error("qcow2: image is marked corrupt")]
    Corrupt,
    /// Guest data lives in an external data file.
    #[error("qcow2: image uses an external data file; refused")]
    ExternalDataFile,
    /// Extended L2 entries (subclusters) are not supported.
    #[error("qcow2: image uses extended L2 entries (subclusters); not supported")]
    ExtendedL2,
    /// Incompatible feature bits this reader does not know.
    #[error("qcow2: unknown incompatible feature bits {0:#x}")]
    UnknownIncompatibleFeatures(u64),
    /// `compression_type` is unknown, or does not agree with incompatible bit 3.
    #[error("qcow2: invalid compression_type {kind} (incompatible bit 3 set: {bit_set})")]
    BadCompressionType {
        /// The `compression_type` byte.
        kind: u8,
        /// Whether incompatible bit 3 is set.
        bit_set: bool,
    },
    /// `refcount_order` above 6.
    #[error("qcow2: refcount_order {0} out of range 0..=6")]
    BadRefcountOrder(u32),
    /// Virtual size above the supported maximum.
    #[error("qcow2: virtual size {0} is too large")]
    VirtualSizeTooLarge(u64),
    /// L1 table larger than qemu's 32 MiB limit.
    #[error("qcow2: L1 table has {0} entries, more than the 32 MiB limit")]
    L1TooLarge(u32),
    /// L1 table too small to map the virtual size.
    #[error("qcow2: L1 table has {l1_size} entries, the virtual size needs {needed}")]
    L1TooSmall {
        /// `l1_size`.
        l1_size: u32,
        /// Entries needed for the virtual size.
        needed: u64,
    },
    /// A metadata table is not cluster-aligned.
    #[error("qcow2: {table} offset {offset:#x} is not cluster-aligned")]
    UnalignedTable {
        /// Which table.
        table: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// A metadata table lies (partly) outside the file.
    #[error(
        "qcow2: {table} at {offset:#x} ({len} bytes) lies outside the file ({file_len} bytes)"
    )]
    TableOutsideFile {
        /// Which table.
        table: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// A metadata table overlaps the header cluster.
    #[error("qcow2: {table} at {offset:#x} overlaps the header cluster")]
    TableInHeader {
        /// Which table.
        table: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// Refcount table larger than qemu's limit.
    #[error("qcow2: refcount table has {0} clusters, more than the 8 MiB limit")]
    RefcountTableTooLarge(u32),
    /// A header extension runs past the end of the header cluster or is malformed.
    #[error("qcow2: header extension {kind:#010x} at {offset} ({len} bytes) runs past the header cluster")]
    BadHeaderExtension {
        /// Extension type.
        kind: u32,
        /// Offset of the extension in the file.
        offset: u64,
        /// Its declared length.
        len: u32,
    },
    /// The header extension list has no end marker within the header cluster.
    #[error("qcow2: header extension list is not terminated within the header cluster")]
    UnterminatedExtensions,
    /// The L1 entry has reserved bits set.
    #[error("qcow2: L1 entry {index} ({entry:#018x}) has reserved bits set")]
    L1ReservedBits {
        /// L1 index.
        index: u64,
        /// Raw entry.
        entry: u64,
    },
    /// A standard L2 entry has reserved bits set.
    #[error(
        "qcow2: L2 entry for guest offset {guest_offset:#x} ({entry:#018x}) has reserved bits set"
    )]
    L2ReservedBits {
        /// Guest offset mapped by the entry.
        guest_offset: u64,
        /// Raw entry.
        entry: u64,
    },
    /// The zero flag is used in a v2 image, where bit 0 is reserved.
    #[error("qcow2: L2 entry for guest offset {guest_offset:#x} sets the zero flag in a v2 image")]
    ZeroFlagInV2 {
        /// Guest offset mapped by the entry.
        guest_offset: u64,
    },
    /// A data cluster offset is not aligned to a cluster.
    #[error("qcow2: data cluster for guest offset {guest_offset:#x} at host {host:#x} is not cluster-aligned")]
    UnalignedData {
        /// Guest offset.
        guest_offset: u64,
        /// Host offset.
        host: u64,
    },
    /// A data cluster lies outside the file.
    #[error("qcow2: data cluster for guest offset {guest_offset:#x} at host {host:#x} lies outside the file ({file_len} bytes)")]
    DataOutsideFile {
        /// Guest offset.
        guest_offset: u64,
        /// Host offset.
        host: u64,
        /// File length.
        file_len: u64,
    },
    /// A data or compressed cluster points into the header cluster.
    #[error("qcow2: cluster for guest offset {guest_offset:#x} points into the header cluster (host {host:#x})")]
    DataInHeader {
        /// Guest offset.
        guest_offset: u64,
        /// Host offset.
        host: u64,
    },
    /// A compressed cluster starts at or runs past the end of the file.
    #[error("qcow2: compressed cluster for guest offset {guest_offset:#x} at host {host:#x} ({len} bytes) runs past the end of the file ({file_len} bytes)")]
    CompressedOutsideFile {
        /// Guest offset.
        guest_offset: u64,
        /// Host offset.
        host: u64,
        /// Compressed length from the descriptor.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// Decompression failed or produced the wrong amount of data.
    #[error(
        "qcow2: {codec} cluster for guest offset {guest_offset:#x} does not decompress: {reason}"
    )]
    Decompress {
        /// `deflate` or `zstd`.
        codec: &'static str,
        /// Guest offset.
        guest_offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// A background task panicked or was cancelled.
    #[error("qcow2: worker task failed: {0}")]
    Task(String),
}

/// Everything that can go wrong while writing a qcow2 image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Cluster size not a power of two in 512 B..=2 MiB.
    #[error("qcow2 writer: cluster size {0} is not a power of two between 512 and 2097152")]
    BadClusterSize(u64),
    /// Virtual size too large.
    #[error("qcow2 writer: virtual size {0} is too large")]
    VirtualSizeTooLarge(u64),
    /// Virtual size not a whole number of 512-byte sectors. qemu reads the size field rounded
    /// down to a sector and creates only whole sectors, so such an image would not hold the
    /// disk it was given.
    #[error("qcow2 writer: virtual size {0} bytes is not a multiple of 512: qemu would read it as {rounded} bytes, so it cannot be written as qcow2 (raw and raw.zst keep any size)", rounded = .0 / 512 * 512)]
    UnalignedVirtualSize(u64),
    /// Data pushed behind data already pushed.
    #[error("qcow2 writer: data at guest offset {offset:#x} comes before the end of earlier data ({previous_end:#x}); push in guest order")]
    OutOfOrder {
        /// Offset pushed.
        offset: u64,
        /// End of earlier data.
        previous_end: u64,
    },
    /// Data past the virtual size.
    #[error("qcow2 writer: data at {offset:#x}+{len} goes past the virtual size {virtual_size}")]
    PastEnd {
        /// Offset pushed.
        offset: u64,
        /// Length pushed.
        len: u64,
        /// Virtual size.
        virtual_size: u64,
    },
    /// Compression level out of range for the codec.
    #[error("qcow2 writer: compression level {level} out of range for {codec}")]
    BadLevel {
        /// Codec name.
        codec: &'static str,
        /// Level given.
        level: i32,
    },
    /// The compressor failed.
    #[error("qcow2 writer: {codec} compression failed: {reason}")]
    Compress {
        /// Codec name.
        codec: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The image would need a larger table than the format allows.
    #[error("qcow2 writer: the image needs a {table} of {bytes} bytes, above the format's limit")]
    TableTooLarge {
        /// Which table.
        table: &'static str,
        /// Size needed.
        bytes: u64,
    },
    /// A background task panicked or was cancelled.
    #[error("qcow2 writer: worker task failed: {0}")]
    Task(String),
}

/// Result alias for reads.
pub type ReadResult<T> = Result<T, ReadError>;
