//! The metadata-last streaming writer.
//!
//! Layout of the file it produces, all offsets known when each part is emitted:
//!
//! ```text
//! cluster 0: header (emitted last)  | data clusters (uncompressed ones cluster-aligned,
//! compressed ones packed at byte granularity) | padding to a cluster | L2 tables | L1 table |
//! refcount blocks | refcount table
//! ```
//!
//! Data chunks come out at strictly increasing, contiguous offsets starting at one cluster, so a
//! sink can append them (or cut them into S3 multipart parts ≥ 5 MiB) as they come; the header
//! chunk is handed back separately by [`Qcow2Writer::finish`] and goes to offset 0 last.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::codec::{self, Codec, DEFLATE_MAX_LEVEL};
use crate::error::WriteError;
use crate::format::*;
use crate::header::{CompressionType, Header, Tables};

/// Guest bytes per compression task: large enough to amortise task overhead, small enough to
/// keep memory low.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;
/// The largest zstd level.
pub const ZSTD_MAX_LEVEL: i32 = 22;
/// The smallest zstd level (its fast, negative levels).
pub const ZSTD_MIN_LEVEL: i32 = -(1 << 17);
/// Zero bytes used for padding (the largest pad is one cluster less one byte).
static ZEROS: [u8; 1 << MAX_CLUSTER_BITS] = [0; 1 << MAX_CLUSTER_BITS];
/// Bytes per refcount entry (16-bit refcounts).
const REFCOUNT_BYTES: u64 = 2;

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Cluster size, a power of two in 512..=2 MiB (default 64 KiB).
    pub cluster_size: u64,
    /// Compress clusters with this codec, or store them raw (`None`). A cluster whose
    /// compressed form does not save at least one sector is stored raw.
    pub compression: Option<Codec>,
    /// Leave all-zero clusters unallocated (default true).
    pub skip_zero_clusters: bool,
    /// Compression tasks in flight at most (default: the number of cores). Memory used by the
    /// pipeline is about `2 * threads * batch_bytes`.
    pub threads: usize,
    /// Guest bytes per compression task.
    pub batch_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            cluster_size: 1 << DEFAULT_CLUSTER_BITS,
            compression: None,
            skip_zero_clusters: true,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

/// Bytes to write at a file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// File offset of the first byte.
    pub file_offset: u64,
    /// The bytes.
    pub data: Bytes,
}

impl Chunk {
    /// File offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.file_offset + self.data.len() as u64
    }
}

/// What is left to write once all data is pushed.
#[derive(Debug)]
pub struct Finished {
    /// The remaining data chunks, then the L2 tables, L1 table, refcount blocks and refcount
    /// table: contiguous, in increasing file order, continuing the chunks of
    /// [`Qcow2Writer::push`], and ending at `file_size`.
    pub tail_chunks: Vec<Chunk>,
    /// Cluster 0: the header. Always at offset 0, one cluster long; write it last.
    pub header_chunk: Chunk,
    /// Total file size.
    pub file_size: u64,
    /// Guest clusters stored (raw or compressed).
    pub allocated_clusters: u64,
    /// Of which compressed.
    pub compressed_clusters: u64,
}

/// A processed guest cluster.
#[derive(Debug)]
enum Out {
    Zero,
    Raw(Bytes),
    Compressed(Bytes),
}

type Batch = Vec<(u64, Bytes)>;
type Processed = Result<Vec<(u64, Out)>, WriteError>;

/// Streaming qcow2 v3 writer; see the module documentation for the layout.
///
/// Push guest data in guest order; holes (ranges never pushed) stay unallocated. Compression
/// runs on tokio's blocking pool with at most [`WriterOptions::threads`] tasks queued, so a
/// tokio runtime is required and memory stays bounded. The L2 entries (8 bytes per allocated
/// cluster) and refcounts (2 bytes per host cluster) are held until [`Qcow2Writer::finish`].
#[derive(Debug)]
pub struct Qcow2Writer {
    virtual_size: u64,
    cluster_bits: u32,
    cs: u64,
    options: WriterOptions,
    /// End of the data pushed so far.
    next_guest: u64,
    /// A cluster being filled piece by piece: index and a zeroed cluster buffer.
    partial: Option<(u64, BytesMut)>,
    batch: Batch,
    batch_len: usize,
    queue: VecDeque<tokio::task::JoinHandle<Processed>>,
    /// Next free byte of the data area.
    file_pos: u64,
    /// Small (compressed) pieces not yet emitted, starting at `small_start`.
    small: BytesMut,
    small_start: u64,
    l2: BTreeMap<u64, Box<[u64]>>,
    /// Refcount of each host cluster of the data area, indexed by host cluster number.
    refcounts: Vec<u16>,
    allocated: u64,
    compressed: u64,
}

impl Qcow2Writer {
    /// A writer for a disk of `virtual_size` bytes, which must be a multiple of 512: qemu
    /// reads the size field rounded down to a sector (and creates whole sectors only), so any
    /// other size would not be the disk it was given. Such a size is refused, never changed.
    pub fn new(virtual_size: u64, options: WriterOptions) -> Result<Self, WriteError> {
        let cs = options.cluster_size;
        if !cs.is_power_of_two() || !(1 << MIN_CLUSTER_BITS..=1 << MAX_CLUSTER_BITS).contains(&cs) {
            return Err(WriteError::BadClusterSize(cs));
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(WriteError::VirtualSizeTooLarge(virtual_size));
        }
        if !virtual_size.is_multiple_of(SECTOR_SIZE) {
            return Err(WriteError::UnalignedVirtualSize(virtual_size));
        }
        let cluster_bits = cs.trailing_zeros();
        let l1_bytes = Header::l1_entries_for(virtual_size, cluster_bits) * ENTRY_SIZE;
        if l1_bytes > MAX_L1_BYTES {
            return Err(WriteError::TableTooLarge {
                table: "L1 table",
                bytes: l1_bytes,
            });
        }
        match options.compression {
            Some(Codec::Deflate { level }) if level > DEFLATE_MAX_LEVEL => {
                return Err(WriteError::BadLevel {
                    codec: "deflate",
                    level: level as i32,
                })
            }
            Some(Codec::Zstd { level }) if !(ZSTD_MIN_LEVEL..=ZSTD_MAX_LEVEL).contains(&level) => {
                return Err(WriteError::BadLevel {
                    codec: "zstd",
                    level,
                })
            }
            _ => {}
        }
        Ok(Self {
            virtual_size,
            cluster_bits,
            cs,
            options: WriterOptions {
                threads: options.threads.max(1),
                batch_bytes: options.batch_bytes.max(cs as usize),
                ..options
            },
            next_guest: 0,
            partial: None,
            batch: Vec::new(),
            batch_len: 0,
            queue: VecDeque::new(),
            file_pos: cs,
            small: BytesMut::new(),
            small_start: cs,
            l2: BTreeMap::new(),
            refcounts: vec![1], // cluster 0: the header
            allocated: 0,
            compressed: 0,
        })
    }

    /// The virtual size.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Pushes guest data at `guest_offset`, which must not be before the end of earlier data.
    /// Returns the data chunks ready now (possibly none), in file order.
    pub async fn push(
        &mut self,
        guest_offset: u64,
        mut data: Bytes,
    ) -> Result<Vec<Chunk>, WriteError> {
        let len = data.len() as u64;
        if guest_offset < self.next_guest {
            return Err(WriteError::OutOfOrder {
                offset: guest_offset,
                previous_end: self.next_guest,
            });
        }
        if guest_offset
            .checked_add(len)
            .is_none_or(|end| end > self.virtual_size)
        {
            return Err(WriteError::PastEnd {
                offset: guest_offset,
                len,
                virtual_size: self.virtual_size,
            });
        }
        let mut out = Vec::new();
        let mut off = guest_offset;
        while !data.is_empty() {
            let idx = off / self.cs;
            let in_cluster = off % self.cs;
            if self.partial.as_ref().is_some_and(|(p, _)| *p != idx) {
                self.finish_partial(&mut out)?;
            }
            let n = (self.cs - in_cluster).min(data.len() as u64) as usize;
            let piece = data.split_to(n);
            if in_cluster == 0 && n as u64 == self.cs {
                self.add_cluster(idx, piece, &mut out)?;
            } else {
                let cs = self.cs as usize;
                let (_, buf) = self
                    .partial
                    .get_or_insert_with(|| (idx, BytesMut::zeroed(cs)));
                buf[in_cluster as usize..in_cluster as usize + n].copy_from_slice(&piece);
                let cluster_len = self.cs.min(self.virtual_size - idx * self.cs);
                if in_cluster + n as u64 == cluster_len {
                    self.finish_partial(&mut out)?;
                }
            }
            off += n as u64;
        }
        self.next_guest = guest_offset + len;
        self.drain(false, &mut out).await?;
        self.flush_small(&mut out);
        Ok(out)
    }

    fn finish_partial(&mut self, out: &mut Vec<Chunk>) -> Result<(), WriteError> {
        if let Some((idx, buf)) = self.partial.take() {
            self.add_cluster(idx, buf.freeze(), out)?;
        }
        Ok(())
    }

    fn add_cluster(
        &mut self,
        idx: u64,
        data: Bytes,
        out: &mut Vec<Chunk>,
    ) -> Result<(), WriteError> {
        self.batch_len += data.len();
        self.batch.push((idx, data));
        if self.batch_len >= self.options.batch_bytes {
            self.submit(out)?;
        }
        Ok(())
    }

    /// Sends the current batch to be processed: inline when there is nothing to compress,
    /// otherwise to the blocking pool.
    fn submit(&mut self, out: &mut Vec<Chunk>) -> Result<(), WriteError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        let (cs, codec, skip) = (
            self.cs,
            self.options.compression,
            self.options.skip_zero_clusters,
        );
        if codec.is_none() {
            let processed = process_batch(batch, cs, None, skip)?;
            self.place(processed, out);
        } else {
            self.queue.push_back(tokio::task::spawn_blocking(move || {
                process_batch(batch, cs, codec, skip)
            }));
        }
        Ok(())
    }

    /// Places finished batches in order; waits while more than `threads` are queued (or for all
    /// of them when `all`).
    async fn drain(&mut self, all: bool, out: &mut Vec<Chunk>) -> Result<(), WriteError> {
        while let Some(front) = self.queue.front() {
            let must_wait = all || self.queue.len() > self.options.threads;
            if !must_wait && !front.is_finished() {
                break;
            }
            let handle = self.queue.pop_front().expect("front exists");
            let processed = handle
                .await
                .map_err(|e| WriteError::Task(e.to_string()))??;
            self.place(processed, out);
        }
        Ok(())
    }

    fn refcount_add(&mut self, host_cluster: u64) {
        let i = host_cluster as usize;
        if self.refcounts.len() <= i {
            self.refcounts.resize(i + 1, 0);
        }
        self.refcounts[i] += 1;
    }

    /// Pads the data area to a cluster boundary (the padding joins the small pieces).
    fn pad_to_cluster(&mut self) {
        let pad = self.file_pos.next_multiple_of(self.cs) - self.file_pos;
        if pad > 0 {
            self.small.extend_from_slice(&ZEROS[..pad as usize]);
            self.file_pos += pad;
        }
    }

    /// Emits buffered small pieces as one chunk.
    fn flush_small(&mut self, out: &mut Vec<Chunk>) {
        if !self.small.is_empty() {
            out.push(Chunk {
                file_offset: self.small_start,
                data: self.small.split().freeze(),
            });
        }
        self.small_start = self.file_pos;
    }

    fn set_l2(&mut self, guest_cluster: u64, entry: u64) {
        let per_l2 = self.cs / ENTRY_SIZE;
        let table = self
            .l2
            .entry(guest_cluster / per_l2)
            .or_insert_with(|| vec![0u64; per_l2 as usize].into_boxed_slice());
        table[(guest_cluster % per_l2) as usize] = entry;
    }

    /// Assigns file offsets to processed clusters, in guest order, and emits their bytes.
    fn place(&mut self, processed: Vec<(u64, Out)>, out: &mut Vec<Chunk>) {
        for (idx, o) in processed {
            match o {
                Out::Zero => {}
                Out::Raw(data) => {
                    self.pad_to_cluster();
                    self.flush_small(out);
                    let host = self.file_pos;
                    self.set_l2(idx, host | OFLAG_COPIED);
                    self.refcount_add(host / self.cs);
                    out.push(Chunk {
                        file_offset: host,
                        data,
                    });
                    self.file_pos += self.cs;
                    self.small_start = self.file_pos;
                    self.allocated += 1;
                }
                Out::Compressed(data) => {
                    let len = data.len() as u64;
                    let (first, last) = loop {
                        let (first, last) = self.compressed_span(len);
                        // A refcount must not overflow 16 bits: start a fresh cluster instead.
                        let full = (first..=last).any(|c| {
                            self.refcounts
                                .get(c as usize)
                                .is_some_and(|&r| u64::from(r) >= REFCOUNT16_MAX)
                        });
                        if !full {
                            break (first, last);
                        }
                        self.pad_to_cluster();
                    };
                    let host = self.file_pos;
                    let sectors = (host % SECTOR_SIZE + len).div_ceil(SECTOR_SIZE);
                    let shift = compressed_sectors_shift(self.cluster_bits);
                    self.set_l2(idx, OFLAG_COMPRESSED | ((sectors - 1) << shift) | host);
                    for c in first..=last {
                        self.refcount_add(c);
                    }
                    self.small.extend_from_slice(&data);
                    self.file_pos += len;
                    self.allocated += 1;
                    self.compressed += 1;
                }
            }
        }
    }

    /// First and last host cluster touched by a compressed cluster of `len` bytes placed at
    /// `file_pos`, counting its descriptor's whole last sector (as `qemu-img check` does).
    fn compressed_span(&self, len: u64) -> (u64, u64) {
        let host = self.file_pos;
        let sectors = (host % SECTOR_SIZE + len).div_ceil(SECTOR_SIZE);
        let end = host - host % SECTOR_SIZE + sectors * SECTOR_SIZE;
        (host / self.cs, (end - 1) / self.cs)
    }

    /// Flushes the remaining data and lays out the metadata.
    pub async fn finish(mut self) -> Result<Finished, WriteError> {
        let mut tail = Vec::new();
        self.finish_partial(&mut tail)?;
        self.submit(&mut tail)?;
        self.drain(true, &mut tail).await?;
        self.pad_to_cluster();
        self.flush_small(&mut tail);

        let cs = self.cs;
        let data_end = self.file_pos;
        debug_assert_eq!(data_end % cs, 0);
        let mut pos = data_end;
        // L2 tables, in L1 order.
        let mut l1 =
            vec![0u64; Header::l1_entries_for(self.virtual_size, self.cluster_bits) as usize];
        for (&l1_index, table) in &self.l2 {
            let mut bytes = BytesMut::with_capacity(cs as usize);
            for e in table.iter() {
                bytes.extend_from_slice(&e.to_be_bytes());
            }
            l1[l1_index as usize] = pos | OFLAG_COPIED;
            tail.push(Chunk {
                file_offset: pos,
                data: bytes.freeze(),
            });
            pos += cs;
        }
        // L1 table (none for an empty disk: an unreferenced cluster would be a leak).
        let l1_clusters = (l1.len() as u64 * ENTRY_SIZE).div_ceil(cs);
        let l1_offset = if l1_clusters == 0 { 0 } else { pos };
        let mut bytes = BytesMut::zeroed((l1_clusters * cs) as usize);
        for (i, e) in l1.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        if l1_clusters > 0 {
            tail.push(Chunk {
                file_offset: l1_offset,
                data: bytes.freeze(),
            });
        }
        pos += l1_clusters * cs;

        // Refcount blocks and table: their own clusters need refcounts too, so iterate to a
        // fixed point (it moves at most a couple of times).
        let before_refcounts = pos / cs;
        let per_block = cs / REFCOUNT_BYTES;
        let (mut blocks, mut table_clusters) = (0u64, 0u64);
        loop {
            let total = before_refcounts + blocks + table_clusters;
            let b = total.div_ceil(per_block);
            let t = (b * ENTRY_SIZE).div_ceil(cs);
            if (b, t) == (blocks, table_clusters) {
                break;
            }
            (blocks, table_clusters) = (b, t);
        }
        if table_clusters * cs > MAX_REFTABLE_BYTES {
            return Err(WriteError::TableTooLarge {
                table: "refcount table",
                bytes: table_clusters * cs,
            });
        }
        let total_clusters = before_refcounts + blocks + table_clusters;
        let refblocks_offset = pos;
        let data_clusters = data_end / cs;
        for b in 0..blocks {
            let mut block = BytesMut::zeroed(cs as usize);
            for i in 0..per_block {
                let cluster = b * per_block + i;
                if cluster >= total_clusters {
                    break;
                }
                let r: u16 = if cluster < data_clusters {
                    self.refcounts.get(cluster as usize).copied().unwrap_or(0)
                } else {
                    1
                };
                let at = (i * REFCOUNT_BYTES) as usize;
                block[at..at + 2].copy_from_slice(&r.to_be_bytes());
            }
            tail.push(Chunk {
                file_offset: pos,
                data: block.freeze(),
            });
            pos += cs;
        }
        let reftable_offset = pos;
        let mut reftable = BytesMut::zeroed((table_clusters * cs) as usize);
        for b in 0..blocks {
            let at = (b * ENTRY_SIZE) as usize;
            reftable[at..at + 8].copy_from_slice(&(refblocks_offset + b * cs).to_be_bytes());
        }
        tail.push(Chunk {
            file_offset: reftable_offset,
            data: reftable.freeze(),
        });
        pos += table_clusters * cs;
        debug_assert_eq!(pos, total_clusters * cs);

        let compression = match self.options.compression {
            Some(Codec::Zstd { .. }) => CompressionType::Zstd,
            _ => CompressionType::Deflate,
        };
        let tables = Tables {
            l1_size: l1.len() as u32,
            l1_table_offset: l1_offset,
            refcount_table_offset: reftable_offset,
            refcount_table_clusters: table_clusters as u32,
        };
        let header = Header::new_v3(self.cluster_bits, self.virtual_size, tables, compression);
        let mut cluster0 = BytesMut::zeroed(cs as usize);
        let h = header.to_bytes();
        // The zeros after the header are the end-of-extensions marker.
        cluster0[..h.len()].copy_from_slice(&h);
        Ok(Finished {
            tail_chunks: tail,
            header_chunk: Chunk {
                file_offset: 0,
                data: cluster0.freeze(),
            },
            file_size: pos,
            allocated_clusters: self.allocated,
            compressed_clusters: self.compressed,
        })
    }
}

/// Whether `data` is all zeros (word-wise OR, which the compiler vectorises).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Zero detection and compression of one batch; runs on a blocking thread when compressing.
fn process_batch(batch: Batch, cs: u64, codec: Option<Codec>, skip_zero: bool) -> Processed {
    // A compressed cluster must save at least a sector to be worth a descriptor.
    let limit = (cs - SECTOR_SIZE) as usize;
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for (idx, data) in batch {
        if skip_zero && is_zero(&data) {
            out.push((idx, Out::Zero));
            continue;
        }
        let Some(codec) = codec else {
            out.push((idx, Out::Raw(data)));
            continue;
        };
        let fits = limit > 0
            && codec::compress_into(codec, &data, &mut scratch, limit).map_err(|reason| {
                WriteError::Compress {
                    codec: match codec {
                        Codec::Deflate { .. } => "deflate",
                        Codec::Zstd { .. } => "zstd",
                    },
                    reason,
                }
            })?;
        if fits {
            out.push((idx, Out::Compressed(Bytes::copy_from_slice(&scratch))));
        } else {
            out.push((idx, Out::Raw(data)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_set_byte_anywhere() {
        let mut buf = vec![0u8; 65536 + 7];
        assert!(is_zero(&buf));
        for at in [0, 63, 64, 65535, 65536 + 6] {
            buf[at] = 1;
            assert!(!is_zero(&buf), "byte {at}");
            buf[at] = 0;
        }
    }

    #[tokio::test]
    async fn compressible_clusters_are_stored_compressed_and_smaller() {
        let options = WriterOptions {
            cluster_size: 4096,
            compression: Some(Codec::Zstd { level: 1 }),
            ..WriterOptions::default()
        };
        let mut w = Qcow2Writer::new(1 << 20, options).unwrap();
        // Text-like data: compresses to well under a cluster.
        let data: Vec<u8> = (0..64 * 4096u32)
            .map(|i| b"abcdefgh"[(i / 700 % 8) as usize])
            .collect();
        let chunks = w.push(0, Bytes::from(data)).await.unwrap();
        let done = w.finish().await.unwrap();
        assert_eq!(done.compressed_clusters, 64);
        let data_len: u64 = chunks
            .iter()
            .chain(&done.tail_chunks)
            .map(|c| c.data.len() as u64)
            .sum();
        assert!(data_len < done.file_size);
    }

    #[test]
    fn options_are_validated() {
        let bad = |o: WriterOptions| Qcow2Writer::new(1 << 20, o).unwrap_err();
        assert!(matches!(
            bad(WriterOptions {
                cluster_size: 1000,
                ..Default::default()
            }),
            WriteError::BadClusterSize(1000)
        ));
        assert!(matches!(
            bad(WriterOptions {
                cluster_size: 4 << 20,
                ..Default::default()
            }),
            WriteError::BadClusterSize(_)
        ));
        assert!(matches!(
            bad(WriterOptions {
                compression: Some(Codec::Deflate { level: 10 }),
                ..Default::default()
            }),
            WriteError::BadLevel {
                codec: "deflate",
                level: 10
            }
        ));
    }
}
