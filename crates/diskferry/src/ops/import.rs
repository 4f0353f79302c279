//! `import`: any source into a new RBD image, in one streaming pass.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sinks::{RbdSink, RbdSinkOptions, Verified};
use crate::sources::open_source_as;
use crate::{
    pipeline, Address, Context, FormatOrigin, ObjectFormat, Progress, RbdSpec, Result, Source,
};

/// Options of [`import`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The source's format (`None`: as diskferry recorded it, else guessed from its content).
    pub format: Option<ObjectFormat>,
    /// How the image is created and written.
    pub sink: RbdSinkOptions,
}

/// What an import did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// The source address.
    pub source: String,
    /// The source format.
    pub source_format: String,
    /// How the source format was decided: `given`, `recorded` or `guessed` (from the first
    /// bytes, when nothing else was known: give the format to be sure).
    pub source_format_origin: FormatOrigin,
    /// The image written.
    pub destination: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Data bytes read from the source (after decompression).
    pub bytes_read: u64,
    /// Bytes written to the image.
    pub bytes_written: u64,
    /// Bytes of the disk not written (holes and zeros).
    pub bytes_skipped: u64,
    /// Content digest, recorded in the image's metadata.
    pub digest: String,
    /// The digest's algorithm.
    pub digest_algorithm: String,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Imports `source` into the RBD image `destination`.
pub async fn import(
    ctx: &Context,
    source: &Address,
    destination: &RbdSpec,
    options: &ImportOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ImportReport> {
    let source = open_source_as(ctx, source, options.format).await?;
    import_from(ctx, source, destination, &options.sink, progress, cancel).await
}

/// [`import`] from a source opened already (`import-vm` opens a bundle's disk files itself).
pub(crate) async fn import_from(
    ctx: &Context,
    mut source: Box<dyn Source>,
    destination: &RbdSpec,
    sink: &RbdSinkOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ImportReport> {
    let sink = RbdSink::create(ctx, destination, source.size(), sink.clone()).await?;
    // What diskferry exported carries its digest: the image is kept only if it matches.
    let sink = Verified::wrap(Box::new(sink), source.as_ref());
    let transfer = pipeline::run(source.as_mut(), sink, progress, cancel).await?;
    Ok(ImportReport {
        source: transfer.summary.source,
        source_format: transfer.summary.source_format.to_string(),
        source_format_origin: source.format_origin(),
        destination: transfer.sink.location,
        size: transfer.summary.size,
        bytes_read: transfer.bytes_read,
        bytes_written: transfer.sink.bytes_written,
        bytes_skipped: transfer.summary.size - transfer.sink.bytes_written,
        digest: transfer.summary.digest,
        digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
        seconds: transfer.elapsed.as_secs_f64(),
    })
}
