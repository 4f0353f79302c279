//! The asynchronous positional-read trait the reader is driven through, with a local-file and
//! an in-memory implementation. Other crates implement it for S3 and HTTP(S) objects.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;

/// A source of bytes at known offsets: a local file, an HTTP(S) object, an S3 object.
///
/// The future is boxed so that the trait is dyn-compatible and can be held as
/// `Arc<dyn ReadAt>`. Reads may run concurrently.
pub trait ReadAt: Send + Sync {
    /// Total length of the object in bytes.
    fn len(&self) -> u64;

    /// Whether the object is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `len` bytes at `offset`. The caller never asks past [`ReadAt::len`]; an
    /// implementation returns exactly `len` bytes or an error.
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>>;
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        (**self).read_at(offset, len)
    }
}

/// An in-memory object, for tests and for small images already in memory.
#[derive(Debug, Clone)]
pub struct MemReadAt {
    data: Bytes,
}

impl MemReadAt {
    /// Wraps `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self { data: data.into() }
    }
}

impl ReadAt for MemReadAt {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        let result = usize::try_from(offset)
            .ok()
            .and_then(|start| Some((start, start.checked_add(len)?)))
            .filter(|&(_, end)| end <= self.data.len())
            .map(|(start, end)| self.data.slice(start..end))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {len} bytes at {offset} past the end ({})",
                        self.data.len()
                    ),
                )
            });
        Box::pin(std::future::ready(result))
    }
}

/// A local file read with positional reads on tokio's blocking pool, so reads never block the
/// async runtime and several may run at once.
#[derive(Debug, Clone)]
pub struct FileReadAt {
    file: Arc<File>,
    len: u64,
}

impl FileReadAt {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Self::from_file(file)
    }

    /// Wraps an open file; its length is taken once, now.
    pub fn from_file(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            len,
        })
    }
}

impl ReadAt for FileReadAt {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        let file = Arc::clone(&self.file);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(len);
                file.read_exact_at(&mut buf, offset)?;
                Ok(buf.freeze())
            })
            .await
            .map_err(io::Error::other)?
        })
    }
}
