//! `raw.zst`, both ways: a zstd-compressed raw image, written by [`RawZstEncoder`] in the
//! framing below and read back by [`ZstdRawSource`] behind any range reader.
//!
//! # The `raw.zst` framing diskferry writes
//! ```text
//! skippable frame 0x184D2A5D: "DFRAWZ01" + virtual size (u64 LE)   (24 bytes)
//! zstd frame | zero-run frame | zstd frame | ...                    (concatenated frames)
//! ```
//! Every zstd decoder (`zstd -d`, `zstdcat`, libzstd's streaming API) skips the first frame
//! and concatenates the content of the others, so the object decompresses to the raw disk
//! with standard tools. The skippable frame records the virtual size up front, which a
//! stream of several frames otherwise does not tell until it is decompressed to the end.
//!
//! Long zero runs (holes) are not fed through the compressor: they become frames made of
//! RLE blocks, 4 bytes per 128 KiB of zeros, generated directly (see [`zero_frame`]). A
//! 1 TiB hole costs 32 MiB of output and no compression time.
//!
//! # Writing
//! [`RawZstEncoder`] compresses one extent at a time on the blocking pool, with zstd's
//! checksum in every frame; a hole of at least [`ZERO_FRAME_MIN`] bytes ends the current
//! frame and becomes a zero-run frame, shorter holes are compressed as zeros.
//!
//! # Reading
//! [`ZstdRawSource`] reads such objects, and also plain `.zst` files whose (first) frame
//! records its content size (as `zstd FILE` does). The compressed object is fetched with
//! ranged reads in flight, decompressed on a thread of its own, and cut into
//! [`DEFAULT_READ_SIZE`] pieces; all-zero pieces are not yielded.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use objstore::RangeRead;
use tokio::sync::mpsc;
use zstd::stream::raw::{InBuffer, Operation as _, OutBuffer};

use super::{Chunk, Encoder};
use crate::sources::{DEFAULT_READS_IN_FLIGHT, DEFAULT_READ_SIZE};
use crate::{Error, Extent, ObjectFormat, Result, Source};

/// The frame magic of zstd (little-endian on disk: `28 b5 2f fd`).
pub const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// The skippable frame diskferry puts first (zstd reserves 0x184D2A50..=0x184D2A5F).
pub const SKIPPABLE_HEADER_MAGIC: u32 = 0x184D_2A5D;
/// The tag inside diskferry's header frame.
pub const HEADER_TAG: &[u8; 8] = b"DFRAWZ01";
/// Length of the header frame: magic, frame size, tag, virtual size.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 8;

/// Largest zstd block, and the block size of the zero-run frames.
const BLOCK_MAX: u64 = 128 * 1024;
/// Frame header of a zero-run frame: magic, descriptor (no content size, no checksum, not
/// single-segment), window descriptor for a 128 KiB window (exponent 7: 2^(10+7)).
const ZERO_FRAME_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
/// One RLE block of 128 KiB zeros, not the last: header `(size << 3) | (RLE << 1)` as 3 LE
/// bytes, then the byte repeated.
const FULL_RLE_BLOCK: [u8; 4] = [0x02, 0x00, 0x10, 0x00];
/// Bytes of RLE blocks handed out per piece (each piece covers 8 GiB of zeros).
const ZERO_PIECE: usize = 256 * 1024;
/// Holes at least this long become zero-run frames (shorter ones are compressed).
pub const ZERO_FRAME_MIN: u64 = 1 << 20;
/// Largest zstd window a frame may ask the reader to hold (2^27 = 128 MiB, libzstd's and
/// `zstd -d`'s default limit): a frame that needs more is refused, not given the memory.
pub const WINDOW_LOG_MAX: u32 = 27;
/// Piece size of the zeros compressed for short holes.
const COMPRESSED_ZEROS_PIECE: usize = 1 << 20;
/// Room reserved in the output before each call into the compressor.
const ZSTD_OUT_RESERVE: usize = 256 * 1024;

/// Whether the first bytes of an object look like zstd: a zstd frame or a skippable frame.
pub fn is_zstd(head: &[u8]) -> bool {
    let Some(magic) = head.get(..4) else {
        return false;
    };
    let magic = u32::from_le_bytes(magic.try_into().expect("4 bytes"));
    magic == ZSTD_FRAME_MAGIC || (magic & 0xFFFF_FFF0) == 0x184D_2A50
}

/// diskferry's header frame for a disk of `size` bytes.
pub fn header_frame(size: u64) -> Bytes {
    let mut frame = Vec::with_capacity(HEADER_LEN);
    frame.extend_from_slice(&SKIPPABLE_HEADER_MAGIC.to_le_bytes());
    frame.extend_from_slice(&16u32.to_le_bytes());
    frame.extend_from_slice(HEADER_TAG);
    frame.extend_from_slice(&size.to_le_bytes());
    Bytes::from(frame)
}

/// The virtual size recorded at the start of a zstd object: diskferry's header frame, or
/// the content size of a leading zstd frame. `None` when neither records it.
pub fn recorded_size(head: &[u8]) -> Option<u64> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    match word(0)? {
        SKIPPABLE_HEADER_MAGIC => {
            if word(4)? != 16 || head.get(8..16)? != HEADER_TAG {
                return None;
            }
            Some(u64::from_le_bytes(head.get(16..24)?.try_into().ok()?))
        }
        ZSTD_FRAME_MAGIC => frame_content_size(head),
        _ => None,
    }
}

/// The `Frame_Content_Size` of the zstd frame at the start of `head`, if it has one.
fn frame_content_size(head: &[u8]) -> Option<u64> {
    let descriptor = *head.get(4)?;
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let mut at = 5 + usize::from(!single_segment) + dict_len;
    let field = |len: usize, at: &mut usize| -> Option<u64> {
        let bytes = head.get(*at..*at + len)?;
        *at += len;
        let mut value = [0u8; 8];
        value[..len].copy_from_slice(bytes);
        Some(u64::from_le_bytes(value))
    };
    match (fcs_flag, single_segment) {
        (0, false) => None,
        (0, true) => field(1, &mut at),
        (1, _) => field(2, &mut at).map(|v| v + 256),
        (2, _) => field(4, &mut at),
        _ => field(8, &mut at),
    }
}

fn full_blocks() -> &'static Bytes {
    static BLOCKS: OnceLock<Bytes> = OnceLock::new();
    BLOCKS.get_or_init(|| Bytes::from(FULL_RLE_BLOCK.repeat(ZERO_PIECE / FULL_RLE_BLOCK.len())))
}

/// A zstd frame that decompresses to `len` zero bytes (`len > 0`), as pieces of bounded size:
/// the frame header, runs of 128 KiB RLE blocks, and the last block.
pub fn zero_frame(len: u64) -> impl Iterator<Item = Bytes> {
    debug_assert!(len > 0);
    // Every block but the last is a full one; the last holds the rest (1..=128 KiB).
    let last_len = match len % BLOCK_MAX {
        0 => BLOCK_MAX,
        rest => rest,
    };
    let full = (len - last_len) / BLOCK_MAX;
    let per_piece = (ZERO_PIECE / FULL_RLE_BLOCK.len()) as u64;
    let pieces = (0..full.div_ceil(per_piece)).map(move |i| {
        let blocks = (full - i * per_piece).min(per_piece) as usize;
        full_blocks().slice(..blocks * FULL_RLE_BLOCK.len())
    });
    let header = (last_len << 3) | (1 << 1) | 1;
    let last = [header as u8, (header >> 8) as u8, (header >> 16) as u8, 0];
    std::iter::once(Bytes::from_static(&ZERO_FRAME_HEADER))
        .chain(pieces)
        .chain(std::iter::once(Bytes::copy_from_slice(&last)))
}

/// Compressed chunks the decompression thread reads from.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

type Piece = std::result::Result<(u64, Bytes), String>;

/// A zstd-compressed raw disk (see the module documentation).
pub struct ZstdRawSource {
    name: String,
    size: u64,
    pieces: mpsc::Receiver<Piece>,
    /// The first error of the compressed reads (the thread then sees a truncated stream).
    read_error: Arc<Mutex<Option<objstore::Error>>>,
    feeder: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ZstdRawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdRawSource")
            .field("object", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

impl Drop for ZstdRawSource {
    fn drop(&mut self) {
        // The thread stops when its input ends or its output is dropped.
        self.feeder.abort();
    }
}

impl ZstdRawSource {
    /// Opens a zstd object whose start records the virtual size (diskferry's header frame,
    /// or a frame with its content size).
    pub async fn open(object: Arc<dyn RangeRead>) -> Result<ZstdRawSource> {
        let name = object.describe();
        let probe = object.size().min(64) as usize;
        let head = object.read_at(0, probe).await?;
        let size = recorded_size(&head).ok_or_else(|| Error::UnsupportedSource {
            source_name: name.clone(),
            reason: "it is zstd-compressed but does not record its decompressed size \
                     (compress a file with `zstd FILE`, not a pipe, or export with diskferry)"
                .into(),
        })?;
        let read_error = Arc::new(Mutex::new(None));
        let (input_tx, input_rx) = mpsc::channel::<Bytes>(2);
        let mut reads = Box::pin(objstore::ranges(
            object.clone(),
            0,
            object.size(),
            DEFAULT_READ_SIZE,
            DEFAULT_READS_IN_FLIGHT,
        ));
        let slot = read_error.clone();
        let feeder = tokio::spawn(async move {
            while let Some(item) = reads.next().await {
                match item {
                    Ok((_, data)) => {
                        if input_tx.send(data).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        return;
                    }
                }
            }
        });
        let (piece_tx, pieces) = mpsc::channel::<Piece>(2);
        std::thread::Builder::new()
            .name("diskferry-unzstd".into())
            .spawn(move || decompress(input_rx, size, piece_tx))
            .map_err(|e| Error::io("start the zstd decompression thread", e))?;
        Ok(ZstdRawSource {
            name,
            size,
            pieces,
            read_error,
            feeder,
        })
    }
}

/// The decompression thread: cuts the content into pieces, sends the non-zero ones.
fn decompress(input: mpsc::Receiver<Bytes>, size: u64, out: mpsc::Sender<Piece>) {
    let reader = ChannelReader {
        rx: input,
        current: Bytes::new(),
    };
    let result = (|| -> std::result::Result<(), String> {
        let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(|e| e.to_string())?;
        decoder
            .window_log_max(WINDOW_LOG_MAX)
            .map_err(|e| e.to_string())?;
        let mut offset = 0u64;
        loop {
            let mut piece = BytesMut::zeroed(DEFAULT_READ_SIZE);
            let mut filled = 0;
            while filled < piece.len() {
                match decoder.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("zstd: {e}")),
                }
            }
            if filled == 0 {
                break;
            }
            if offset + filled as u64 > size {
                return Err(format!(
                    "it decompresses to more than the {size} bytes it records"
                ));
            }
            piece.truncate(filled);
            if !crate::is_zero(&piece) && out.blocking_send(Ok((offset, piece.freeze()))).is_err() {
                return Ok(());
            }
            offset += filled as u64;
        }
        if offset != size {
            return Err(format!(
                "it decompresses to {offset} bytes, but records a size of {size}"
            ));
        }
        Ok(())
    })();
    if let Err(reason) = result {
        let _ = out.blocking_send(Err(reason));
    }
}

#[async_trait]
impl Source for ZstdRawSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn format(&self) -> &'static str {
        "raw.zst"
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        match self.pieces.recv().await {
            None => Ok(None),
            Some(Ok((offset, data))) => Ok(Some(Extent::Data { offset, data })),
            Some(Err(reason)) => {
                // A failed read of the compressed object looks like a truncated stream to
                // the decoder: report the read error itself.
                if let Some(e) = self
                    .read_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    return Err(Error::Object(e));
                }
                Err(Error::SourceContract {
                    source_name: self.name.clone(),
                    reason,
                })
            }
        }
    }
}

/// The compressor's state: one zstd stream, cut into frames at long holes.
struct ZstdState {
    encoder: zstd::stream::raw::Encoder<'static>,
    /// Compressed bytes not yet handed out.
    out: Vec<u8>,
    /// Whether the current zstd frame has input (and so must be finished).
    frame_open: bool,
}

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
            out.extend(zero_frame(gap));
        } else if gap > 0 {
            let zeros = compressed_zeros();
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

fn compressed_zeros() -> &'static Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    // calloc'd: the pages are never touched, so they cost no memory.
    ZEROS.get_or_init(|| Bytes::from(vec![0u8; COMPRESSED_ZEROS_PIECE]))
}

/// Writes a disk as a `raw.zst` object (see the module documentation).
pub struct RawZstEncoder {
    /// The compressor, on the blocking pool while a step runs.
    state: Option<ZstdState>,
    /// The object's name, for messages.
    location: String,
    size: u64,
    /// Disk bytes consumed so far (the gap up to the next data is compressed or skipped).
    position: u64,
    /// Object bytes produced so far (the object is written front to back).
    object_position: u64,
}

impl std::fmt::Debug for RawZstEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawZstEncoder")
            .field("location", &self.location)
            .field("size", &self.size)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl RawZstEncoder {
    /// A `raw.zst` object of a `size`-byte disk at zstd `level`; `location` names it in
    /// errors.
    pub fn new(size: u64, level: i32, location: &str) -> Result<RawZstEncoder> {
        let state = ZstdState::new(level)
            .map_err(|e| Error::InvalidOption(format!("zstd level {level}: {e}")))?;
        Ok(RawZstEncoder {
            state: Some(state),
            location: location.to_string(),
            size,
            position: 0,
            object_position: 0,
        })
    }

    /// The object bytes as chunks, appended after those produced before.
    fn append(&mut self, pieces: Vec<Bytes>) -> Vec<Chunk> {
        pieces
            .into_iter()
            .map(|data| {
                let offset = self.object_position;
                self.object_position += data.len() as u64;
                Chunk { offset, data }
            })
            .collect()
    }

    /// Compresses the zeros up to `end` of the disk, then `data`, on the blocking pool.
    async fn step(&mut self, end: u64, data: Bytes, last: bool) -> Result<Vec<Chunk>> {
        let gap = end
            .checked_sub(self.position)
            .ok_or_else(|| Error::SourceContract {
                source_name: self.location.clone(),
                reason: format!(
                    "data at {end} came after data up to {}: extents must come in order",
                    self.position
                ),
            })?;
        let mut state = self.state.take().ok_or_else(|| Error::SourceContract {
            source_name: self.location.clone(),
            reason: "the zstd encoder was lost after an earlier failure".into(),
        })?;
        let len = data.len() as u64;
        let (state, produced) = tokio::task::spawn_blocking(move || {
            let produced = state.step(gap, &data, last);
            (state, produced)
        })
        .await
        .map_err(|e| Error::io("compress with zstd", std::io::Error::other(e)))?;
        self.state = Some(state);
        let pieces = produced.map_err(|e| Error::io("compress with zstd", e))?;
        self.position = end + len;
        Ok(self.append(pieces))
    }
}

#[async_trait]
impl Encoder for RawZstEncoder {
    fn format(&self) -> ObjectFormat {
        ObjectFormat::RawZstd
    }

    fn estimated_size(&self) -> u64 {
        // zstd's worst-case expansion is tiny; plus the header frame.
        self.size + self.size / 128 + (1 << 20)
    }

    fn start(&mut self) -> Vec<Chunk> {
        let header = header_frame(self.size);
        self.append(vec![header])
    }

    async fn push(&mut self, offset: u64, data: Bytes) -> Result<Vec<Chunk>> {
        self.step(offset, data, false).await
    }

    async fn finish(mut self: Box<Self>) -> Result<Vec<Chunk>> {
        let size = self.size;
        self.step(size, Bytes::new(), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_frames_decompress_to_zeros_of_every_length() {
        for len in [
            1u64,
            5,
            BLOCK_MAX - 1,
            BLOCK_MAX,
            BLOCK_MAX + 1,
            3 * BLOCK_MAX,
            40 << 20,
        ] {
            let frame: Vec<u8> = zero_frame(len).flat_map(|b| b.to_vec()).collect();
            let out = zstd::stream::decode_all(&frame[..]).unwrap();
            assert_eq!(out.len() as u64, len, "len {len}");
            assert!(out.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_huge_hole_is_a_small_frame() {
        let tib = 1u64 << 40;
        let bytes: usize = zero_frame(tib).map(|b| b.len()).sum();
        assert_eq!(bytes as u64, 6 + tib / BLOCK_MAX * 4);
    }

    #[test]
    fn the_header_frame_is_skipped_by_decoders_and_records_the_size() {
        let mut stream = header_frame(12345).to_vec();
        stream.extend(zstd::stream::encode_all(&b"hello"[..], 3).unwrap());
        stream.extend(zero_frame(7).flat_map(|b| b.to_vec()));
        assert_eq!(recorded_size(&stream), Some(12345));
        assert!(is_zstd(&stream));
        let out = zstd::stream::decode_all(&stream[..]).unwrap();
        assert_eq!(out, b"hello\0\0\0\0\0\0\0");
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

    #[tokio::test]
    async fn the_encoder_writes_an_object_the_source_reads_back() {
        let size = 5u64 << 20;
        let mut encoder: Box<dyn Encoder> = Box::new(RawZstEncoder::new(size, 3, "t").unwrap());
        let mut object = Vec::new();
        let mut put = |chunks: Vec<Chunk>| {
            for chunk in chunks {
                assert_eq!(chunk.offset, object.len() as u64, "written front to back");
                object.extend_from_slice(&chunk.data);
            }
        };
        put(encoder.start());
        put(encoder
            .push(100, Bytes::from(vec![7u8; 1000]))
            .await
            .unwrap());
        put(encoder
            .push(3 << 20, Bytes::from(vec![9u8; 10]))
            .await
            .unwrap());
        put(encoder.finish().await.unwrap());
        let mut disk = vec![0u8; size as usize];
        disk[100..1100].fill(7);
        disk[3 << 20..(3 << 20) + 10].fill(9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw.zst");
        std::fs::write(&path, &object).unwrap();
        let reader = objstore::LocalFile::open(&path).await.unwrap();
        let mut source = ZstdRawSource::open(Arc::new(reader)).await.unwrap();
        assert_eq!(source.size(), size);
        let mut back = vec![0u8; size as usize];
        while let Some(extent) = source.next_extent().await.unwrap() {
            if let Extent::Data { offset, data } = extent {
                back[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            }
        }
        assert!(back == disk, "the disk read back differs");
    }

    #[test]
    fn plain_zstd_frames_tell_their_content_size() {
        for len in [0usize, 10, 300, 70_000, 5 << 20] {
            let data = vec![7u8; len];
            let frame = zstd::bulk::compress(&data, 3).unwrap();
            assert_eq!(recorded_size(&frame), Some(len as u64), "len {len}");
        }
        // A streamed frame does not know its size.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, b"abc").unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(recorded_size(&frame), None);
    }
}
