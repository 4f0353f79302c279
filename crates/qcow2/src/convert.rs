//! Local-file conversions (`raw` ⇄ `qcow2`, and recompression), as `qemu-img convert` does.
//!
//! The input format is detected by its magic, never by the file name. Holes of a sparse raw
//! input are skipped with `SEEK_DATA`/`SEEK_HOLE`; unallocated qcow2 ranges are never read.
//! Reading, compressing and writing overlap: a reader thread, the writer's compression tasks and
//! a writer thread, joined by bounded channels.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::error::{ReadError, WriteError};
use crate::format::{MAGIC, SECTOR_SIZE};
use crate::io::FileReadAt;
use crate::reader::{Qcow2Image, ReadOptions};
use crate::writer::{is_zero, Chunk, Qcow2Writer, WriterOptions};

/// Size of the reads of a raw input.
pub const RAW_READ_SIZE: usize = 4 << 20;
/// Messages queued between the stages.
const CHANNEL_DEPTH: usize = 4;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw bytes.
    Raw,
    /// qcow2.
    Qcow2,
}

impl ImageFormat {
    /// Detects the format from the first bytes of a file: qcow2 by its magic, raw otherwise.
    pub fn detect(first_bytes: &[u8]) -> ImageFormat {
        if first_bytes.len() >= 4 && first_bytes[..4] == MAGIC.to_be_bytes() {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        }
    }
}

/// Errors of [`convert_file`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{0}: output exists (use --force to overwrite)")]
    OutputExists(PathBuf),
    /// Input and output are the same file.
    #[error("{0}: input and output are the same file")]
    SameFile(PathBuf),
    /// The qcow2 input is invalid or unsupported.
    #[error("{path}: {source}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The error.
        #[source]
        source: ReadError,
    },
    /// The qcow2 writer failed.
    #[error("{path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The error.
        #[source]
        source: WriteError,
    },
    /// A worker thread failed.
    #[error("worker failed: {0}")]
    Worker(String),
}

/// What [`convert_file`] should produce.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    /// Output format.
    pub output_format: ImageFormat,
    /// qcow2 writer options (used when the output is qcow2).
    pub writer: WriterOptions,
    /// qcow2 reader options (used when the input is qcow2).
    pub reader: ReadOptions,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Flush the output to stable storage (`fdatasync`) before returning, as `qemu-img convert`
    /// does.
    pub sync: bool,
}

/// Figures about a finished conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// Detected input format.
    pub input_format: ImageFormat,
    /// Virtual disk size.
    pub virtual_size: u64,
    /// Bytes of guest data read from the input (holes excluded).
    pub data_bytes: u64,
    /// Size of the output file.
    pub output_size: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts `src` to `dst`. The input format is detected by magic. The output is created new
/// (or replaced when `overwrite`); on failure the partial output is removed.
pub async fn convert_file(
    src: &Path,
    dst: &Path,
    options: ConvertOptions,
) -> Result<ConvertStats, ConvertError> {
    let input = File::open(src).map_err(io_err(src))?;
    if let (Ok(a), Ok(b)) = (src.canonicalize(), dst.canonicalize()) {
        if a == b {
            return Err(ConvertError::SameFile(dst.to_path_buf()));
        }
    }
    let mut open = OpenOptions::new();
    open.write(true);
    if options.overwrite {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let output = match open.open(dst) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ConvertError::OutputExists(dst.to_path_buf()))
        }
        Err(e) => return Err(io_err(dst)(e)),
    };
    let result = convert_open(src, input, dst, output, options).await;
    if result.is_err() {
        // Best effort: the partial output is useless, and the error that matters is the first.
        let _ = std::fs::remove_file(dst);
    }
    result
}

async fn convert_open(
    src: &Path,
    input: File,
    dst: &Path,
    output: File,
    options: ConvertOptions,
) -> Result<ConvertStats, ConvertError> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&input, &mut magic, 0).map_err(io_err(src))?;
    let input_format = ImageFormat::detect(&magic[..n]);
    let (tx, rx) = mpsc::channel::<Result<(u64, Bytes), ConvertError>>(CHANNEL_DEPTH);
    // The source stage: a thread for raw, async planned reads for qcow2.
    let (virtual_size, source_task) = match input_format {
        ImageFormat::Raw => {
            let len = input.metadata().map_err(io_err(src))?.len();
            let path = src.to_path_buf();
            let task = tokio::task::spawn_blocking(move || read_raw(&path, &input, len, &tx));
            (len, task)
        }
        ImageFormat::Qcow2 => {
            let reader = Arc::new(FileReadAt::from_file(input).map_err(io_err(src))?);
            let image = Qcow2Image::open(reader)
                .await
                .map_err(|source| ConvertError::Read {
                    path: src.to_path_buf(),
                    source,
                })?;
            let size = image.virtual_size();
            let mut data = image.data_reader(options.reader);
            let path = src.to_path_buf();
            let task = tokio::spawn(async move {
                loop {
                    let item = match data.next_chunk().await {
                        Ok(Some(c)) => Ok((c.guest_offset, c.data)),
                        Ok(None) => return,
                        Err(source) => Err(ConvertError::Read {
                            path: path.clone(),
                            source,
                        }),
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            });
            (size, task)
        }
    };
    let result = match options.output_format {
        ImageFormat::Raw => write_raw(dst, output, virtual_size, options.sync, rx).await,
        ImageFormat::Qcow2 => {
            write_qcow2(dst, output, virtual_size, options.writer, options.sync, rx).await
        }
    };
    // If the sink failed, the source stops at its next send; wait for it either way.
    source_task
        .await
        .map_err(|e| ConvertError::Worker(e.to_string()))?;
    let (data_bytes, output_size) = result?;
    Ok(ConvertStats {
        input_format,
        virtual_size,
        data_bytes,
        output_size,
    })
}

/// Reads as much as there is, up to `buf.len()`, at `offset`.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The data segments of a (possibly sparse) file, by `SEEK_DATA`/`SEEK_HOLE`; the whole file
/// if the file system cannot tell.
fn data_segments(file: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut segments = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, len)],
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(_) => return vec![(0, len)],
        };
        if end <= start {
            break;
        }
        segments.push((start, end));
        pos = end;
    }
    segments
}

fn read_raw(
    path: &Path,
    file: &File,
    len: u64,
    tx: &mpsc::Sender<Result<(u64, Bytes), ConvertError>>,
) {
    for (start, end) in data_segments(file, len) {
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(RAW_READ_SIZE);
            let mut buf = BytesMut::zeroed(n);
            let item = match file.read_exact_at(&mut buf, pos) {
                Ok(()) => Ok((pos, buf.freeze())),
                Err(e) => Err(io_err(path)(e)),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            pos += n as u64;
        }
    }
}

/// A thread that writes chunks at their offsets.
fn spawn_file_writer(
    path: &Path,
    file: File,
) -> (
    mpsc::Sender<Vec<Chunk>>,
    tokio::task::JoinHandle<Result<File, ConvertError>>,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<Chunk>>(CHANNEL_DEPTH);
    let path = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        while let Some(chunks) = rx.blocking_recv() {
            for c in chunks {
                file.write_all_at(&c.data, c.file_offset)
                    .map_err(io_err(&path))?;
            }
        }
        Ok(file)
    });
    (tx, task)
}

async fn finish_writer(
    tx: mpsc::Sender<Vec<Chunk>>,
    task: tokio::task::JoinHandle<Result<File, ConvertError>>,
) -> Result<File, ConvertError> {
    drop(tx);
    task.await
        .map_err(|e| ConvertError::Worker(e.to_string()))?
}

async fn write_raw(
    dst: &Path,
    output: File,
    virtual_size: u64,
    sync: bool,
    mut rx: mpsc::Receiver<Result<(u64, Bytes), ConvertError>>,
) -> Result<(u64, u64), ConvertError> {
    // A fresh file of the full size is all holes: zeros need not be written.
    output.set_len(virtual_size).map_err(io_err(dst))?;
    let (tx, task) = spawn_file_writer(dst, output);
    let mut data_bytes = 0;
    let mut failure = None;
    while let Some(item) = rx.recv().await {
        let (offset, data) = match item {
            Ok(x) => x,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        data_bytes += data.len() as u64;
        if is_zero(&data) {
            continue;
        }
        if tx
            .send(vec![Chunk {
                file_offset: offset,
                data,
            }])
            .await
            .is_err()
        {
            break;
        }
    }
    drop(rx);
    let file = finish_writer(tx, task).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    if sync {
        file.sync_data().map_err(io_err(dst))?;
    }
    Ok((data_bytes, virtual_size))
}

async fn write_qcow2(
    dst: &Path,
    output: File,
    virtual_size: u64,
    options: WriterOptions,
    sync: bool,
    mut rx: mpsc::Receiver<Result<(u64, Bytes), ConvertError>>,
) -> Result<(u64, u64), ConvertError> {
    let werr = |source| ConvertError::Write {
        path: dst.to_path_buf(),
        source,
    };
    // qemu rounds the virtual size up to a sector; so do we.
    let size = virtual_size.next_multiple_of(SECTOR_SIZE);
    let mut writer = Qcow2Writer::new(size, options).map_err(werr)?;
    output.set_len(0).map_err(io_err(dst))?;
    let (tx, task) = spawn_file_writer(dst, output);
    let mut data_bytes = 0;
    let mut failure = None;
    while let Some(item) = rx.recv().await {
        let pushed = match item {
            Ok((offset, data)) => {
                data_bytes += data.len() as u64;
                writer.push(offset, data).await.map_err(werr)
            }
            Err(e) => Err(e),
        };
        match pushed {
            Ok(chunks) if chunks.is_empty() => {}
            Ok(chunks) => {
                if tx.send(chunks).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(rx);
    if failure.is_none() {
        match writer.finish().await {
            Ok(done) => {
                let mut chunks = done.tail_chunks;
                chunks.push(done.header_chunk);
                let _ = tx.send(chunks).await;
            }
            Err(e) => failure = Some(werr(e)),
        }
    }
    let file = finish_writer(tx, task).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    if sync {
        file.sync_data().map_err(io_err(dst))?;
    }
    let len = file.metadata().map_err(io_err(dst))?.len();
    Ok((data_bytes, len))
}
