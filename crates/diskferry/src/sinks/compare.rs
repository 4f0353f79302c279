//! A sink that compares: what the pipeline pushes (disk A) against a second source (disk B),
//! byte for byte, in one pass over both. `verify` uses it to name the first offset at which
//! the disks differ, and gets B's content digest from it too.

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::digest::DigestThread;
use crate::{Error, Extent, Report, Result, Sink, Source, Summary};

/// What a comparison found: the sink's report, which [`crate::pipeline::run`] hands back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// The first byte offset at which the contents differ (where the smaller disk ends, when
    /// they differ only in size); `None` when identical.
    pub first_difference: Option<u64>,
    /// Disk B's content digest.
    pub other_digest: String,
    /// The algorithm of `other_digest`: B's recorded one, else the default.
    pub other_digest_algorithm: crate::DigestAlgorithm,
}

impl Report for Comparison {
    /// A comparison stores nothing: it has no location.
    fn location(&self) -> &str {
        ""
    }

    fn bytes_written(&self) -> u64 {
        0
    }
}

/// Compares every extent it is given with the same range of `other`.
pub struct CompareSink {
    other: Box<dyn Source>,
    /// Disk A's size (the pipeline's source).
    size: u64,
    /// Everything before this offset has been compared.
    position: u64,
    /// B's data extent that reaches past `position`, if pulled already.
    pending: Option<(u64, Bytes)>,
    /// Where B's last extent ended (B's extents must come in order).
    other_end: u64,
    other_digest: DigestThread,
    other_digest_algorithm: crate::DigestAlgorithm,
    first_difference: Option<u64>,
}

impl std::fmt::Debug for CompareSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareSink")
            .field("other", &self.other.describe())
            .field("position", &self.position)
            .finish()
    }
}

impl CompareSink {
    /// A sink comparing a disk of `size` bytes with `other`; it reports a [`Comparison`].
    pub fn new(size: u64, other: Box<dyn Source>) -> Result<CompareSink> {
        let other_digest_algorithm = other
            .recorded_digest()
            .map_or(crate::DigestAlgorithm::DEFAULT, |r| r.algorithm);
        let other_digest = DigestThread::spawn_with(other_digest_algorithm, other.size())?;
        let sink = CompareSink {
            other,
            size,
            position: 0,
            pending: None,
            other_end: 0,
            other_digest,
            other_digest_algorithm,
            first_difference: None,
        };
        Ok(sink)
    }

    /// B's next data extent that reaches past `position`, pulled (and digested) on demand.
    async fn other_extent(&mut self) -> Result<Option<&(u64, Bytes)>> {
        if self
            .pending
            .as_ref()
            .is_some_and(|(offset, data)| offset + data.len() as u64 <= self.position)
        {
            self.pending = None;
        }
        while self.pending.is_none() {
            let Some(extent) = self.other.next_extent().await? else {
                return Ok(None);
            };
            if extent.offset() < self.other_end || extent.end() > self.other.size() {
                return Err(Error::SourceContract {
                    source_name: self.other.describe(),
                    reason: format!(
                        "extent [{}, {}) is out of order or past the size {}",
                        extent.offset(),
                        extent.end(),
                        self.other.size()
                    ),
                });
            }
            self.other_end = extent.end();
            if let Extent::Data { offset, data } = extent {
                self.other_digest.data(offset, data.clone()).await?;
                if offset + data.len() as u64 > self.position {
                    self.pending = Some((offset, data));
                }
            }
        }
        Ok(self.pending.as_ref())
    }

    /// Compares `[position, end)`: A holds `a` there (`None`: zeros).
    async fn compare_until(&mut self, end: u64, a: Option<&[u8]>) -> Result<()> {
        let start = self.position;
        let end = end.min(self.other.size());
        while self.position < end {
            let here = self.position;
            let a_at =
                |from: u64, len: u64| a.map(|a| &a[(from - start) as usize..][..len as usize]);
            let (len, difference) = match self.other_extent().await? {
                Some((b_offset, b_data)) if *b_offset <= here => {
                    let b_end = b_offset + b_data.len() as u64;
                    let len = end.min(b_end) - here;
                    let b = &b_data[(here - b_offset) as usize..][..len as usize];
                    let difference = match a_at(here, len) {
                        Some(a) => first_mismatch(a, b),
                        None => first_nonzero(b),
                    };
                    (len, difference)
                }
                // B reads as zeros up to its next extent.
                next => {
                    let next = next.map_or(u64::MAX, |(offset, _)| *offset);
                    let len = end.min(next) - here;
                    let difference = a_at(here, len).and_then(first_nonzero);
                    (len, difference)
                }
            };
            if let Some(at) = difference {
                self.first_difference.get_or_insert(here + at as u64);
            }
            self.position += len;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink<Comparison> for CompareSink {
    fn describe(&self) -> String {
        format!("(comparison with {})", self.other.describe())
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        // Explicit zero ranges read as zeros like gaps.
        let Extent::Data { offset, data } = extent else {
            return Ok(());
        };
        self.compare_until(offset, None).await?;
        self.compare_until(offset + data.len() as u64, Some(&data))
            .await
    }

    async fn finish(mut self: Box<Self>, _summary: &Summary) -> Result<Comparison> {
        self.compare_until(self.size, None).await?;
        let common = self.size.min(self.other.size());
        // The rest of B is read for its digest.
        self.position = self.other.size();
        while self.other_extent().await?.is_some() {
            self.pending = None;
        }
        if self.size != self.other.size() {
            self.first_difference.get_or_insert(common);
        }
        let CompareSink {
            other_digest,
            other_digest_algorithm,
            first_difference,
            ..
        } = *self;
        Ok(Comparison {
            first_difference,
            other_digest: other_digest.finish()?,
            other_digest_algorithm,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The index of the first byte where `a` and `b` differ (memcmp first: equal is the usual).
fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The index of the first byte that is not zero.
fn first_nonzero(data: &[u8]) -> Option<usize> {
    if crate::is_zero(data) {
        return None;
    }
    data.iter().position(|&x| x != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::ContentDigest;
    use crate::testing::MemorySource;

    fn data(offset: u64, bytes: &[u8]) -> Extent {
        Extent::Data {
            offset,
            data: Bytes::copy_from_slice(bytes),
        }
    }

    fn content(size: usize, extents: &[Extent]) -> Vec<u8> {
        let mut disk = vec![0u8; size];
        for e in extents {
            if let Extent::Data { offset, data } = e {
                disk[*offset as usize..][..data.len()].copy_from_slice(data);
            }
        }
        disk
    }

    /// Pushes `a` into a sink comparing with `b`, as the pipeline would.
    async fn compare(size_a: u64, a: &[Extent], size_b: u64, b: &[Extent]) -> Comparison {
        let other = Box::new(MemorySource::new(size_b, b.iter().cloned()));
        let mut sink = CompareSink::new(size_a, other).unwrap();
        for extent in a {
            sink.write(extent.clone()).await.unwrap();
        }
        let summary = Summary {
            source: "a".into(),
            source_format: "raw",
            size: size_a,
            digest: String::new(),
            digest_algorithm: crate::DigestAlgorithm::DEFAULT,
        };
        Box::new(sink).finish(&summary).await.unwrap()
    }

    #[tokio::test]
    async fn the_same_content_in_other_pieces_is_identical() {
        let a = [data(0, &[1; 100]), data(4096, &[2; 5000])];
        let b = [
            data(0, &[1; 50]),
            data(50, &[1; 50]),
            // Explicit zeros where A has a hole.
            data(100, &[0; 200]),
            data(4096, &[2; 1000]),
            Extent::Zero {
                offset: 5096,
                len: 0,
            },
            data(5096, &[2; 4000]),
        ];
        let found = compare(10_000, &a, 10_000, &b).await;
        assert_eq!(found.first_difference, None);
        assert_eq!(found.other_digest, ContentDigest::of(&content(10_000, &b)));
    }

    #[tokio::test]
    async fn the_first_differing_byte_is_named_wherever_it_is() {
        // In data on both sides.
        let mut changed = [3u8; 300];
        changed[123] = 9;
        let found = compare(1000, &[data(100, &[3; 300])], 1000, &[data(100, &changed)]).await;
        assert_eq!(found.first_difference, Some(223));
        // Data in A where B has a hole.
        let found = compare(1000, &[data(700, &[0, 0, 5])], 1000, &[]).await;
        assert_eq!(found.first_difference, Some(702));
        // Data in B where A has a hole, after a common part.
        let found = compare(
            1000,
            &[data(0, &[1; 10])],
            1000,
            &[data(0, &[1; 10]), data(990, &[0, 7])],
        )
        .await;
        assert_eq!(found.first_difference, Some(991));
        // Only the sizes differ: where the smaller ends.
        let found = compare(1000, &[data(0, &[1; 10])], 1024, &[data(0, &[1; 10])]).await;
        assert_eq!(found.first_difference, Some(1000));
        // B's digest covers all of B, also past where A ends.
        let b = [data(0, &[1; 10]), data(1010, &[4; 10])];
        let found = compare(1000, &[data(0, &[1; 10])], 1024, &b).await;
        assert_eq!(found.other_digest, ContentDigest::of(&content(1024, &b)));
    }

    #[tokio::test]
    async fn extents_of_the_other_out_of_order_are_refused() {
        let other = Box::new(MemorySource::new(
            100,
            [data(50, &[1; 10]), data(10, &[1; 10])],
        ));
        let mut sink = CompareSink::new(100, other).unwrap();
        let err = sink.write(data(90, &[1; 10])).await.unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }
}
