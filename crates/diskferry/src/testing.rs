//! In-memory doubles of the two roles, for tests of the engine and of what is built on it,
//! with no Ceph and no S3: a [`MemorySource`] that yields the extents it is given (and can
//! fail or stall on cue), and a [`MemorySink`] that assembles what it receives into a disk in
//! memory and records how it was ended. The Source/Sink conformance suite runs them beside
//! the real implementations; they are never a stand-in for RBD or S3 in an integration test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, Extent, Result, Sink, SinkReport, Source, Summary};

/// What a [`MemorySource`] does at one step.
#[derive(Debug)]
enum Step {
    /// Yield this extent.
    Extent(Extent),
    /// Fail with an error naming this reason.
    Fail(String),
    /// Never answer (a source stuck on I/O), until the caller gives up.
    Stall,
}

/// A disk in memory, yielded as the extents given, in the order given (which is the test's
/// business: the engine must refuse a wrong one).
#[derive(Debug)]
pub struct MemorySource {
    size: u64,
    steps: VecDeque<Step>,
    /// Extents yielded so far.
    yielded: usize,
}

impl MemorySource {
    /// A disk of `size` bytes made of `extents` (gaps read as zeros).
    pub fn new(size: u64, extents: impl IntoIterator<Item = Extent>) -> MemorySource {
        MemorySource {
            size,
            steps: extents.into_iter().map(Step::Extent).collect(),
            yielded: 0,
        }
    }

    /// `content` as data extents of at most `piece` bytes; all-zero pieces are left out, as
    /// a sparse source leaves out its holes.
    pub fn from_disk(content: &[u8], piece: usize) -> MemorySource {
        let extents = content
            .chunks(piece.max(1))
            .enumerate()
            .filter(|(_, chunk)| !crate::is_zero(chunk))
            .map(|(i, chunk)| Extent::Data {
                offset: (i * piece.max(1)) as u64,
                data: Bytes::copy_from_slice(chunk),
            })
            .collect::<Vec<_>>();
        MemorySource::new(content.len() as u64, extents)
    }

    /// Fails (with a source error naming `reason`) once the extents given so far are yielded.
    pub fn then_fail(mut self, reason: &str) -> MemorySource {
        self.steps.push_back(Step::Fail(reason.to_string()));
        self
    }

    /// Never answers once the extents given so far are yielded, like a source stuck on I/O.
    pub fn then_stall(mut self) -> MemorySource {
        self.steps.push_back(Step::Stall);
        self
    }

    /// How many extents were yielded.
    pub fn yielded(&self) -> usize {
        self.yielded
    }
}

#[async_trait]
impl Source for MemorySource {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn format(&self) -> &'static str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        match self.steps.pop_front() {
            None => Ok(None),
            Some(Step::Extent(extent)) => {
                self.yielded += 1;
                Ok(Some(extent))
            }
            Some(Step::Fail(reason)) => Err(Error::SourceContract {
                source_name: self.describe(),
                reason,
            }),
            Some(Step::Stall) => std::future::pending().await,
        }
    }
}

/// What a [`MemorySink`] received, shared with the test through `MemorySink::record`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// The disk as written so far (zeros where nothing was written).
    pub content: Vec<u8>,
    /// Extents received (data and zero).
    pub writes: usize,
    /// The summary `finish` was called with, if it was.
    pub finished: Option<Summary>,
    /// How many times `abort` was called.
    pub aborts: usize,
}

/// A sink that assembles the disk in memory.
#[derive(Debug)]
pub struct MemorySink {
    record: Arc<Mutex<SinkRecord>>,
    /// Fail the write of this extent (counted from 0), if set.
    fail_at: Option<usize>,
}

impl MemorySink {
    /// A sink for a disk of `size` bytes, and the record the test reads afterwards.
    pub fn new(size: u64) -> (MemorySink, Arc<Mutex<SinkRecord>>) {
        let record = Arc::new(Mutex::new(SinkRecord {
            content: vec![0; usize::try_from(size).expect("an in-memory disk fits in memory")],
            ..SinkRecord::default()
        }));
        let sink = MemorySink {
            record: Arc::clone(&record),
            fail_at: None,
        };
        (sink, record)
    }

    /// Fails the write of extent number `index` (from 0), as a destination that breaks.
    pub fn failing_at(mut self, index: usize) -> MemorySink {
        self.fail_at = Some(index);
        self
    }

    fn record(&self) -> MutexGuard<'_, SinkRecord> {
        // A test that panicked while holding the lock has failed already.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn describe(&self) -> String {
        "memory sink".into()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        let fail_at = self.fail_at;
        let mut record = self.record();
        let index = record.writes;
        record.writes += 1;
        if fail_at == Some(index) {
            return Err(Error::io(
                "write to the memory sink",
                std::io::Error::other(format!("write {index} fails on purpose")),
            ));
        }
        if let Extent::Data { offset, data } = extent {
            let start = offset as usize;
            record.content[start..start + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>, summary: &Summary) -> Result<SinkReport> {
        self.record().finished = Some(summary.clone());
        Ok(SinkReport {
            location: self.describe(),
            bytes_written: self.record().content.len() as u64,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.record().aborts += 1;
        Ok(())
    }
}
