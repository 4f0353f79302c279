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
    /// The algorithm `digest` was computed with: what a sink records beside it.
    pub digest_algorithm: crate::DigestAlgorithm,
}

/// What a sink produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Where the result is.
    pub location: String,
    /// Data bytes written to the destination (zeros skipped are not counted).
    pub bytes_written: u64,
}

/// The facts every sink's report gives, whatever else it holds.
pub trait Report: Send + 'static {
    /// Where the result is.
    fn location(&self) -> &str;
    /// Data bytes written to the destination.
    fn bytes_written(&self) -> u64;
}

impl Report for SinkReport {
    fn location(&self) -> &str {
        &self.location
    }

    fn bytes_written(&self) -> u64 {
        self.bytes_written
    }
}

/// A destination for a disk, whose [`Sink::finish`] reports an `R`: a [`SinkReport`] for most,
/// more for sinks that have more to tell (a Longhorn backup's outcome, a comparison), which
/// [`crate::pipeline::run`] hands back as it is.
///
/// The pipeline calls [`Sink::write`] with extents in offset order (gaps read as zeros), then
/// exactly one of [`Sink::finish`] or [`Sink::abort`].
#[async_trait]
pub trait Sink<R: Report = SinkReport>: Send {
    /// The destination's address, for messages.
    fn describe(&self) -> String;

    /// Accepts an extent. May wait (backpressure) while earlier writes are in flight.
    async fn write(&mut self, extent: Extent) -> Result<()>;

    /// Completes the destination and records the summary where the format allows.
    async fn finish(self: Box<Self>, summary: &Summary) -> Result<R>;

    /// Removes whatever this sink created; the destination is left as it was before.
    async fn abort(self: Box<Self>) -> Result<()>;
}
