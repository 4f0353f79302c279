//! The range-read trait and the parallel, ordered range fetcher built on it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};

use crate::error::{Error, Result};

/// Largest object [`crate::ObjectStore::get`] reads whole into memory. Whole reads are for
/// small objects (a VM manifest, a Longhorn cfg, lock or block); the largest, a Longhorn
/// backup cfg, lists each block of the volume in ~100 bytes, so this admits volumes of
/// ~20 TiB in 2 MiB blocks and refuses any object that would exhaust memory.
pub const GET_MAX: u64 = 1 << 30;

/// Random-access reads of an object whose size is known once it is opened.
///
/// Implementations: [`crate::LocalFile`], [`crate::HttpObject`], [`crate::S3Object`]. The trait
/// is object safe; share one reader between tasks as `Arc<dyn RangeRead>`.
#[async_trait]
pub trait RangeRead: Send + Sync + std::fmt::Debug {
    /// Size of the object in bytes, as seen when it was opened.
    fn size(&self) -> u64;

    /// The object's name for messages (`s3://bucket/key`, a URL or a path).
    fn describe(&self) -> String;

    /// Reads exactly `len` bytes at `offset`. A zero length returns empty bytes without I/O.
    /// A range reaching past [`RangeRead::size`] fails with [`Error::ShortRead`] naming the
    /// object; so does a server or file that delivers fewer bytes than asked.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes>;

    /// User metadata recorded with the object under `key`, if any: S3's `x-amz-meta-KEY`, the
    /// same header on an HTTP(S) answer (a pre-signed S3 URL), a local file's `user.KEY`
    /// extended attribute. Writers record what they know here (e.g. the disk format), so a
    /// reader need not guess it from the content.
    fn metadata(&self, key: &str) -> Option<String> {
        let _ = key;
        None
    }

    /// Whether the object changed after its metadata was recorded (a local file written to
    /// in place since, as a VM writes its disk): what the metadata says of the content (a
    /// digest) no longer holds; what it says of the encoding (the format) still does.
    fn changed_since_recorded(&self) -> bool {
        false
    }

    /// The ranges `(start, end)` that hold data, in order, when the store knows where the
    /// holes are (a sparse local file): the rest reads as zeros and need not be read. `None`
    /// when it cannot tell (every byte may be data).
    async fn data_segments(&self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }
}

/// Checks `[offset, offset + len)` against `size`, with the error every reader returns.
pub fn check_range(what: &dyn RangeRead, offset: u64, len: usize) -> Result<()> {
    let size = what.size();
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::ShortRead {
            what: what.describe(),
            offset,
            len: len as u64,
            detail: format!("the object is only {size} bytes"),
        }),
    }
}

/// Checks `[offset, offset + len)` as [`check_range`] does and returns its last byte (the
/// inclusive end an HTTP `Range` names), or `None` for an empty read, which needs no request.
pub(crate) fn last_byte(what: &dyn RangeRead, offset: u64, len: usize) -> Result<Option<u64>> {
    check_range(what, offset, len)?;
    Ok(len.checked_sub(1).map(|last| offset + last as u64))
}

/// The user metadata under `key` in `recorded`, whose keys are lower case: HTTP header names,
/// and so S3's `x-amz-meta-*` keys, ignore case.
pub(crate) fn metadata_entry(recorded: &HashMap<String, String>, key: &str) -> Option<String> {
    recorded.get(&key.to_ascii_lowercase()).cloned()
}

/// Checks that a reader delivered what it was asked for.
pub fn check_len(what: &dyn RangeRead, offset: u64, len: usize, got: &Bytes) -> Result<()> {
    if got.len() == len {
        return Ok(());
    }
    Err(Error::ShortRead {
        what: what.describe(),
        offset,
        len: len as u64,
        detail: format!("received {} bytes", got.len()),
    })
}

/// Fetches `[start, end)` of `reader` as ranged reads of `chunk` bytes (the last may be
/// shorter), with up to `concurrency` reads in flight, and yields `(offset, bytes)` in
/// offset order.
///
/// Memory is bounded: at most `concurrency` chunks are held, whether in flight or finished
/// and waiting for an earlier one. The stream ends at the first error. Zero `chunk` or
/// `concurrency`, or `start > end`, yields a single
/// [`Error::Config`] error.
pub fn ranges(
    reader: Arc<dyn RangeRead>,
    start: u64,
    end: u64,
    chunk: usize,
    concurrency: usize,
) -> impl Stream<Item = Result<(u64, Bytes)>> + Send + 'static {
    let bad = chunk == 0 || concurrency == 0 || start > end;
    let err_stream = stream::iter(bad.then(|| {
        Err(Error::Config {
            reason: format!(
                "ranges({}, {start}..{end}, chunk {chunk}, concurrency {concurrency}): \
                 chunk and concurrency must be positive and start <= end",
                reader.describe()
            ),
        })
    }));
    let step = chunk.max(1) as u64;
    let offsets = (0..)
        .map(move |i: u64| start.saturating_add(i.saturating_mul(step)))
        .take_while(move |&off| !bad && off < end);
    let reads = stream::iter(offsets)
        .map(move |off| {
            let reader = Arc::clone(&reader);
            let len = (end - off).min(step) as usize;
            async move { reader.read_at(off, len).await.map(|b| (off, b)) }
        })
        .buffered(concurrency.max(1));
    // Stop after the first error so callers never see data past a failed range.
    let mut failed = false;
    err_stream.chain(reads).take_while(move |item| {
        let keep = !failed;
        failed |= item.is_err();
        futures::future::ready(keep)
    })
}

/// Reads `[start, end)` into one buffer using [`ranges`]; handy for verification and tests.
pub async fn read_range_parallel(
    reader: Arc<dyn RangeRead>,
    start: u64,
    end: u64,
    chunk: usize,
    concurrency: usize,
) -> Result<Bytes> {
    let cap = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(cap);
    let mut s = std::pin::pin!(ranges(reader, start, end, chunk, concurrency));
    while let Some(item) = s.next().await {
        let (_, bytes) = item?;
        out.extend_from_slice(&bytes);
    }
    Ok(Bytes::from(out))
}
