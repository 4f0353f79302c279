//! A sink that keeps what it wrote only if the content digest is the one the source recorded:
//! a disk diskferry exported carries its digest, and every copy of it must end with the same
//! one. On a mismatch the inner sink is aborted instead of finished, so nothing that differs
//! from what was recorded is kept.

use async_trait::async_trait;

use crate::{Error, Extent, Report, Result, Sink, Summary};

/// Checks the pipeline's digest against `recorded` before finishing `inner`.
pub struct Verified<R: Report> {
    inner: Box<dyn Sink<R>>,
    recorded: String,
    /// The source, for messages.
    source: String,
}

impl<R: Report> std::fmt::Debug for Verified<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("inner", &self.inner.describe())
            .field("recorded", &self.recorded)
            .finish()
    }
}

impl<R: Report> Verified<R> {
    /// `inner`, finished only if the digest is `recorded` (what `source` recorded).
    pub fn new(inner: Box<dyn Sink<R>>, recorded: String, source: String) -> Self {
        Verified {
            inner,
            recorded,
            source,
        }
    }

    /// `inner` verified against the digest `source` recorded, or `inner` as it is when the
    /// source recorded none.
    pub fn wrap(inner: Box<dyn Sink<R>>, source: &dyn crate::Source) -> Box<dyn Sink<R>>
    where
        R: 'static,
    {
        match source.recorded_digest() {
            Some(recorded) => Box::new(Verified::new(inner, recorded, source.describe())),
            None => inner,
        }
    }
}

#[async_trait]
impl<R: Report> Sink<R> for Verified<R> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        self.inner.write(extent).await
    }

    async fn finish(self: Box<Self>, summary: &Summary) -> Result<R> {
        if summary.digest == self.recorded {
            return self.inner.finish(summary).await;
        }
        let left_behind = self.inner.describe();
        let error = Error::Mismatch(format!(
            "{} read with digest {}, but it recorded {} when it was written: it changed or \
             is corrupt; {left_behind} was not kept",
            self.source, summary.digest, self.recorded
        ));
        Err(error.after_cleanup(self.inner.abort().await, left_behind))
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemorySink, MemorySource};
    use crate::{pipeline, CancellationToken, ContentDigest, NoProgress};

    #[tokio::test]
    async fn a_copy_is_kept_only_with_the_recorded_digest() {
        let disk = vec![7u8; 3000];
        for (recorded, kept) in [(ContentDigest::of(&disk), true), ("0".repeat(64), false)] {
            let mut source = MemorySource::from_disk(&disk, 1000);
            let (sink, record) = MemorySink::new(3000);
            let sink = Box::new(Verified::new(Box::new(sink), recorded, "memory".into()));
            let result =
                pipeline::run(&mut source, sink, &NoProgress, &CancellationToken::new()).await;
            let record = record.lock().unwrap().clone();
            assert_eq!(result.is_ok(), kept, "{result:?}");
            assert_eq!(record.finished.is_some(), kept);
            assert_eq!(record.aborts, usize::from(!kept));
            if let Err(e) = result {
                assert!(e.to_string().contains("was not kept"), "{e}");
            }
        }
    }
}
