//! `verify` and `digest`: the content digest of any address, and the comparison of two.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sinks::NullSink;
use crate::sources::open_source;
use crate::{pipeline, Address, Context, NoProgress, Progress, Result};

/// The digest of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestReport {
    /// The address.
    pub address: String,
    /// Its detected format.
    pub format: String,
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

/// Computes the content digest of an address (any format diskferry reads).
pub async fn digest(
    ctx: &Context,
    address: &Address,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<DigestReport> {
    let mut source = open_source(ctx, address).await?;
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
        size: transfer.summary.size,
        digest: transfer.summary.digest,
    })
}

/// Compares two addresses by content, reading both at once.
pub async fn verify(
    ctx: &Context,
    a: &Address,
    b: &Address,
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let (a, b) = tokio::try_join!(
        digest(ctx, a, &NoProgress, cancel),
        digest(ctx, b, &NoProgress, cancel)
    )?;
    let identical = a.size == b.size && a.digest == b.digest;
    Ok(VerifyReport { a, b, identical })
}
