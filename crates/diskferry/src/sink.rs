//! The `Sink` role: a destination that accepts extents.

use async_trait::async_trait;

use crate::{Extent, Result};

/// What the pipeline knows once the source is exhausted; sinks record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The source's address.
    pub source: String,
    /// The source's format.
    pub source_format: &'static str,
    /// The disk size.
    pub size: u64,
    /// The content digest ([`crate::digest`]).
    pub digest: String,
}

/// What a sink produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Where the result is.
    pub location: String,
    /// Data bytes written to the destination (zeros skipped are not counted).
    pub bytes_written: u64,
}

/// A destination for a disk.
///
/// The pipeline calls [`Sink::write`] with extents in offset order (gaps read as zeros), then
/// exactly one of [`Sink::finish`] or [`Sink::abort`].
#[async_trait]
pub trait Sink: Send {
    /// The destination's address, for messages.
    fn describe(&self) -> String;

    /// Accepts an extent. May wait (backpressure) while earlier writes are in flight.
    async fn write(&mut self, extent: Extent) -> Result<()>;

    /// Completes the destination and records the summary where the format allows.
    async fn finish(self: Box<Self>, summary: &Summary) -> Result<SinkReport>;

    /// Removes whatever this sink created; the destination is left as it was before.
    async fn abort(self: Box<Self>) -> Result<()>;
}
