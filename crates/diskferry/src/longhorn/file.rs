//! A small raw-file sink for restores to a local path: a temporary file beside the
//! destination, sized to the disk (holes stay sparse), positional writes in parallel,
//! fsync, then moved into place.
//!
//! Kept beside [`ObjectSink`](crate::sinks::ObjectSink)'s local raw mode on purpose: that
//! mode writes every zero of a hole (an object has no holes) through one sequential
//! writer, so a restored raw file would take its full size on disk; this sink leaves holes
//! unallocated and writes blocks in parallel.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinSet;

use crate::{Error, Extent, Result, Sink, SinkReport, Summary};

/// Writes in flight at once.
pub const FILE_WRITES_IN_FLIGHT: usize = 8;
/// Suffix of the temporary file moved into place on finish.
const TEMP_SUFFIX: &str = ".diskferry-partial";

/// A raw disk image in a local file.
pub struct RawFileSink {
    path: PathBuf,
    temp: PathBuf,
    file: Arc<std::fs::File>,
    tasks: JoinSet<std::io::Result<()>>,
    bytes_written: u64,
    replace: bool,
}

impl std::fmt::Debug for RawFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFileSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RawFileSink {
    /// Creates the temporary file for a `size`-byte disk. Refuses an existing `path` unless
    /// `replace`; without `replace` the final step is a hard link, which also refuses a
    /// file created meanwhile.
    pub async fn create(path: &Path, size: u64, replace: bool) -> Result<Self> {
        if !replace && path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists(path.display().to_string()));
        }
        // Unique per run: two restores to the same path never share a temporary file.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.{nanos}{TEMP_SUFFIX}", std::process::id()));
        let temp = PathBuf::from(temp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
        if let Err(e) = file.set_len(size) {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::io(format!("size {} to {size}", temp.display()), e));
        }
        Ok(Self {
            path: path.to_owned(),
            temp,
            file: Arc::new(file),
            tasks: JoinSet::new(),
            bytes_written: 0,
            replace,
        })
    }

    async fn reap(&mut self, until: usize) -> Result<()> {
        while self.tasks.len() > until {
            if let Some(done) = self.tasks.join_next().await {
                done.map_err(|e| Error::io("join a file write", std::io::Error::other(e)))?
                    .map_err(|e| Error::io(format!("write {}", self.temp.display()), e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for RawFileSink {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        // The file starts as one hole: zero ranges need nothing.
        if let Extent::Data { offset, data } = extent {
            self.reap(FILE_WRITES_IN_FLIGHT - 1).await?;
            self.bytes_written += data.len() as u64;
            let file = self.file.clone();
            self.tasks
                .spawn_blocking(move || file.write_all_at(&data, offset));
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, _summary: &Summary) -> Result<SinkReport> {
        let done = async {
            self.reap(0).await?;
            let file = self.file.clone();
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|e| Error::io("join fsync", std::io::Error::other(e)))?
                .map_err(|e| Error::io(format!("fsync {}", self.temp.display()), e))?;
            if self.replace {
                tokio::fs::rename(&self.temp, &self.path)
                    .await
                    .map_err(|e| Error::io(format!("rename to {}", self.path.display()), e))
            } else {
                match tokio::fs::hard_link(&self.temp, &self.path).await {
                    Ok(()) => {
                        let _ = tokio::fs::remove_file(&self.temp).await;
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Err(Error::AlreadyExists(self.path.display().to_string()))
                    }
                    Err(e) => Err(Error::io(format!("link to {}", self.path.display()), e)),
                }
            }
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(e);
        }
        Ok(SinkReport {
            location: self.path.display().to_string(),
            bytes_written: self.bytes_written,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        tokio::fs::remove_file(&self.temp)
            .await
            .map_err(|e| Error::io(format!("remove {}", self.temp.display()), e))
    }
}
