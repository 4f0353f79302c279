//! Local files: a positional range reader and a write-to-temp-then-rename writer.
//!
//! File I/O runs on Tokio's blocking pool (`spawn_blocking`) with positional `pread` and
//! `pwritev`, so reads from many tasks share one handle and never block the async workers.
//! Reads go into page-aligned buffers; writes are gathered into runs and written by one
//! thread per file (see [`LocalFileWriter`]).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::coverage::Coverage;
use crate::error::{Error, Result};
use crate::read::{check_range, RangeRead};
use crate::write::{ObjectWriter, WrittenObject};

/// Suffix of the temporary file a [`LocalFileWriter`] writes before the rename.
pub const TEMP_SUFFIX: &str = ".diskferry-tmp";

/// A local file opened for range reads.
#[derive(Debug, Clone)]
pub struct LocalFile {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    /// Buffers of large reads, used again once their bytes are dropped.
    buffers: Arc<BufferPool>,
}

impl LocalFile {
    /// Opens `path` (a file or a block device) and records its size. Directories and missing
    /// files are errors naming the path.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), true).await
    }

    /// Opens `path` as [`LocalFile::open`] does, for a name that came from inside a directory
    /// someone else may write to (a bundle's disk file): a symbolic link as its last component
    /// is refused by the open itself (`O_NOFOLLOW`, so no link can be swapped in after a
    /// check), and so is anything but a regular file, without waiting for a FIFO's writer
    /// (`O_NONBLOCK` for the open only). The directories above it may be links.
    pub async fn open_no_follow(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), false).await
    }

    async fn open_with(path: &Path, follow: bool) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let (file, size) = blocking(&path, move || {
            let mut file = if follow {
                File::open(&p)?
            } else {
                open_regular_no_follow(&p)?
            };
            if file.metadata()?.is_dir() {
                return Err(std::io::ErrorKind::IsADirectory.into());
            }
            // Seeking to the end also sizes block devices, whose metadata length is 0.
            let size = file.seek(SeekFrom::End(0))?;
            Ok((file, size))
        })
        .await
        .map_err(|e| match e {
            Error::Io { what, source } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound { what }
            }
            // A directory where a disk was named: a bad address, as for a convert's output.
            Error::Io { what, source } if source.kind() == std::io::ErrorKind::IsADirectory => {
                Error::InvalidAddress {
                    input: what,
                    reason: "it is a directory, not a disk image".into(),
                }
            }
            // O_NOFOLLOW's answer to a link.
            Error::Io { what, source }
                if !follow
                    && source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
            {
                Error::InvalidAddress {
                    input: what,
                    reason: "it is a symbolic link, which is not followed: the name came \
                             from inside a directory, and a link planted there could lead out \
                             of it"
                        .into(),
                }
            }
            Error::Io { what, source }
                if !follow && source.kind() == std::io::ErrorKind::InvalidInput =>
            {
                Error::InvalidAddress {
                    input: what,
                    reason: source.to_string(),
                }
            }
            e => e,
        })?;
        Ok(Self {
            path,
            file: Arc::new(file),
            size,
            buffers: Arc::default(),
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ranges of the file that hold data, in order, found with `SEEK_DATA`/`SEEK_HOLE`:
    /// the holes of a sparse file are never read. `None` where the file system cannot say
    /// (the whole file is then data).
    pub async fn data_segments(&self) -> Result<Option<Vec<(u64, u64)>>> {
        let (file, size) = (Arc::clone(&self.file), self.size);
        blocking(&self.path, move || Ok(data_segments(&file, size))).await
    }
}

/// Prefix of the extended attributes that hold a local file's user metadata (as S3's
/// `x-amz-meta-`).
pub const XATTR_PREFIX: &str = "user.";
/// Longest metadata value read from an extended attribute.
const XATTR_VALUE_MAX: usize = 4096;
/// The metadata key (an extended attribute after [`XATTR_PREFIX`]) that records the file's
/// modification time and size as they were when its metadata was written: a file changed
/// since (a VM that booted from a written disk) is
/// [`changed_since_recorded`](RangeRead::changed_since_recorded), and a digest recorded with
/// it would say a good file is corrupt. Files written before it existed have no stamp.
pub const WRITTEN_STAMP_KEY: &str = "objstore-written";

/// `MTIME_NANOS SIZE` of a file, as [`WRITTEN_STAMP_KEY`] records it.
fn written_stamp(meta: &std::fs::Metadata) -> Option<String> {
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{} {}", mtime.as_nanos(), meta.len()))
}

/// Whether the metadata recorded with `file` still describes it: no stamp (an older
/// writer's file, or none at all), or a stamp its modification time and size still match.
fn metadata_is_current(file: &File) -> bool {
    let mut value = vec![0u8; XATTR_VALUE_MAX];
    let name = format!("{XATTR_PREFIX}{WRITTEN_STAMP_KEY}");
    let Ok(len) = rustix::fs::fgetxattr(file, name.as_str(), &mut value) else {
        return true;
    };
    value.truncate(len);
    let now = file.metadata().ok().as_ref().and_then(written_stamp);
    let current = now.as_deref() == std::str::from_utf8(&value).ok();
    if !current {
        tracing::debug!("a file was modified after its metadata was recorded");
    }
    current
}

/// The data ranges of `file` (`len` bytes) by `SEEK_DATA`/`SEEK_HOLE`, or `None` when the
/// file system does not support them.
fn data_segments(file: &File, len: u64) -> Option<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut segments = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let start = match seek(file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // ENXIO: no data after `offset`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if start >= len {
            break;
        }
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(len),
            Err(_) => return None,
        };
        if end <= start {
            return None;
        }
        segments.push((start, end));
        offset = end;
    }
    Some(segments)
}

/// Alignment of read buffers: a page, as qemu aligns its I/O buffers.
const BUFFER_ALIGN: usize = 4096;
/// Reads of this many bytes and up to [`POOLED_READ_MAX`] go into pooled buffers (the raw
/// source reads 2 MiB at a time, the qcow2 reader up to 4 MiB); smaller ones into new ones.
const POOLED_READ_MIN: usize = 1 << 20;
/// The largest read into a pooled buffer.
const POOLED_READ_MAX: usize = 4 << 20;
/// Bytes of a pooled buffer: the largest pooled read, and room to align it.
const POOLED_BUFFER_LEN: usize = POOLED_READ_MAX + BUFFER_ALIGN;
/// Free buffers a [`LocalFile`] keeps at most: about as many as a job holds at once (reads
/// ahead, the digest's queue, writes queued), so that at a steady pace every read finds one.
const POOLED_BUFFERS_MAX: usize = 16;

/// The read buffers of one [`LocalFile`], kept for reuse when the bytes read into them are
/// dropped. A buffer used again is already mapped: a new one of a few MiB comes from `mmap`
/// or a trimmed heap, and reading into it page-faults and has the kernel zero every page (a
/// 1 GiB conversion took 75–88 k page faults with new buffers, 9 k with pooled ones, and
/// about 0.1 s less CPU).
#[derive(Default)]
struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("free", &self.lock().len())
            .finish()
    }
}

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A list of buffers is never left half-changed.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of [`POOLED_BUFFER_LEN`] bytes. Its content is what an earlier read left, or
    /// zeros when it is new (`calloc`: fresh pages, zeroed by the kernel as it maps them, as
    /// any new buffer's are).
    fn take(&self) -> Vec<u8> {
        self.lock()
            .pop()
            .unwrap_or_else(|| vec![0u8; POOLED_BUFFER_LEN])
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.lock();
        if free.len() < POOLED_BUFFERS_MAX {
            free.push(buf);
        }
    }
}

/// Bytes read into a pooled buffer, which goes back to its pool when they are dropped.
struct Pooled {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: std::sync::Weak<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

/// Where in `buf` the bytes of a read of `len` bytes go: from its first page boundary.
fn aligned_range(buf: &[u8], len: usize) -> std::ops::Range<usize> {
    let skip = buf.as_ptr().align_offset(BUFFER_ALIGN).min(BUFFER_ALIGN);
    skip..skip + len
}

/// Reads exactly `len` bytes at `offset` into a page-aligned buffer that is not zero-filled
/// first: one of `pool`'s when the size is one it keeps, else a new one.
///
/// Page-aligned, because the kernel copies the bytes into the page cache when they are
/// written to a local file, and that copy ran at half speed from the 16-byte-offset addresses
/// `malloc` returns for large blocks (1 GiB conversion: 0.47 s in `copy_folio_from_iter_atomic`
/// against qemu-img's 0.25 s for the same bytes). Not zero-filled, because the read overwrites
/// it (zero-filling was 3 % of a conversion's profile).
fn read_exact_new(
    file: &File,
    offset: u64,
    len: usize,
    pool: &Arc<BufferPool>,
) -> std::io::Result<Bytes> {
    if (POOLED_READ_MIN..=POOLED_READ_MAX).contains(&len) {
        let mut buf = pool.take();
        let range = aligned_range(&buf, len);
        file.read_exact_at(&mut buf[range.clone()], offset)?;
        return Ok(Bytes::from_owner(Pooled {
            buf,
            range,
            pool: Arc::downgrade(pool),
        }));
    }
    use rustix::buffer::spare_capacity;
    let mut buf: Vec<u8> = Vec::with_capacity(len + BUFFER_ALIGN);
    let range = aligned_range(&buf, len);
    buf.resize(range.start, 0);
    while buf.len() < range.end {
        let at = offset + (buf.len() - range.start) as u64;
        match rustix::io::pread(file, spare_capacity(&mut buf), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The spare capacity may hold more than was asked (at most a page); never hand it on.
    Ok(Bytes::from(buf).slice(range))
}

#[async_trait]
impl RangeRead for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn metadata(&self, key: &str) -> Option<String> {
        let mut value = vec![0u8; XATTR_VALUE_MAX];
        let name = format!("{XATTR_PREFIX}{key}");
        // No attribute, or a file system without them: nothing is recorded.
        let len = rustix::fs::fgetxattr(&*self.file, name.as_str(), &mut value).ok()?;
        value.truncate(len);
        String::from_utf8(value).ok()
    }

    fn changed_since_recorded(&self) -> bool {
        !metadata_is_current(&self.file)
    }

    async fn data_segments(&self) -> Result<Option<Vec<(u64, u64)>>> {
        LocalFile::data_segments(self).await
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        check_range(self, offset, len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (file, pool) = (Arc::clone(&self.file), Arc::clone(&self.buffers));
        let res = blocking(&self.path, move || {
            read_exact_new(&file, offset, len, &pool)
        })
        .await;
        match res {
            Ok(buf) => Ok(buf),
            // The file shrank after open.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(Error::ShortRead {
                    what: self.describe(),
                    offset,
                    len: len as u64,
                    detail: format!("the file ended early (it was {} bytes at open)", self.size),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Largest run of contiguous writes gathered into one `pwritev`: one system call instead of one
/// `pwrite` per chunk (a qcow2 image's chunks are 64 KiB clusters, 16 k calls per GiB).
const RUN_BYTES: usize = 2 << 20;
/// At most this many buffers per `pwritev` (Linux's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 512;
/// Runs queued for the writer thread. Few: data read long before they are written have left
/// the CPU caches by then, and the copy into the page cache then reads them from memory.
const RUNS_QUEUED: usize = 2;
/// When the file will be flushed, writeback is started every time this many bytes were
/// written (see [`Writeback`]).
const WRITEBACK_STEP: u64 = 16 << 20;

/// Writes that follow each other in the file, gathered for one `pwritev`.
#[derive(Default)]
struct Run {
    offset: u64,
    len: usize,
    bufs: Vec<Bytes>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("buffers", &self.bufs.len())
            .finish()
    }
}

impl Run {
    fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Whether `len` bytes at `offset` can join the run.
    fn takes(&self, offset: u64, len: usize) -> bool {
        self.is_empty()
            || (offset == self.end() && self.len + len <= RUN_BYTES && self.bufs.len() < MAX_IOVECS)
    }

    fn push(&mut self, offset: u64, data: Bytes) {
        if self.is_empty() {
            self.offset = offset;
        }
        self.len += data.len();
        self.bufs.push(data);
    }

    fn is_full(&self) -> bool {
        self.len >= RUN_BYTES || self.bufs.len() >= MAX_IOVECS
    }
}

/// Writes `run` with `pwritev`, resuming after short writes.
fn write_run(file: &File, run: &Run) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut slices: Vec<IoSlice<'_>> = run.bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut bufs = &mut slices[..];
    let mut offset = run.offset;
    while !bufs.is_empty() {
        match rustix::io::pwritev(file, bufs, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Starts writeback of the bytes written since the last start, once there are enough of them.
///
/// The page cache holds a file of a few GiB dirty without writing any of it (the background
/// threshold is a share of RAM), so without this the final flush would write the whole file
/// while nothing else runs. `POSIX_FADV_DONTNEED` on a range makes Linux start (asynchronous)
/// writeback of its dirty pages and drop the ones already clean; a writer never reads back.
#[derive(Debug, Default)]
struct Writeback {
    /// The range written since the last start.
    start: u64,
    end: u64,
}

impl Writeback {
    fn written(&mut self, file: &File, start: u64, end: u64) {
        if self.end == self.start {
            (self.start, self.end) = (start, end);
        } else {
            self.start = self.start.min(start);
            self.end = self.end.max(end);
        }
        if self.end - self.start >= WRITEBACK_STEP {
            let len = std::num::NonZeroU64::new(self.end - self.start);
            // Advice only: if it fails, the final flush still writes everything.
            let _ = rustix::fs::fadvise(file, self.start, len, rustix::fs::Advice::DontNeed);
            self.start = self.end;
        }
    }
}

/// The writer thread's loop: writes the runs in the order queued and, with `writeback`,
/// starts writeback as it goes. Returns the file when the queue closes, or the first error
/// (dropping the queue, so that the next send fails and collects it).
fn write_runs(file: File, mut runs: mpsc::Receiver<Run>, writeback: bool) -> std::io::Result<File> {
    let mut started = Writeback::default();
    while let Some(run) = runs.blocking_recv() {
        write_run(&file, &run)?;
        if writeback {
            started.written(&file, run.offset, run.end());
        }
    }
    Ok(file)
}

/// Where a [`LocalFileWriter`]'s file is.
#[derive(Debug)]
enum State {
    /// Nothing queued yet: the file is here. A small object is written at finish, with no
    /// thread.
    Idle(File),
    /// A writer thread on the blocking pool has the file and writes the queued runs.
    Queued {
        runs: mpsc::Sender<Run>,
        thread: tokio::task::JoinHandle<std::io::Result<File>>,
    },
    /// A write failed (its error was returned).
    Failed,
    /// Finished or aborted.
    Closed,
}

/// Writes a local file through a temporary file next to it, renamed into place on
/// [`ObjectWriter::finish`].
///
/// Writes may come in any order, but must not overlap, and must leave no gap in `[0, size)`
/// when finished. Without `force`, an existing destination is refused both at
/// [`LocalFileWriter::create`] and at the final step, which is a hard link (fails if the name
/// exists) rather than a rename. `abort`, a failed `finish` and `Drop` remove the temporary
/// file.
///
/// The I/O is shaped after what profiling showed: writes that follow each other are
/// gathered into one `pwritev` of up to 2 MiB (`RUN_BYTES`); the runs are written by a thread on
/// Tokio's blocking pool, with two queued (`RUNS_QUEUED`), so `write_at` returns as soon as its
/// data are queued (a failed write is reported by a later `write_at` or by `finish`); and
/// when the file will be flushed, writeback is started every 16 MiB (`WRITEBACK_STEP`), so
/// that the final flush does not find the whole file still dirty.
#[derive(Debug)]
pub struct LocalFileWriter {
    dest: PathBuf,
    temp: PathBuf,
    state: State,
    /// The writes not yet queued.
    run: Run,
    /// The temporary file is gone: linked into place, or removed.
    cleaned: bool,
    force: bool,
    written: Coverage,
    /// Metadata stored as `user.KEY` extended attributes at finish.
    metadata: Vec<(String, String)>,
    /// The size of a sparse file: ranges never written are holes (zeros).
    sparse_size: Option<u64>,
    /// Flush to stable storage before the file appears under its name.
    sync: bool,
}

impl LocalFileWriter {
    /// Starts writing `dest`. Fails with [`Error::AlreadyExists`] if it exists and `force` is
    /// false.
    pub async fn create(dest: impl AsRef<Path>, force: bool) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Config {
                reason: format!("{} has no file name", dest.display()),
            })?
            .to_string_lossy()
            .into_owned();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let temp = dir.join(format!(
            ".{name}.{}.{unique}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let (d, t) = (dest.clone(), temp.clone());
        let file = blocking(&dest, move || {
            if !force && d.symlink_metadata().is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            // A new file: never one truncated to 0, which ext4 (auto_da_alloc) marks to have
            // all its dirty pages written out synchronously on close.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&t)
        })
        .await
        .map_err(|e| exists_error(e, &dest))?;
        Ok(Self {
            dest,
            temp,
            state: State::Idle(file),
            run: Run::default(),
            cleaned: false,
            force,
            written: Coverage::default(),
            metadata: Vec::new(),
            sparse_size: None,
            sync: true,
        })
    }

    /// Makes the file sparse: it will be `size` bytes long, and the ranges never written stay
    /// holes that read as zeros (the file is new, so they hold nothing else).
    pub fn set_sparse_size(&mut self, size: u64) {
        self.sparse_size = Some(size);
    }

    /// Whether `finish` flushes the file to stable storage first (the default). Without it the
    /// file can appear whole and still be lost in a crash of the machine, as `qemu-img
    /// convert`'s output can. Set it before the first write: writeback is started early only
    /// for a file that will be flushed.
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Records `key = value` with the file, as the extended attribute `user.KEY`, when it is
    /// finished. A file system without extended attributes keeps none, silently: metadata
    /// is a hint for readers, never needed to read the file.
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_owned(), value.to_owned()));
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Removes the temporary file. A writer thread still running is left to end on its own.
    fn remove_temp(&mut self) -> Result<()> {
        self.state = State::Closed;
        self.cleaned = true;
        match std::fs::remove_file(&self.temp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(self.temp.display(), e)),
        }
    }

    /// The error for a write after the end or after a failure.
    fn not_open(&self) -> Error {
        let reason = match self.state {
            State::Failed => "an earlier write failed",
            _ => "writer already finished or aborted",
        };
        Error::invalid_write(self.describe(), reason)
    }

    /// Hands the file to a writer thread, if no thread has it yet.
    fn start_thread(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Idle(file) => {
                let (runs, queue) = mpsc::channel(RUNS_QUEUED);
                let writeback = self.sync;
                let thread =
                    tokio::task::spawn_blocking(move || write_runs(file, queue, writeback));
                State::Queued { runs, thread }
            }
            other => other,
        };
    }

    /// Queues the gathered run for the writer thread (waiting while the queue is full).
    async fn queue_run(&mut self) -> Result<()> {
        let run = std::mem::take(&mut self.run);
        self.start_thread();
        let State::Queued { runs, .. } = &self.state else {
            return Err(self.not_open());
        };
        if runs.send(run).await.is_ok() {
            return Ok(());
        }
        // The thread stopped at an error: that error is the one to report.
        match self.join_thread().await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::io(
                self.temp.display(),
                std::io::Error::other("the writer thread stopped early"),
            )),
        }
    }

    /// Closes the queue and waits for the writer thread: the file once every run is
    /// written, or the first write error. The state is `Failed` until the file is used.
    async fn join_thread(&mut self) -> Result<File> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle(file) => Ok(file),
            State::Queued { runs, thread } => {
                drop(runs);
                thread
                    .await
                    .map_err(|e| Error::io(self.temp.display(), std::io::Error::other(e)))?
                    .map_err(|e| Error::io(self.temp.display(), e))
            }
            other => {
                self.state = other;
                Err(self.not_open())
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<WrittenObject> {
        let size = self.sparse_size.unwrap_or(self.written.end());
        if self.written.end() > size {
            return Err(Error::invalid_write(
                self.describe(),
                format!(
                    "bytes were written up to {}, past the size {size}",
                    self.written.end()
                ),
            ));
        }
        let gap = match self.sparse_size {
            Some(_) => None,
            None => self.written.first_gap(size),
        };
        if let Some((a, b)) = gap {
            return Err(Error::invalid_write(
                self.describe(),
                format!("bytes {a}..{b} were never written"),
            ));
        }
        if !self.run.is_empty() && matches!(self.state, State::Queued { .. }) {
            self.queue_run().await?;
        }
        // Without a thread, the writes gathered so far (a small object) are written below.
        let run = std::mem::take(&mut self.run);
        let file = self.join_thread().await?;
        let (temp, dest, force) = (self.temp.clone(), self.dest.clone(), self.force);
        let metadata = std::mem::take(&mut self.metadata);
        let sync = self.sync;
        blocking(&self.dest, move || {
            if !run.is_empty() {
                write_run(&file, &run)?;
            }
            file.set_len(size)?;
            // After the last change of the content: setting attributes and syncing leave the
            // modification time alone.
            let stamp = file.metadata().ok().as_ref().and_then(written_stamp);
            let stamp = stamp.filter(|_| !metadata.is_empty());
            let stamp = stamp.map(|s| (WRITTEN_STAMP_KEY.to_owned(), s));
            for (key, value) in metadata.iter().chain(stamp.iter()) {
                let name = format!("{XATTR_PREFIX}{key}");
                let flags = rustix::fs::XattrFlags::empty();
                // Best effort: see `set_metadata`.
                let _ = rustix::fs::fsetxattr(&file, name.as_str(), value.as_bytes(), flags);
            }
            if sync {
                file.sync_all()?;
            }
            if force {
                std::fs::rename(&temp, &dest)
            } else {
                // link() refuses an existing name, so a file created meanwhile survives.
                std::fs::hard_link(&temp, &dest)?;
                std::fs::remove_file(&temp)
            }
        })
        .await
        .map_err(|e| exists_error(e, &self.dest))?;
        self.state = State::Closed;
        self.cleaned = true;
        Ok(WrittenObject {
            location: self.describe(),
            size,
            etag: None,
        })
    }
}

#[async_trait]
impl ObjectWriter for LocalFileWriter {
    fn describe(&self) -> String {
        self.dest.display().to_string()
    }

    async fn write_at(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if matches!(self.state, State::Failed | State::Closed) {
            return Err(self.not_open());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::invalid_write(self.describe(), "offset + length overflows"))?;
        self.written.insert(offset, end).map_err(|(a, b)| {
            Error::invalid_write(
                self.describe(),
                format!("write {offset}..{end} overlaps bytes {a}..{b} written before"),
            )
        })?;
        if data.is_empty() {
            return Ok(());
        }
        if !self.run.takes(offset, data.len()) {
            self.queue_run().await?;
        }
        self.run.push(offset, data);
        if self.run.is_full() {
            self.queue_run().await?;
        }
        Ok(())
    }

    fn set_metadata(&mut self, key: &str, value: &str) {
        LocalFileWriter::set_metadata(self, key, value);
    }

    async fn finish(mut self: Box<Self>) -> Result<WrittenObject> {
        match self.finish_inner().await {
            Ok(w) => Ok(w),
            Err(e) => {
                if let Err(cleanup) = self.remove_temp() {
                    tracing::warn!(error = %cleanup, "could not remove temporary file");
                }
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let removed = self.remove_temp();
        if let State::Queued { runs, thread } = state {
            drop(runs);
            // The thread has at most a few runs left: waiting for it means no write to the
            // removed file outlives the abort. Its error no longer matters.
            let _ = thread.await;
        }
        removed
    }
}

impl Drop for LocalFileWriter {
    fn drop(&mut self) {
        if !self.cleaned {
            if let Err(e) = self.remove_temp() {
                tracing::warn!(error = %e, "could not remove temporary file");
            }
        }
    }
}

fn exists_error(e: Error, dest: &Path) -> Error {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Error::AlreadyExists {
                what: format!("{} (use force to overwrite)", dest.display()),
            }
        }
        e => e,
    }
}

/// Opens `path` for reading if it is a regular file and not a symbolic link
/// ([`LocalFile::open_no_follow`]): anything else fails, a link with `ELOOP`, any other kind
/// of file with [`std::io::ErrorKind::InvalidInput`].
fn open_regular_no_follow(path: &Path) -> std::io::Result<File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    // NOFOLLOW: the open itself fails on a link. NONBLOCK: opening a FIFO does not wait for
    // a writer (it is then refused as no regular file).
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file (a directory, FIFO, device or socket)",
        ));
    }
    // Reads of a regular file do not block either way; the file is left as `open` leaves it.
    let status = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, status - OFlags::NONBLOCK)?;
    Ok(file)
}

/// Runs blocking file I/O off the async workers, naming `what` in errors.
async fn blocking<T, F>(what: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(what.display(), std::io::Error::other(e)))?
        .map_err(|e| Error::io(what.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes `i % 251` from `start`, so every offset has its own value.
    fn pattern(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    /// A file of `len` bytes of [`pattern`], open for reading, in a directory that lasts as
    /// long as the guard returned first.
    fn pattern_file(len: usize) -> (tempfile::TempDir, Vec<u8>, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        let data = pattern(0, len);
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, data, file)
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(TEMP_SUFFIX))
            .collect()
    }

    #[test]
    fn reads_land_in_page_aligned_buffers_and_fail_past_the_end() {
        let (_dir, data, file) = pattern_file(3 * POOLED_READ_MIN);
        let pool = Arc::default();
        // A small read into a new buffer, a large one into a pooled buffer.
        for (offset, len) in [(1234, 50_000), (1234, 2 * POOLED_READ_MIN)] {
            let got = read_exact_new(&file, offset, len, &pool).unwrap();
            assert!(got == data[offset as usize..][..len], "{len} bytes differ");
            assert_eq!(got.as_ptr() as usize % BUFFER_ALIGN, 0, "not page-aligned");
        }
        assert!(read_exact_new(&file, 0, 0, &pool).unwrap().is_empty());
        let end = data.len() as u64;
        for len in [20_000, POOLED_READ_MIN] {
            let err = read_exact_new(&file, end - 10_000, len, &pool).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{len}");
        }
    }

    #[test]
    fn a_large_read_buffer_is_used_again_once_its_bytes_are_dropped() {
        let (_dir, data, file) = pattern_file(2 * POOLED_READ_MAX);
        let pool = Arc::default();
        let first = read_exact_new(&file, 0, POOLED_READ_MAX, &pool).unwrap();
        let slice = first.slice(100..200);
        let at = first.as_ptr();
        drop(first);
        // Still in use through the slice: a second read gets another buffer.
        let second = read_exact_new(&file, 7, POOLED_READ_MIN, &pool).unwrap();
        assert_ne!(second.as_ptr(), at);
        assert!(slice == data[100..200] && second == data[7..][..POOLED_READ_MIN]);
        drop(second);
        drop(slice);
        // Both came back; the last one returned goes out first.
        let third = read_exact_new(&file, POOLED_READ_MAX as u64, POOLED_READ_MAX, &pool).unwrap();
        assert_eq!(third.as_ptr(), at, "the buffer was not used again");
        assert!(
            third == data[POOLED_READ_MAX..],
            "a reused buffer holds other bytes"
        );
        assert_eq!(pool.lock().len(), 1);
        drop(third);
        assert_eq!(pool.lock().len(), 2);
    }

    /// The holes of a sparse file are found, so that they are never read.
    /// A VM that boots from a written disk changes it: the metadata recorded at the write (a
    /// digest, above all) no longer describes its content.
    #[tokio::test]
    async fn a_file_changed_after_it_was_written_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut writer = LocalFileWriter::create(&path, false).await.unwrap();
        writer
            .write_at(0, Bytes::from(pattern(0, 8192)))
            .await
            .unwrap();
        writer.set_metadata("diskferry-digest", "abc");
        Box::new(writer).finish().await.unwrap();
        let file = LocalFile::open(&path).await.unwrap();
        if file.metadata(WRITTEN_STAMP_KEY).is_none() {
            // A file system without extended attributes: nothing is recorded at all.
            return;
        }
        assert_eq!(file.metadata("diskferry-digest").as_deref(), Some("abc"));
        assert!(!file.changed_since_recorded());
        drop(file);

        // Read and rewritten in place with the same bytes: the time changed, so it counts.
        let same = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        same.write_all_at(&pattern(0, 512), 0).unwrap();
        drop(same);
        let file = LocalFile::open(&path).await.unwrap();
        assert!(file.changed_since_recorded());
        // Still there: what it says of the encoding holds; the reader decides.
        assert_eq!(file.metadata("diskferry-digest").as_deref(), Some("abc"));
    }

    #[tokio::test]
    async fn a_sparse_file_names_its_data_and_not_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.raw");
        let mib = 1u64 << 20;
        let file = File::create(&path).unwrap();
        for at in [0, 5 * mib] {
            file.write_all_at(&pattern(at, mib as usize), at).unwrap();
        }
        file.set_len(8 * mib).unwrap();
        let segments = LocalFile::open(&path).await.unwrap().data_segments().await;
        let Some(segments) = segments.unwrap() else {
            // A file system that cannot tell (the whole file is then read): nothing to check.
            return;
        };
        assert_eq!(segments, [(0, mib), (5 * mib, 6 * mib)]);
    }

    #[test]
    fn a_run_takes_what_follows_it_up_to_its_bounds() {
        let piece = Bytes::from(vec![1u8; 16]);
        let mut run = Run::default();
        assert!(run.takes(100, 16));
        run.push(100, piece.clone());
        assert!(run.takes(116, 16), "the next bytes join the run");
        assert!(!run.takes(117, 16), "a gap ends the run");
        assert!(!run.takes(84, 16), "bytes before it end the run");
        assert!(!run.takes(116, RUN_BYTES), "the byte bound ends the run");
        for i in 1..MAX_IOVECS as u64 {
            run.push(100 + 16 * i, piece.clone());
        }
        assert!(run.is_full(), "the buffer bound fills the run");
        assert!(!run.takes(run.end(), 16));
        assert_eq!(run.len, 16 * MAX_IOVECS);
    }

    #[test]
    fn writeback_starts_once_a_step_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("out")).unwrap();
        let mut writeback = Writeback::default();
        let half = WRITEBACK_STEP / 2;
        writeback.written(&file, 0, half);
        assert_eq!((writeback.start, writeback.end), (0, half), "not yet");
        writeback.written(&file, half, WRITEBACK_STEP);
        assert_eq!(
            writeback.start, WRITEBACK_STEP,
            "started: the range restarts"
        );
        writeback.written(&file, 0, 4096);
        assert_eq!(
            (writeback.start, writeback.end),
            (0, 4096),
            "a new range begins"
        );
    }

    /// Many small writes in and out of order, with gaps and a run longer than
    /// [`MAX_IOVECS`] buffers, through the writer thread with early writeback: the file
    /// holds each at its offset and zeros elsewhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gathered_and_queued_writes_land_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        let mut writer = LocalFileWriter::create(&path, false).await.unwrap();
        let size = 3 * WRITEBACK_STEP + (5 << 20);
        writer.set_sparse_size(size);
        let mut pieces: Vec<(u64, usize)> = Vec::new();
        // 1 MiB stripes of 64 KiB chunks: two of data, one hole.
        for stripe in 0..(3 * WRITEBACK_STEP) >> 20 {
            if stripe % 3 != 2 {
                pieces.extend((0..16).map(|i| ((stripe << 20) + (i << 16), 64 << 10)));
            }
        }
        // A run of more tiny buffers than one pwritev takes, then a lone one.
        let tiny_start = 3 * WRITEBACK_STEP;
        pieces.extend((0..MAX_IOVECS as u64 + 3).map(|i| (tiny_start + 16 * i, 16)));
        pieces.push((size - 7, 7));
        // Out of order: the last stripe first.
        pieces.rotate_right(40);
        for &(offset, len) in &pieces {
            writer
                .write_at(offset, Bytes::from(pattern(offset, len)))
                .await
                .unwrap();
        }
        let written = Box::new(writer).finish().await.unwrap();
        assert_eq!(written.size, size);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, size);
        let mut expected = vec![0u8; size as usize];
        for &(offset, len) in &pieces {
            let at = offset as usize;
            expected[at..at + len].copy_from_slice(&pattern(offset, len));
        }
        assert!(got == expected, "the file differs from what was written");
        assert!(temp_files(dir.path()).is_empty());
    }

    /// A write the kernel refuses (an offset past what a file can hold) is reported by a later
    /// write, even though `write_at` returned before it was made; the abort removes the
    /// temporary file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_queued_write_is_reported_by_a_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LocalFileWriter::create(dir.path().join("out"), false)
            .await
            .unwrap();
        let full_run = Bytes::from(vec![7u8; RUN_BYTES]);
        // Past i64::MAX: pwritev fails with EINVAL on every file system.
        let mut offset = 1u64 << 63;
        let mut failure = None;
        for _ in 0..RUNS_QUEUED + 10 {
            match writer.write_at(offset, full_run.clone()).await {
                Ok(()) => offset += RUN_BYTES as u64,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let err = failure.expect("no write reported the failure");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(TEMP_SUFFIX), "{err}");
        let err = writer
            .write_at(0, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("earlier write failed"), "{err}");
        assert_eq!(temp_files(dir.path()).len(), 1);
        Box::new(writer).abort().await.unwrap();
        assert!(temp_files(dir.path()).is_empty());
    }

    /// The same failure, when no write comes after it, is reported by `finish`, which removes
    /// the temporary file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_queued_write_is_reported_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut writer = LocalFileWriter::create(&path, false).await.unwrap();
        let offset = 1u64 << 63;
        writer.set_sparse_size(offset + RUN_BYTES as u64);
        writer
            .write_at(offset, Bytes::from(vec![7u8; RUN_BYTES]))
            .await
            .unwrap();
        let err = Box::new(writer).finish().await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(temp_files(dir.path()).is_empty());
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_with_writes_queued_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut writer = LocalFileWriter::create(&path, false).await.unwrap();
        for i in 0..8u64 {
            let offset = i * RUN_BYTES as u64;
            writer
                .write_at(offset, Bytes::from(pattern(offset, RUN_BYTES)))
                .await
                .unwrap();
        }
        assert!(matches!(writer.state, State::Queued { .. }), "no thread");
        Box::new(writer).abort().await.unwrap();
        assert!(temp_files(dir.path()).is_empty());
        assert!(!path.exists());
    }

    /// A name from inside a directory: its last component may not be a link (nor anything
    /// but a regular file, and a FIFO does not block the open); the directories above may.
    #[tokio::test]
    async fn open_no_follow_refuses_links_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("disk.raw"), b"disk").unwrap();
        std::fs::write(tmp.path().join("secret"), b"not yours").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), real.join("link.raw")).unwrap();
        let fifo = real.join("fifo.raw");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let dir_link = tmp.path().join("dir-link");
        std::os::unix::fs::symlink(&real, &dir_link).unwrap();

        let file = LocalFile::open_no_follow(dir_link.join("disk.raw"))
            .await
            .unwrap();
        assert_eq!(&file.read_at(0, 4).await.unwrap()[..], b"disk");
        let link = dir_link.join("link.raw");
        let err = LocalFile::open_no_follow(&link).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidAddress { .. })
                && text.contains(&link.display().to_string())
                && text.contains("symbolic link"),
            "{text}"
        );
        for path in [fifo, real.clone()] {
            let err = LocalFile::open_no_follow(&path).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&path.display().to_string()) && text.contains("not a regular file"),
                "{text}"
            );
        }
        assert!(LocalFile::open_no_follow(real.join("none"))
            .await
            .unwrap_err()
            .is_not_found());
        // A path the user gave may be a link.
        assert_eq!(LocalFile::open(&link).await.unwrap().size(), 9);
    }
}
