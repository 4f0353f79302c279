//! `verify` and `digest`: the content digest of any address, and the comparison of two.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sinks::{CompareSink, NullSink};
use crate::sources::open_source_as;
use crate::{pipeline, Address, Context, FormatOrigin, NoProgress, ObjectFormat, Progress, Result};

/// The digest of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestReport {
    /// The address.
    pub address: String,
    /// Its format.
    pub format: String,
    /// How the format was decided: `given`, `recorded` or `guessed` (from the first bytes).
    pub format_origin: FormatOrigin,
    /// Virtual size in bytes.
    pub size: u64,
    /// Content digest.
    pub digest: String,
    /// Its algorithm: the one the address recorded, else the default.
    pub digest_algorithm: String,
}

/// The comparison of two addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The first side.
    pub a: DigestReport,
    /// The second side.
    pub b: DigestReport,
    /// Whether sizes and contents are identical.
    pub identical: bool,
    /// The first byte offset at which they differ (where the smaller ends, when they differ
    /// only in size); `null` when identical.
    pub first_difference: Option<u64>,
}

/// Computes the content digest of an address (any format diskferry reads), read as `format`
/// (`None`: as recorded, else guessed).
pub async fn digest(
    ctx: &Context,
    address: &Address,
    format: Option<ObjectFormat>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<DigestReport> {
    let mut source = open_source_as(ctx, address, format).await?;
    let transfer = pipeline::run(
        source.as_mut(),
        Box::new(NullSink::default()),
        progress,
        cancel,
    )
    .await?;
    Ok(DigestReport {
        address: address.to_string(),
        format: transfer.summary.source_format.to_string(),
        format_origin: source.format_origin(),
        size: transfer.summary.size,
        digest: transfer.summary.digest,
        digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
    })
}

/// Compares two addresses by content, byte for byte, in one pass that reads both at once,
/// each read as its format (`None`: as recorded, else guessed).
pub async fn verify(
    ctx: &Context,
    (a, a_format): (&Address, Option<ObjectFormat>),
    (b, b_format): (&Address, Option<ObjectFormat>),
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let (mut first, second) = tokio::try_join!(
        open_source_as(ctx, a, a_format),
        open_source_as(ctx, b, b_format)
    )?;
    let b_report = DigestReport {
        address: b.to_string(),
        format: second.format().to_string(),
        format_origin: second.format_origin(),
        size: second.size(),
        digest: String::new(),
        digest_algorithm: String::new(),
    };
    let sink = CompareSink::new(first.size(), second)?;
    let transfer = pipeline::run(first.as_mut(), Box::new(sink), &NoProgress, cancel).await?;
    let comparison = transfer.sink;
    Ok(VerifyReport {
        a: DigestReport {
            address: a.to_string(),
            format: transfer.summary.source_format.to_string(),
            format_origin: first.format_origin(),
            size: transfer.summary.size,
            digest: transfer.summary.digest,
            digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
        },
        b: DigestReport {
            digest: comparison.other_digest,
            digest_algorithm: comparison.other_digest_algorithm.name().to_string(),
            ..b_report
        },
        identical: comparison.first_difference.is_none(),
        first_difference: comparison.first_difference,
    })
}
