//! Local files: a positional range reader and a write-to-temp-then-rename writer.
//!
//! File I/O runs on Tokio's blocking pool (`spawn_blocking`) with positional `pread`/`pwrite`
//! (`FileExt`), so reads and writes from many tasks share one handle and never block the
//! async workers.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

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
}

impl LocalFile {
    /// Opens `path` (a file or a block device) and records its size. Directories and missing
    /// files are errors naming the path.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (file, size) = blocking(&path, move || {
            let mut file = File::open(&p)?;
            if file.metadata()?.is_dir() {
                return Err(std::io::Error::other("is a directory"));
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
            e => e,
        })?;
        Ok(Self {
            path,
            file: Arc::new(file),
            size,
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

    async fn data_segments(&self) -> Result<Option<Vec<(u64, u64)>>> {
        LocalFile::data_segments(self).await
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        check_range(self, offset, len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let file = Arc::clone(&self.file);
        let res = blocking(&self.path, move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await;
        match res {
            Ok(buf) => Ok(Bytes::from(buf)),
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

/// Writes a local file through a temporary file next to it, renamed into place on
/// [`ObjectWriter::finish`].
///
/// Writes may come in any order (positional `pwrite`), but must not overlap, and must leave no
/// gap in `[0, size)` when finished. Without `force`, an existing destination is refused both
/// at [`LocalFileWriter::create`] and at the final step, which is a hard link (fails if the
/// name exists) rather than a rename. `abort`, a failed `finish` and `Drop` remove the
/// temporary file.
#[derive(Debug)]
pub struct LocalFileWriter {
    dest: PathBuf,
    temp: PathBuf,
    file: Option<Arc<File>>,
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
            file: Some(Arc::new(file)),
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
    /// convert`'s output can.
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

    fn remove_temp(&mut self) -> Result<()> {
        self.file = None;
        match std::fs::remove_file(&self.temp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(self.temp.display(), e)),
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
        let file = self.file.clone().ok_or_else(|| {
            Error::invalid_write(self.describe(), "writer already finished or aborted")
        })?;
        let (temp, dest, force) = (self.temp.clone(), self.dest.clone(), self.force);
        let metadata = std::mem::take(&mut self.metadata);
        let sync = self.sync;
        blocking(&self.dest, move || {
            file.set_len(size)?;
            for (key, value) in &metadata {
                let name = format!("{XATTR_PREFIX}{key}");
                let flags = rustix::fs::XattrFlags::empty();
                // Best effort: see `set_metadata`.
                let _ = rustix::fs::fsetxattr(&*file, name.as_str(), value.as_bytes(), flags);
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
        self.file = None;
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
        let Some(file) = self.file.clone() else {
            return Err(Error::invalid_write(
                self.describe(),
                "writer already finished or aborted",
            ));
        };
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
        blocking(&self.temp, move || file.write_all_at(&data, offset)).await
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
        self.remove_temp()
    }
}

impl Drop for LocalFileWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
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
