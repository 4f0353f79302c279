//! Opening an image and reading its guest data with planned, coalesced, bounded-memory reads.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, Stream};

use crate::codec;
use crate::error::{ReadError, ReadResult};
use crate::format::*;
use crate::header::{CompressionType, Header};
use crate::io::ReadAt;
use crate::mapping::{decode_l1, read_exact, Extent, ExtentKind, ExtentWalker};

/// First read of an image: enough for any header and most header extensions.
const FIRST_READ: u64 = 4096;
/// Host gap up to which two neighbouring ranges are read together rather than apart.
pub const MAX_COALESCE_GAP: u64 = 64 << 10;

/// An opened, validated qcow2 image: header and active L1 table.
#[derive(Clone)]
pub struct Qcow2Image {
    reader: Arc<dyn ReadAt>,
    header: Arc<Header>,
    l1: Arc<[u64]>,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("header", &self.header)
            .field("l1_entries", &self.l1.len())
            .finish_non_exhaustive()
    }
}

impl Qcow2Image {
    /// Reads and validates the header and the active L1 table (every entry is checked).
    pub async fn open(reader: Arc<dyn ReadAt>) -> ReadResult<Self> {
        let file_len = reader.len();
        let first = read_exact(&*reader, "header", 0, file_len.min(FIRST_READ) as usize).await?;
        let mut cluster0 = first.clone();
        // Header extensions may fill the whole first cluster: read it all when larger.
        if first.len() >= 24 && first[..4] == MAGIC.to_be_bytes() {
            let bits = u32::from_be_bytes(first[20..24].try_into().expect("4 bytes"));
            if (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
                let want = file_len.min(1 << bits);
                if want > first.len() as u64 {
                    cluster0 = read_exact(&*reader, "header cluster", 0, want as usize).await?;
                }
            }
        }
        let header = Header::parse(&cluster0, file_len)?;
        let needed = Header::l1_entries_for(header.virtual_size(), header.cluster_bits);
        // Entries past the virtual size (room for a VM state) are never read.
        let l1_bytes = if needed == 0 {
            Bytes::new()
        } else {
            read_exact(
                &*reader,
                "L1 table",
                header.l1_table_offset,
                (needed * ENTRY_SIZE) as usize,
            )
            .await?
        };
        let l1: Arc<[u64]> = l1_bytes
            .chunks_exact(ENTRY_SIZE as usize)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .collect();
        for (i, &e) in l1.iter().enumerate() {
            decode_l1(&header, i as u64, e, file_len)?;
        }
        Ok(Self {
            reader,
            header: Arc::new(header),
            l1,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Virtual disk size in bytes, as qemu reads it (see [`Header::virtual_size`]).
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// A walk of the mapping in guest order (one L2 table in memory at a time).
    pub fn extents(&self) -> ExtentWalker {
        ExtentWalker::new(
            Arc::clone(&self.reader),
            Arc::clone(&self.header),
            Arc::clone(&self.l1),
        )
    }

    /// The whole mapping as a vector; for tests and small images (a dense image has one extent
    /// per non-contiguous run).
    pub async fn collect_extents(&self) -> ReadResult<Vec<Extent>> {
        let mut walker = self.extents();
        let mut out = Vec::new();
        while let Some(e) = walker.next().await? {
            out.push(e);
        }
        Ok(out)
    }

    /// A reader of the allocated guest data in guest order; see [`DataReader`].
    pub fn data_reader(&self, options: ReadOptions) -> DataReader {
        DataReader::new(self, options)
    }
}

/// Tuning of [`DataReader`].
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Largest single read of the file (and largest decoded chunk); neighbouring host ranges are
    /// coalesced up to this size.
    pub max_read_size: u64,
    /// Bytes of reads in flight plus decoded data not yet handed out, at most. One read is
    /// always allowed, so the real bound is `max(max_in_flight_bytes, 2 * max_read_size)`.
    pub max_in_flight_bytes: u64,
    /// Reads in flight at most.
    pub concurrency: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_read_size: 4 << 20,
            max_in_flight_bytes: 64 << 20,
            concurrency: 8,
        }
    }
}

/// Decoded guest data at a guest offset. Guest ranges not covered by any chunk read as zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    /// Guest offset of the first byte.
    pub guest_offset: u64,
    /// The data.
    pub data: Bytes,
}

/// One guest piece of a planned read.
#[derive(Debug, Clone, Copy)]
struct Piece {
    guest_offset: u64,
    len: u64,
    host: u64,
    /// `Some(compressed_len)` for a compressed cluster.
    compressed: Option<u64>,
}

impl Piece {
    fn host_end(&self) -> u64 {
        self.host + self.compressed.unwrap_or(self.len)
    }
}

/// A coalesced read: one host range, several guest pieces.
#[derive(Debug)]
struct Job {
    host_start: u64,
    host_end: u64,
    guest_bytes: u64,
    pieces: Vec<Piece>,
}

impl Job {
    fn cost(&self) -> u64 {
        let decoded: u64 = self
            .pieces
            .iter()
            .filter(|p| p.compressed.is_some())
            .map(|p| p.len)
            .sum();
        (self.host_end - self.host_start) + decoded
    }
}

/// Reads allocated guest data in guest order, as [`DataChunk`]s.
///
/// It plans reads from the mapping walk: guest-consecutive pieces whose host ranges follow
/// each other (gaps up to [`MAX_COALESCE_GAP`]) become one read of at most `max_read_size`
/// bytes. Up to `concurrency` reads run at once as tokio tasks, and decompression runs on the
/// blocking pool, so the async runtime is never blocked. Memory is bounded by
/// [`ReadOptions::max_in_flight_bytes`], whatever the image size. Requires a tokio runtime.
pub struct DataReader {
    reader: Arc<dyn ReadAt>,
    compression: CompressionType,
    cluster_size: u64,
    walker: ExtentWalker,
    options: ReadOptions,
    /// Part of an extent not yet planned.
    leftover: Option<Extent>,
    /// A planned job that did not fit the memory budget yet.
    next_job: Option<Job>,
    walk_done: bool,
    in_flight: VecDeque<(u64, tokio::task::JoinHandle<ReadResult<Vec<DataChunk>>>)>,
    in_flight_bytes: u64,
    ready: VecDeque<DataChunk>,
    ready_cost: u64,
}

impl std::fmt::Debug for DataReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataReader")
            .field("options", &self.options)
            .field("in_flight", &self.in_flight.len())
            .field("in_flight_bytes", &self.in_flight_bytes)
            .finish_non_exhaustive()
    }
}

impl DataReader {
    fn new(image: &Qcow2Image, options: ReadOptions) -> Self {
        let cluster_size = image.cluster_size();
        let options = ReadOptions {
            // A read must hold at least one cluster.
            max_read_size: options.max_read_size.max(cluster_size),
            concurrency: options.concurrency.max(1),
            ..options
        };
        Self {
            reader: Arc::clone(&image.reader),
            compression: image.header.compression_type,
            cluster_size,
            walker: image.extents(),
            options,
            leftover: None,
            next_job: None,
            walk_done: false,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            ready: VecDeque::new(),
            ready_cost: 0,
        }
    }

    /// Bytes currently held by reads in flight and decoded chunks not yet handed out.
    pub fn bytes_in_flight(&self) -> u64 {
        self.in_flight_bytes + self.ready_cost
    }

    /// The next piece of the plan, splitting data extents at `max_read_size`.
    async fn next_piece(&mut self) -> ReadResult<Option<Piece>> {
        loop {
            let e = match self.leftover.take() {
                Some(e) => e,
                None if self.walk_done => return Ok(None),
                None => match self.walker.next().await? {
                    Some(e) => e,
                    None => {
                        self.walk_done = true;
                        return Ok(None);
                    }
                },
            };
            match e.kind {
                ExtentKind::Zero | ExtentKind::Unallocated => continue,
                ExtentKind::Compressed {
                    host_offset,
                    compressed_len,
                } => {
                    return Ok(Some(Piece {
                        guest_offset: e.guest_offset,
                        len: e.len,
                        host: host_offset,
                        compressed: Some(compressed_len),
                    }))
                }
                ExtentKind::Data { host_offset } => {
                    let take = e.len.min(self.options.max_read_size);
                    if take < e.len {
                        self.leftover = Some(Extent {
                            guest_offset: e.guest_offset + take,
                            len: e.len - take,
                            kind: ExtentKind::Data {
                                host_offset: host_offset + take,
                            },
                        });
                    }
                    return Ok(Some(Piece {
                        guest_offset: e.guest_offset,
                        len: take,
                        host: host_offset,
                        compressed: None,
                    }));
                }
            }
        }
    }

    /// Plans the next coalesced read, or `None` when the disk is done.
    async fn plan_job(&mut self) -> ReadResult<Option<Job>> {
        let Some(first) = self.next_piece().await? else {
            return Ok(None);
        };
        let mut job = Job {
            host_start: first.host,
            host_end: first.host_end(),
            guest_bytes: first.len,
            pieces: vec![first],
        };
        let max = self.options.max_read_size;
        while let Some(p) = self.next_piece().await? {
            let fits = p.host >= job.host_start
                && p.host <= job.host_end + MAX_COALESCE_GAP
                && p.host_end().max(job.host_end) - job.host_start <= max
                && job.guest_bytes + p.len <= max;
            if !fits {
                self.push_back_piece(p);
                break;
            }
            job.host_end = job.host_end.max(p.host_end());
            job.guest_bytes += p.len;
            job.pieces.push(p);
        }
        Ok(Some(job))
    }

    /// Returns a piece to the plan (it starts the next job).
    fn push_back_piece(&mut self, p: Piece) {
        let kind = match p.compressed {
            Some(compressed_len) => ExtentKind::Compressed {
                host_offset: p.host,
                compressed_len,
            },
            None => ExtentKind::Data {
                host_offset: p.host,
            },
        };
        let back = Extent {
            guest_offset: p.guest_offset,
            len: p.len,
            kind,
        };
        // A leftover (tail of a split extent) comes after this piece: merge it back.
        self.leftover = Some(match self.leftover.take() {
            Some(rest) => Extent {
                len: back.len + rest.len,
                ..back
            },
            None => back,
        });
    }

    fn spawn(&mut self, job: Job) {
        let cost = job.cost();
        let reader = Arc::clone(&self.reader);
        let compression = self.compression;
        let cluster_size = self.cluster_size;
        let handle =
            tokio::spawn(async move { run_job(reader, compression, cluster_size, job).await });
        self.in_flight_bytes += cost;
        self.in_flight.push_back((cost, handle));
    }

    /// The next chunk of guest data, or `None` at the end of the disk.
    pub async fn next_chunk(&mut self) -> ReadResult<Option<DataChunk>> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                if self.ready.is_empty() {
                    self.ready_cost = 0;
                }
                return Ok(Some(c));
            }
            while self.in_flight.len() < self.options.concurrency {
                let job = match self.next_job.take() {
                    Some(j) => j,
                    None => match self.plan_job().await? {
                        Some(j) => j,
                        None => break,
                    },
                };
                let busy = !self.in_flight.is_empty() || self.ready_cost > 0;
                if busy && self.in_flight_bytes + job.cost() > self.options.max_in_flight_bytes {
                    self.next_job = Some(job);
                    break;
                }
                self.spawn(job);
            }
            let Some((cost, handle)) = self.in_flight.pop_front() else {
                return Ok(None);
            };
            let chunks = handle.await.map_err(|e| ReadError::Task(e.to_string()))??;
            self.in_flight_bytes -= cost;
            self.ready_cost = cost;
            self.ready.extend(chunks);
        }
    }

    /// The chunks as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = ReadResult<DataChunk>> + Send {
        stream::try_unfold(self, |mut r| async move {
            Ok(r.next_chunk().await?.map(|c| (c, r)))
        })
    }
}

impl Drop for DataReader {
    fn drop(&mut self) {
        for (_, h) in &self.in_flight {
            h.abort();
        }
    }
}

/// Reads one coalesced range and cuts it into guest chunks; compressed clusters are decoded on
/// the blocking pool.
async fn run_job(
    reader: Arc<dyn ReadAt>,
    compression: CompressionType,
    cluster_size: u64,
    job: Job,
) -> ReadResult<Vec<DataChunk>> {
    let buf = read_exact(
        &*reader,
        "guest data",
        job.host_start,
        (job.host_end - job.host_start) as usize,
    )
    .await?;
    if job.pieces.iter().all(|p| p.compressed.is_none()) {
        return Ok(job
            .pieces
            .iter()
            .map(|p| {
                let at = (p.host - job.host_start) as usize;
                DataChunk {
                    guest_offset: p.guest_offset,
                    data: buf.slice(at..at + p.len as usize),
                }
            })
            .collect());
    }
    tokio::task::spawn_blocking(move || decode_job(&buf, compression, cluster_size, &job))
        .await
        .map_err(|e| ReadError::Task(e.to_string()))?
}

fn decode_job(
    buf: &Bytes,
    compression: CompressionType,
    cluster_size: u64,
    job: &Job,
) -> ReadResult<Vec<DataChunk>> {
    let mut out: Vec<DataChunk> = Vec::new();
    // Guest-contiguous compressed clusters are decoded into one buffer.
    let mut run: Option<(u64, BytesMut)> = None;
    let mut cluster = vec![0u8; cluster_size as usize];
    let flush = |run: &mut Option<(u64, BytesMut)>, out: &mut Vec<DataChunk>| {
        if let Some((guest_offset, data)) = run.take() {
            out.push(DataChunk {
                guest_offset,
                data: data.freeze(),
            });
        }
    };
    for p in &job.pieces {
        let at = (p.host - job.host_start) as usize;
        let Some(clen) = p.compressed else {
            flush(&mut run, &mut out);
            out.push(DataChunk {
                guest_offset: p.guest_offset,
                data: buf.slice(at..at + p.len as usize),
            });
            continue;
        };
        let input = &buf[at..at + clen as usize];
        let (codec_name, result) = match compression {
            CompressionType::Deflate => ("deflate", codec::inflate_into(input, &mut cluster)),
            CompressionType::Zstd => ("zstd", codec::zstd_decompress_into(input, &mut cluster)),
        };
        result.map_err(|reason| ReadError::Decompress {
            codec: codec_name,
            guest_offset: p.guest_offset,
            reason,
        })?;
        let decoded = &cluster[..p.len as usize];
        match &mut run {
            Some((start, data)) if *start + data.len() as u64 == p.guest_offset => {
                data.extend_from_slice(decoded)
            }
            _ => {
                flush(&mut run, &mut out);
                let mut data = BytesMut::with_capacity(job.guest_bytes as usize);
                data.extend_from_slice(decoded);
                run = Some((p.guest_offset, data));
            }
        }
    }
    flush(&mut run, &mut out);
    Ok(out)
}
