//! `verify` and `digest`: the content digest of any address, and the comparison of two.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sinks::NullSink;
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
    })
}

/// Compares two addresses by content, reading both at once, each read as its format
/// (`None`: as recorded, else guessed).
pub async fn verify(
    ctx: &Context,
    (a, a_format): (&Address, Option<ObjectFormat>),
    (b, b_format): (&Address, Option<ObjectFormat>),
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let (a, b) = tokio::try_join!(
        digest(ctx, a, a_format, &NoProgress, cancel),
        digest(ctx, b, b_format, &NoProgress, cancel)
    )?;
    let identical = a.size == b.size && a.digest == b.digest;
    Ok(VerifyReport { a, b, identical })
}
