//! Zero-copy writes librbd has failed but will never complete: reported with librbd's own
//! error instead of waited on forever.
//!
//! With zero-copy writes librbd wraps the caller's buffer and holds the write's completion
//! until it has dropped its last reference to that buffer (`UserBufferDeleter`,
//! `librbd/librbd.cc`). When librbd fails a write before it has split it into object requests,
//! the request it fails still holds the buffer, so the completion never runs. Seen with librbd
//! 16.2.15, each case failing at once when librbd copies the buffer instead:
//! - a write to an image opened read-only or at a snapshot (`EROFS`), or beyond the image's
//!   end (`EINVAL`): refused before submission by [`crate::Image::write`];
//! - a write by a client the cluster has blocklisted (`ESHUTDOWN`);
//! - a write while another client holds the image's exclusive lock and refuses to release it
//!   (`EROFS`), even if it lets go later;
//! - a write beyond the end of an image another client has just shrunk (`EINVAL`).
//!
//! In each case librbd has already recorded the error in the completion
//! (`AioCompletion::fail` sets it before it finds the completion blocked), so a zero-copy
//! write that has not completed is looked at every [`PROBE_EVERY`]: once its completion holds
//! an error, the write fails with it. Its buffer stays with librbd (freed if the completion
//! ever runs, else leaked, never freed under librbd), and closing the image does not wait for
//! it (`InFlight::wait_idle`). A write that is merely slow (an OSD down, a full pool) holds no
//! error, and keeps waiting as it does when librbd copies.

use std::time::Duration;

use rados::{Error, Result};
use tokio::sync::oneshot;

use crate::image::Ticket;

/// How long a zero-copy write waits before its completion is looked at, and between looks.
/// A look is one read of the completion's return value, under the ticket's lock.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Waits for a zero-copy write's completion, looking at it while it waits (see the module
/// docs). `Err` with librbd's error when librbd failed the write without completing it;
/// otherwise what the completion channel gave. Outside a Tokio runtime it simply waits.
pub(crate) async fn wait<T>(
    mut done: oneshot::Receiver<T>,
    ticket: &Ticket,
    op: &'static str,
    target: &str,
) -> Result<std::result::Result<T, oneshot::error::RecvError>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(done.await);
    }
    loop {
        if let Ok(outcome) = tokio::time::timeout(PROBE_EVERY, &mut done).await {
            return Ok(outcome);
        }
        if let Some(code) = ticket.failed_with() {
            tracing::warn!(
                write = %target,
                errno = -code,
                "librbd failed a zero-copy write without completing it; given up"
            );
            return Err(Error::from_code(code, op, target));
        }
    }
}
