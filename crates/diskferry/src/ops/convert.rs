//! `convert`: any disk diskferry reads (a file, http(s), s3, an RBD image or snapshot; qcow2,
//! raw or raw.zst) into a new object (a local file or an S3 object; qcow2, raw or raw.zst),
//! like `qemu-img convert`, through the one pipeline every job runs: digest, progress,
//! cancellation and cleanup included.
//!
//! An RBD image as output is written as `import` writes it (raw, sparse, digest recorded).
//! The output appears under its name only when it is complete (a local file is written under
//! a temporary name and linked into place; an S3 upload completes last), so an existing
//! output is never truncated before the new one is whole, and `force` is needed to replace it.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sinks::{check_sink, open_sink, ObjectSinkOptions, SinkOptions, Verified};
use crate::sources::open_source_as;
use crate::{pipeline, Address, Context, Error, FormatOrigin, ObjectFormat, Progress, Result};

/// Options of [`convert`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// The input's format (`None`: as recorded, else guessed from its content).
    pub format: Option<ObjectFormat>,
    /// The output: format, compression, overwrite, flush.
    pub sink: ObjectSinkOptions,
}

/// What a conversion did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvertReport {
    /// The input.
    pub source: String,
    /// The input's format.
    pub source_format: String,
    /// How the input's format was decided: `given`, `recorded` or `guessed`.
    pub source_format_origin: FormatOrigin,
    /// The output.
    pub destination: String,
    /// The output's format: `qcow2`, `raw` or `raw.zst`.
    pub format: String,
    /// `none`, `deflate` or `zstd`.
    pub compression: String,
    /// Virtual size in bytes (the same on both sides).
    pub size: u64,
    /// Data bytes read from the input (holes and unallocated ranges are not read).
    pub bytes_read: u64,
    /// Bytes of the output object or file (its apparent size).
    pub output_size: u64,
    /// Content digest of the disk.
    pub digest: String,
    /// The digest's algorithm.
    pub digest_algorithm: String,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Converts `source` into the new object `destination`.
pub async fn convert(
    ctx: &Context,
    source: &Address,
    destination: &Address,
    options: &ConvertOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ConvertReport> {
    options.sink.validate()?;
    let sink_options = SinkOptions::object(options.sink.clone());
    if source == destination {
        return Err(Error::InvalidOption(format!(
            "{source} is both the input and the output; convert into a new name"
        )));
    }
    check_sink(ctx, destination, &sink_options).await?;
    if let (Address::File(a), Address::File(b)) = (source, destination) {
        if same_file(a, b) {
            return Err(Error::InvalidOption(format!(
                "{source} and {destination} are the same file; convert into a new name"
            )));
        }
    }
    let mut input = open_source_as(ctx, source, options.format).await?;
    let label = input.describe();
    let sink = open_sink(ctx, destination, input.size(), &label, &sink_options).await?;
    // What diskferry exported carries its digest: the output is kept only if it matches.
    let sink = Verified::wrap(sink, input.as_ref());
    let transfer = pipeline::run(input.as_mut(), sink, progress, cancel).await?;
    Ok(ConvertReport {
        source: source.to_string(),
        source_format: transfer.summary.source_format.to_string(),
        source_format_origin: input.format_origin(),
        destination: transfer.sink.location,
        format: options.sink.format.name().to_string(),
        compression: options.sink.compression_name().to_string(),
        size: transfer.summary.size,
        bytes_read: transfer.bytes_read,
        output_size: transfer.sink.bytes_written,
        digest: transfer.summary.digest,
        digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
        seconds: transfer.elapsed.as_secs_f64(),
    })
}

/// Whether two paths name one existing file (hard links and symlinks included).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
