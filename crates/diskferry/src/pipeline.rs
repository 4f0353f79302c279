//! The one engine every job runs: pull extents from a [`Source`], check them, digest them on a
//! thread of their own, and push them into a [`Sink`].
//!
//! Parallelism and memory bounds live at the two ends: a source reads ahead with a bounded
//! number of buffers, a sink keeps a bounded number of writes in flight; the pipeline holds at
//! most [`DIGEST_QUEUE`] extents waiting for the digest thread. So memory is bounded by
//! configuration, never by the disk size.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::digest::{DigestAlgorithm, DigestThread};
use crate::{Error, Extent, Progress, Report, Result, Sink, SinkReport, Source, Summary};

pub use crate::digest::DIGEST_QUEUE;

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer<R = SinkReport> {
    /// The summary the sink recorded (source, size, digest).
    pub summary: Summary,
    /// What the sink reported: its own report type.
    pub sink: R,
    /// Data bytes the source delivered.
    pub bytes_read: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Copies `source` into `sink`. On error or cancellation the sink is aborted (it removes what
/// it created) before the error is returned.
///
/// Everything the job logs is inside a `job` span naming the source, the sink (their
/// `describe()`, which never shows a secret) and the size; the job's start and end are
/// `info` events, each extent a `trace` event.
pub async fn run<R: Report>(
    source: &mut dyn Source,
    sink: Box<dyn Sink<R>>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Transfer<R>> {
    let span = tracing::info_span!(
        "job",
        source = %source.describe(),
        sink = %sink.describe(),
        size = source.size()
    );
    async move {
        tracing::info!(format = source.format(), "job started");
        let result = transfer(source, sink, progress, cancel).await;
        match &result {
            Ok(t) => tracing::info!(
                bytes_read = t.bytes_read,
                bytes_written = t.sink.bytes_written(),
                elapsed_ms = u64::try_from(t.elapsed.as_millis()).unwrap_or(u64::MAX),
                digest = %t.summary.digest,
                "job finished"
            ),
            Err(error) if error.is_cancelled() => tracing::info!(%error, "job interrupted"),
            Err(error) => tracing::info!(%error, "job failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// [`run`] without its span and events.
async fn transfer<R: Report>(
    source: &mut dyn Source,
    sink: Box<dyn Sink<R>>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Transfer<R>> {
    let started = Instant::now();
    let size = source.size();
    let source_name = source.describe();
    let mut sink = sink;
    // A copy of a disk that carries a digest is digested as its record says, so the two
    // compare; anything else with the algorithm new copies use.
    let digest_algorithm = source
        .digest_algorithm()
        .unwrap_or(DigestAlgorithm::DEFAULT);
    let digest = match DigestThread::spawn_with(digest_algorithm, size) {
        Ok(digest) => digest,
        Err(error) => return Err(abort(sink, error).await),
    };
    progress.start(&source_name, size);
    let copied = copy(source, sink.as_mut(), &digest, progress, cancel).await;
    if copied.is_err() {
        digest.stop();
    }
    let digest = digest.finish_unless_cancelled(cancel).await;
    progress.finish();
    let (bytes_read, digest) = match (copied, digest) {
        (Ok(bytes_read), Ok(digest)) => (bytes_read, digest),
        (Err(error), _) | (_, Err(error)) => return Err(abort(sink, error).await),
    };
    // Interrupted before the sink's final step began: that step is not started.
    if cancel.is_cancelled() {
        return Err(abort(sink, Error::Cancelled).await);
    }
    let summary = Summary {
        source: source_name,
        source_format: source.format(),
        size,
        digest,
        digest_algorithm,
    };
    // `finish` cleans up after itself when it fails.
    let sink_report = sink.finish(&summary).await?;
    Ok(Transfer {
        summary,
        sink: sink_report,
        bytes_read,
        elapsed: started.elapsed(),
    })
}

async fn copy<R: Report>(
    source: &mut dyn Source,
    sink: &mut dyn Sink<R>,
    digest: &DigestThread,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<u64> {
    let size = source.size();
    let mut position = 0u64;
    let mut bytes_read = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            next = source.next_extent() => next?,
        };
        let Some(extent) = next else { break };
        if extent.offset() < position || extent.end() > size {
            return Err(Error::SourceContract {
                source_name: source.describe(),
                reason: format!(
                    "extent [{}, {}) is out of order or past the size {size} (position {position})",
                    extent.offset(),
                    extent.end()
                ),
            });
        }
        position = extent.end();
        tracing::trace!(
            offset = extent.offset(),
            len = extent.len(),
            data = matches!(extent, Extent::Data { .. }),
            "extent"
        );
        if let Extent::Data { offset, data } = &extent {
            bytes_read += data.len() as u64;
            // The digest thread can be busy with a long run of zeros before this extent.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                queued = digest.data(*offset, data.clone()) => queued?,
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            written = sink.write(extent) => written?,
        }
        progress.data_moved(bytes_read);
        progress.position(position);
    }
    progress.position(size);
    Ok(bytes_read)
}

async fn abort<R: Report>(sink: Box<dyn Sink<R>>, error: Error) -> Error {
    let left_behind = sink.describe();
    error.after_cleanup(sink.abort().await, left_behind)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::progress::tests::{Call, Recorder};
    use crate::sinks::NullSink;
    use crate::testing::{MemorySink, MemorySource, SinkRecord};
    use crate::{ContentDigest, NoProgress};

    fn data(offset: u64, len: usize) -> Extent {
        Extent::Data {
            offset,
            data: Bytes::from(vec![7u8; len]),
        }
    }

    #[tokio::test]
    async fn progress_gets_the_data_moved_apart_from_the_position() {
        // 100 bytes: data at [10, 20), a zero range [20, 50), data at [60, 65), a hole to 100.
        let mut source = MemorySource::new(
            100,
            [
                data(10, 10),
                Extent::Zero {
                    offset: 20,
                    len: 30,
                },
                data(60, 5),
            ],
        );
        let recorder = Recorder::default();
        let transfer = run(
            &mut source,
            Box::<NullSink>::default(),
            &recorder,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(transfer.bytes_read, 15);
        assert_eq!(
            recorder.calls(),
            [
                Call::Start("memory".into(), 100),
                Call::DataMoved(10),
                Call::Position(20),
                Call::DataMoved(10),
                Call::Position(50),
                Call::DataMoved(15),
                Call::Position(65),
                Call::Position(100),
                Call::Finish,
            ]
        );
    }

    /// [`run`] with no progress to report and nothing to cancel it.
    async fn run_plainly<R: Report>(
        source: &mut MemorySource,
        sink: Box<dyn Sink<R>>,
    ) -> Result<Transfer<R>> {
        run(source, sink, &NoProgress, &CancellationToken::new()).await
    }

    fn record(record: &Arc<Mutex<SinkRecord>>) -> SinkRecord {
        record.lock().unwrap().clone()
    }

    /// A 5 MiB + 3 bytes disk with data, a hole and an unaligned tail.
    fn sample_disk() -> Vec<u8> {
        let mut disk = vec![0u8; (5 << 20) + 3];
        for (i, byte) in disk[..(1 << 20) + 17].iter_mut().enumerate() {
            *byte = (i * 31 % 251) as u8 + 1;
        }
        let len = disk.len();
        disk[len - 4096..].fill(9);
        disk
    }

    #[tokio::test]
    async fn the_sink_gets_the_disk_and_the_digest_is_the_documented_one() {
        let disk = sample_disk();
        let mut source = MemorySource::from_disk(&disk, 64 << 10);
        let (sink, written) = MemorySink::new(disk.len() as u64);
        let transfer = run_plainly(&mut source, Box::new(sink)).await.unwrap();
        // The documented default algorithm, computed here from its definition: BLAKE3 over
        // the BLAKE3 of every 1 MiB block, the last one shorter.
        assert_eq!(
            crate::DigestAlgorithm::DEFAULT,
            crate::DigestAlgorithm::Blake3Blocks
        );
        let mut outer = blake3::Hasher::new();
        for block in disk.chunks(crate::DIGEST_BLOCK_SIZE as usize) {
            outer.update(blake3::hash(block).as_bytes());
        }
        let expected = outer.finalize().to_hex().to_string();
        assert_eq!(transfer.summary.digest, expected);
        assert_eq!(
            transfer.summary.digest_algorithm,
            crate::DigestAlgorithm::Blake3Blocks
        );
        assert_eq!(ContentDigest::of(&disk), expected);
        let written = record(&written);
        assert_eq!(written.content, disk);
        assert_eq!(written.finished.as_ref(), Some(&transfer.summary));
        assert_eq!(written.aborts, 0);
    }

    #[tokio::test]
    async fn extents_out_of_order_or_past_the_end_are_refused_and_the_sink_aborted() {
        for extents in [
            vec![data(100, 10), data(50, 10)],
            vec![data(100, 10), data(105, 10)],
            vec![data(995, 10)],
        ] {
            let mut source = MemorySource::new(1000, extents);
            let (sink, written) = MemorySink::new(1000);
            let err = run_plainly(&mut source, Box::new(sink)).await.unwrap_err();
            assert!(matches!(err, Error::SourceContract { .. }), "{err}");
            let written = record(&written);
            assert_eq!((written.aborts, written.finished), (1, None));
        }
    }

    #[tokio::test]
    async fn an_error_mid_stream_aborts_the_sink_exactly_once() {
        // The source fails after two extents.
        let mut source = MemorySource::new(1000, [data(0, 10), data(20, 10)]).then_fail("broken");
        let (sink, written) = MemorySink::new(1000);
        let err = run_plainly(&mut source, Box::new(sink)).await.unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        let written = record(&written);
        assert_eq!((written.writes, written.aborts), (2, 1));
        assert_eq!(written.finished, None);
        // The sink fails on its second write.
        let mut source = MemorySource::new(1000, [data(0, 10), data(20, 10), data(40, 10)]);
        let (sink, written) = MemorySink::new(1000);
        let err = run_plainly(&mut source, Box::new(sink.failing_at(1)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("fails on purpose"), "{err}");
        assert_eq!(source.yielded(), 2, "nothing is read after the failure");
        let written = record(&written);
        assert_eq!((written.writes, written.aborts), (2, 1));
    }

    /// Runs `source` into `sink`, cancels it after `after`, and checks that the run ends as
    /// cancelled within 10 s (`why`: what it would otherwise wait for), the sink given one
    /// extent and aborted once.
    async fn assert_cancelled_after(
        mut source: MemorySource,
        (sink, written): (MemorySink, Arc<Mutex<SinkRecord>>),
        after: Duration,
        why: &str,
    ) {
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            canceller.cancel();
        });
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            run(&mut source, Box::new(sink), &NoProgress, &cancel),
        )
        .await
        .unwrap_or_else(|_| panic!("the run ends once cancelled, though {why}"))
        .unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        let written = record(&written);
        assert_eq!((written.writes, written.aborts), (1, 1));
    }

    #[tokio::test]
    async fn cancellation_stops_the_digest_of_a_huge_sparse_disks_last_zeros() {
        // 1 PiB with 10 bytes of data: the copy is over at once, its digest's zeros are not
        // (seconds to minutes); an interrupt then must not wait for them, nor let the sink
        // finish (an import reported success after Ctrl-C, a new-user pass found).
        let source = MemorySource::new(1u64 << 50, [data(0, 10)]);
        // The memory sink keeps what it is given: the data is all there is.
        let why = "the digest had far to go";
        assert_cancelled_after(source, MemorySink::new(10), Duration::from_millis(100), why).await;
    }

    #[tokio::test]
    async fn cancellation_stops_a_stalled_source_within_one_extent() {
        let source = MemorySource::new(1000, [data(0, 10)]).then_stall();
        let why = "the source never answers";
        assert_cancelled_after(
            source,
            MemorySink::new(1000),
            Duration::from_millis(50),
            why,
        )
        .await;
    }
}
