//! An RBD image or snapshot as a source: only allocated extents (from `diff_iterate2`) are
//! read, with asynchronous reads in parallel.

use std::pin::Pin;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use rbd::{DiffExtent, Image, OpenMode};

use super::{DEFAULT_READS_IN_FLIGHT, DEFAULT_READ_SIZE};
use crate::context::blocking;
use crate::{Context, Extent, RbdSpec, Result, Source};

type Reads = Pin<Box<dyn Stream<Item = rbd::Result<Extent>> + Send>>;

/// How to read an RBD image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSourceOptions {
    /// Bytes per read.
    pub read_size: usize,
    /// Reads in flight.
    pub in_flight: usize,
    /// Read only what changed since this snapshot (incremental): changed data as
    /// [`Extent::Data`], ranges that became holes or zeros as [`Extent::Zero`].
    pub since: Option<String>,
}

impl Default for RbdSourceOptions {
    fn default() -> Self {
        RbdSourceOptions {
            read_size: DEFAULT_READ_SIZE,
            in_flight: DEFAULT_READS_IN_FLIGHT,
            since: None,
        }
    }
}

/// An RBD image (read-only head) or snapshot as a disk source.
pub struct RbdSource {
    spec: RbdSpec,
    size: u64,
    reads: Reads,
    /// Incremental mode: zeros are changes and must reach the sink.
    incremental: bool,
}

impl std::fmt::Debug for RbdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdSource")
            .field("spec", &self.spec)
            .field("size", &self.size)
            .finish()
    }
}

impl RbdSource {
    /// Opens `spec` read-only and lists its allocated extents (a clone's parent data
    /// included), or with `options.since` the extents changed since that snapshot.
    pub async fn open(
        ctx: &Context,
        spec: &RbdSpec,
        options: RbdSourceOptions,
    ) -> Result<RbdSource> {
        let ioctx = ctx.pool(&spec.pool).await?;
        let (name, mode) = (
            spec.image.clone(),
            match &spec.snap {
                Some(snap) => OpenMode::Snapshot(snap.clone()),
                None => OpenMode::ReadOnly,
            },
        );
        let image = blocking(move || Image::open(&ioctx, &name, mode)).await?;
        Self::from_image(spec.clone(), image, options).await
    }

    /// Reads an already open image (e.g. one opened at a group snapshot's id).
    pub async fn from_image(
        spec: RbdSpec,
        image: Image,
        options: RbdSourceOptions,
    ) -> Result<RbdSource> {
        let lister = image.clone();
        let since = options.since.clone();
        let (size, extents) = blocking(move || {
            let size = lister.size()?;
            let extents = match since.as_deref() {
                Some(snap) => lister.diff_extents(Some(snap), false, false)?,
                None => allocated_extents(&lister)?,
            };
            Ok((size, extents))
        })
        .await?;
        let step = options.read_size.max(1) as u64;
        let pieces = extents.into_iter().flat_map(move |e| {
            let end = e.offset + e.len;
            (e.offset..end)
                .step_by(step as usize)
                .map(move |off| (off, (end - off).min(step), e.exists))
        });
        let reads = futures::stream::iter(pieces)
            .map(move |(offset, len, exists)| {
                let read = exists.then(|| image.read(offset, len as usize));
                async move {
                    match read {
                        Some(read) => read.await.map(|data| Extent::Data { offset, data }),
                        None => Ok(Extent::Zero { offset, len }),
                    }
                }
            })
            .buffered(options.in_flight.max(1))
            .boxed();
        Ok(RbdSource {
            spec,
            size,
            reads,
            incremental: options.since.is_some(),
        })
    }
}

/// The allocated extents of `image`, including what a clone reads from its parent.
///
/// Two passes: the whole objects holding data first, which with fast-diff is the object map
/// alone (0.4 s for a 1 TiB image here, where an exact pass over the whole image stats every
/// object: 28 s), then the exact extents inside those objects only, so that the zeros around
/// the data of a partly written object are not read.
fn allocated_extents(image: &Image) -> rbd::Result<Vec<DiffExtent>> {
    let mut objects: Vec<(u64, u64)> = Vec::new();
    for object in image.diff_extents(None, true, true)? {
        match objects.last_mut() {
            Some((start, len)) if *start + *len == object.offset => *len += object.len,
            _ => objects.push((object.offset, object.len)),
        }
    }
    let mut extents = Vec::new();
    for (offset, len) in objects {
        image.diff_iterate(None, offset, len, true, false, &mut |extent| {
            extents.push(extent);
            true
        })?;
    }
    Ok(extents)
}

#[async_trait]
impl Source for RbdSource {
    fn describe(&self) -> String {
        self.spec.to_string()
    }

    fn format(&self) -> &'static str {
        "rbd"
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        while let Some(extent) = self.reads.next().await {
            match extent? {
                Extent::Data { offset, data } if crate::is_zero(&data) => {
                    // A full read skips zeros (holes); an incremental one reports them as
                    // changes to zero.
                    if self.incremental {
                        let len = data.len() as u64;
                        return Ok(Some(Extent::Zero { offset, len }));
                    }
                }
                extent => return Ok(Some(extent)),
            }
        }
        Ok(None)
    }
}
