//! A sink that keeps what it wrote only if the content digest is the one the source recorded:
//! a disk diskferry exported carries its digest, and every copy of it must end with the same
//! one. On a mismatch the inner sink is aborted instead of finished, so nothing that differs
//! from what was recorded is kept.

use async_trait::async_trait;

use crate::digest::RecordedDigest;
use crate::{Error, Extent, Report, Result, Sink, Summary};

/// Checks the pipeline's digest against `recorded` before finishing `inner`.
pub struct Verified<R: Report> {
    inner: Box<dyn Sink<R>>,
    recorded: RecordedDigest,
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
    /// `inner`, finished only if the digest is `recorded` (what `source` recorded). The
    /// pipeline digests a source with the algorithm of its recorded digest.
    pub fn new(inner: Box<dyn Sink<R>>, recorded: RecordedDigest, source: String) -> Self {
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
        let recorded = &self.recorded;
        if summary.digest_algorithm == recorded.algorithm && summary.digest == recorded.digest {
            return self.inner.finish(summary).await;
        }
        let left_behind = self.inner.describe();
        let error = Error::Mismatch(format!(
            "{} read with digest {} ({}), but it recorded {} ({}) when it was written: it \
             changed or is corrupt; {left_behind} was not kept",
            self.source,
            summary.digest,
            summary.digest_algorithm,
            recorded.digest,
            recorded.algorithm
        ));
        Err(error.after_cleanup(self.inner.abort().await, left_behind))
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::digest::DigestAlgorithm;
    use crate::testing::{MemorySink, MemorySource};
    use crate::{pipeline, CancellationToken, ContentDigest, NoProgress, Source};

    /// A memory disk that carries a recorded digest, as an exported object does.
    struct RecordedSource {
        inner: MemorySource,
        recorded: RecordedDigest,
    }

    #[async_trait]
    impl Source for RecordedSource {
        fn describe(&self) -> String {
            self.inner.describe()
        }

        fn format(&self) -> &'static str {
            self.inner.format()
        }

        fn recorded_digest(&self) -> Option<RecordedDigest> {
            Some(self.recorded.clone())
        }

        fn size(&self) -> u64 {
            self.inner.size()
        }

        async fn next_extent(&mut self) -> Result<Option<Extent>> {
            self.inner.next_extent().await
        }
    }

    #[tokio::test]
    async fn a_copy_is_kept_only_with_the_recorded_digest() {
        // Records of either algorithm, the one new copies do not use among them (a SHA-256
        // record made before BLAKE3 was the default): each is recomputed as it says.
        let disk = vec![7u8; 3_000_000];
        for algorithm in DigestAlgorithm::ALL {
            for (digest, kept) in [
                (ContentDigest::of_with(algorithm, &disk), true),
                ("0".repeat(64), false),
            ] {
                let recorded = RecordedDigest { algorithm, digest };
                let mut source = RecordedSource {
                    inner: MemorySource::from_disk(&disk, 100_000),
                    recorded: recorded.clone(),
                };
                let (sink, record) = MemorySink::new(disk.len() as u64);
                let sink = Box::new(Verified::new(Box::new(sink), recorded, "memory".into()));
                let result =
                    pipeline::run(&mut source, sink, &NoProgress, &CancellationToken::new()).await;
                let record = record.lock().unwrap().clone();
                assert_eq!(result.is_ok(), kept, "{algorithm}: {result:?}");
                assert_eq!(record.finished.is_some(), kept);
                assert_eq!(record.aborts, usize::from(!kept));
                match result {
                    Ok(t) => assert_eq!(t.summary.digest_algorithm, algorithm),
                    Err(e) => assert!(e.to_string().contains("was not kept"), "{e}"),
                }
            }
        }
    }
}
