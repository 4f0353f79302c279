//! The content check of a restore: what a full backup recorded ([`DIGEST_LABEL`],
//! [`DISK_SIZE_LABEL`]) against what the restore wrote.
//!
//! A restore writes the volume's size (see the module doc of [`crate::longhorn`]): the
//! backed-up disk, then zeros up to `volume.cfg`'s size, which is the disk size rounded up
//! to a block, or more after the volume grew. The recorded digest covers the disk as it was
//! backed up, so the check is: the digest of the first `disk size` bytes equals it, and every
//! byte after them is zero. When the two sizes are equal the pipeline's own digest is that
//! digest; otherwise [`DigestCheck`] computes the prefix digest itself, on a blocking thread,
//! from the data extents it passes on.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{DIGEST_ALGORITHM_LABEL, DIGEST_LABEL, DISK_SIZE_LABEL};
use crate::digest::{ContentDigest, DigestAlgorithm};
use crate::pipeline::DIGEST_QUEUE;
use crate::{Error, Extent, Report, Result, Sink, SinkReport, Summary};

/// What a full backup recorded about its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedDigest {
    /// The content digest ([`crate::digest`]) of the disk backed up.
    pub(crate) digest: String,
    /// Its algorithm ([`DIGEST_ALGORITHM_LABEL`]; SHA-256 in labels written before there was
    /// another).
    pub(crate) algorithm: DigestAlgorithm,
    /// The bytes it covers; `None` in labels written before diskferry recorded the size.
    pub(crate) disk_size: Option<u64>,
}

impl RecordedDigest {
    /// From a backup's labels; `None` when it recorded no digest (an incremental backup, or
    /// one Longhorn wrote). `what` names the backup in the error for an unreadable size.
    pub(crate) fn from_labels(
        labels: Option<&BTreeMap<String, String>>,
        what: &str,
    ) -> Result<Option<RecordedDigest>> {
        let Some(labels) = labels else {
            return Ok(None);
        };
        let Some(digest) = labels.get(DIGEST_LABEL) else {
            return Ok(None);
        };
        let disk_size = match labels.get(DISK_SIZE_LABEL) {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| Error::UnsupportedSource {
                source_name: what.to_owned(),
                reason: format!("backup label {DISK_SIZE_LABEL} is {v:?}, not a size in bytes"),
            })?),
        };
        let algorithm = match labels.get(DIGEST_ALGORITHM_LABEL) {
            None => DigestAlgorithm::Sha256Blocks,
            Some(name) => DigestAlgorithm::parse(name).map_err(|e| Error::UnsupportedSource {
                source_name: what.to_owned(),
                reason: format!("backup label {DIGEST_ALGORITHM_LABEL}: {e}"),
            })?,
        };
        Ok(Some(RecordedDigest {
            digest: digest.clone(),
            algorithm,
            disk_size,
        }))
    }
}

/// The outcome of the content check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verification {
    /// `Some(true)`: the restore matches what the backup recorded; `None`: nothing to check
    /// against (see `warning`).
    pub(crate) verified: Option<bool>,
    /// Why a recorded digest could not be checked.
    pub(crate) warning: Option<String>,
}

/// What a checked restore reports: the inner sink's report and the check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedRestore {
    /// The restored disk's sink's report.
    pub(crate) sink: SinkReport,
    /// The content check.
    pub(crate) verification: Verification,
}

impl Report for CheckedRestore {
    fn location(&self) -> &str {
        &self.sink.location
    }

    fn bytes_written(&self) -> u64 {
        self.sink.bytes_written
    }
}

/// The digest of the first `size` bytes of the restored disk and the offset of its first
/// non-zero byte after them, computed on a blocking thread from the data extents in order.
struct PrefixDigest {
    tx: mpsc::Sender<(u64, Bytes)>,
    task: JoinHandle<(String, Option<u64>)>,
}

impl PrefixDigest {
    fn start(algorithm: DigestAlgorithm, size: u64) -> PrefixDigest {
        let (tx, mut rx) = mpsc::channel::<(u64, Bytes)>(DIGEST_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut digest = ContentDigest::with_algorithm(algorithm, size);
            let mut nonzero = None;
            while let Some((offset, data)) = rx.blocking_recv() {
                let end = offset + data.len() as u64;
                if offset < size {
                    digest.data(offset, &data[..(end.min(size) - offset) as usize]);
                }
                if nonzero.is_none() && end > size {
                    let from = size.saturating_sub(offset) as usize;
                    nonzero = data[from..]
                        .iter()
                        .position(|&b| b != 0)
                        .map(|i| offset + (from + i) as u64);
                }
            }
            (digest.finish(), nonzero)
        });
        PrefixDigest { tx, task }
    }

    async fn feed(&self, offset: u64, data: &Bytes) {
        // The thread only stops early by panicking, which `finish` reports.
        let _ = self.tx.send((offset, data.clone())).await;
    }

    async fn finish(self) -> Result<(String, Option<u64>)> {
        drop(self.tx);
        self.task.await.map_err(|e| {
            Error::io(
                "compute the digest of the restored disk",
                std::io::Error::other(e),
            )
        })
    }
}

/// Wraps a restore's sink and checks the restored content against what the backup recorded.
/// When it differs, the sink is aborted instead of finished, so a restore that fails the
/// check leaves no image, object or file behind.
pub(crate) struct DigestCheck {
    inner: Box<dyn Sink>,
    recorded: Option<RecordedDigest>,
    /// Set when the recorded digest covers another size than the restored disk's, or is of
    /// another algorithm than the pipeline's.
    prefix: Option<PrefixDigest>,
    what: String,
}

impl std::fmt::Debug for DigestCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestCheck")
            .field("inner", &self.inner.describe())
            .field("recorded", &self.recorded)
            .finish_non_exhaustive()
    }
}

impl DigestCheck {
    /// Checks what `inner` receives of a disk of `size` bytes against `recorded`, the
    /// pipeline digesting it with `pipeline_algorithm`; `what` names the backup in messages.
    /// Must run inside a Tokio runtime.
    pub(crate) fn new(
        inner: Box<dyn Sink>,
        recorded: Option<RecordedDigest>,
        size: u64,
        pipeline_algorithm: DigestAlgorithm,
        what: String,
    ) -> DigestCheck {
        // A second digest only where the pipeline's cannot be compared with the record.
        let prefix = recorded.as_ref().and_then(|r| {
            let covered = r.disk_size.unwrap_or(size);
            (covered != size || r.algorithm != pipeline_algorithm)
                .then(|| PrefixDigest::start(r.algorithm, covered))
        });
        DigestCheck {
            inner,
            recorded,
            prefix,
            what,
        }
    }

    /// The verdict, or the reason the restore must not be kept.
    async fn verdict(
        recorded: Option<RecordedDigest>,
        prefix: Option<PrefixDigest>,
        summary: &Summary,
        what: &str,
    ) -> Result<std::result::Result<Verification, String>> {
        let Some(recorded) = recorded else {
            return Ok(Ok(Verification::default()));
        };
        let verified = Verification {
            verified: Some(true),
            warning: None,
        };
        let expected = &recorded.digest;
        let (digest, nonzero) = match prefix {
            Some(prefix) => prefix.finish().await?,
            None if summary.digest_algorithm != recorded.algorithm => {
                return Ok(Err(format!(
                    "the copy was digested with {}, the backup recorded a {} digest, and \
                     nothing computed the latter",
                    summary.digest_algorithm.name(),
                    recorded.algorithm.name()
                )))
            }
            None => (summary.digest.clone(), None),
        };
        Ok(match recorded.disk_size {
            Some(disk_size) if nonzero.is_some() => Err(format!(
                "the backup recorded a disk of {disk_size} bytes, but the restored {}-byte \
                 disk has data at byte {}, past them",
                summary.size,
                nonzero.unwrap_or_default()
            )),
            Some(disk_size) if digest != *expected && disk_size != summary.size => Err(format!(
                "its first {disk_size} bytes have digest {digest}, the backup recorded \
                 {expected}"
            )),
            Some(_) if digest != *expected => Err(format!(
                "restored with digest {digest}, the backup recorded {expected}"
            )),
            Some(_) => Ok(verified),
            None if digest == *expected => Ok(verified),
            None => Ok(Verification {
                verified: None,
                warning: Some(format!(
                    "{what}: the backup's recorded digest {expected} does not say which size \
                     it covers (an older diskferry wrote it) and differs from the restored \
                     disk's; that is expected when the disk size was not a multiple of the \
                     block size or the volume grew since, so the digest was not checked \
                     (every block was checked against its checksum)"
                )),
            }),
        })
    }
}

#[async_trait]
impl Sink<CheckedRestore> for DigestCheck {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        if let (Some(prefix), Extent::Data { offset, data }) = (&self.prefix, &extent) {
            prefix.feed(*offset, data).await;
        }
        self.inner.write(extent).await
    }

    async fn finish(self: Box<Self>, summary: &Summary) -> Result<CheckedRestore> {
        let DigestCheck {
            inner,
            recorded,
            prefix,
            what,
        } = *self;
        let left_behind = inner.describe();
        let error = match Self::verdict(recorded, prefix, summary, &what).await {
            Ok(Ok(verification)) => {
                let sink = inner.finish(summary).await?;
                return Ok(CheckedRestore { sink, verification });
            }
            Ok(Err(reason)) => {
                Error::Mismatch(format!("{what}: {reason}; {left_behind} was not kept"))
            }
            Err(e) => e,
        };
        Err(error.after_cleanup(inner.abort().await, left_behind))
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::NullSink;

    const MIB: usize = 1 << 20;

    fn recorded(content: &[u8], labelled_size: bool) -> RecordedDigest {
        RecordedDigest {
            digest: ContentDigest::of(content),
            algorithm: DigestAlgorithm::DEFAULT,
            disk_size: labelled_size.then_some(content.len() as u64),
        }
    }

    #[tokio::test]
    async fn a_sha256_record_made_before_blake3_still_checks_the_restore() {
        let d = disk();
        for (labelled_size, size) in [
            (true, d.len() as u64),
            (true, 4 * MIB as u64),
            (false, d.len() as u64),
        ] {
            let old = RecordedDigest {
                digest: ContentDigest::of_with(DigestAlgorithm::Sha256Blocks, &d),
                algorithm: DigestAlgorithm::Sha256Blocks,
                disk_size: labelled_size.then_some(d.len() as u64),
            };
            let v = check(old.clone(), size, &[(0, d.clone())]).await.unwrap();
            // The restore has the pipeline digest the old algorithm: one digest, not two.
            let (_, second) = check_with(
                old.clone(),
                DigestAlgorithm::Sha256Blocks,
                size,
                &[(0, d.clone())],
            )
            .await
            .unwrap();
            assert_eq!(second, size != d.len() as u64, "size {size}");
            assert_eq!(v.verified, Some(true), "size {size}: {v:?}");
            let mut changed = d.clone();
            changed[10] ^= 1;
            let outcome = check(old, size, &[(0, changed)]).await;
            if labelled_size {
                let err = outcome.unwrap_err();
                assert!(matches!(err, Error::Mismatch(_)), "{err}");
            } else {
                // Without the size it covers, a difference is only warned about, as before.
                assert_eq!(outcome.unwrap().verified, None);
            }
        }
    }

    /// Runs `extents` of a `size`-byte restored disk through a check against `recorded`, the
    /// pipeline digesting with the default algorithm.
    async fn check(
        recorded: RecordedDigest,
        size: u64,
        extents: &[(u64, Vec<u8>)],
    ) -> Result<Verification> {
        Ok(
            check_with(recorded, DigestAlgorithm::DEFAULT, size, extents)
                .await?
                .0,
        )
    }

    /// [`check`] with the pipeline digesting with `pipeline`; also says whether the check
    /// computed a second digest.
    async fn check_with(
        recorded: RecordedDigest,
        pipeline: DigestAlgorithm,
        size: u64,
        extents: &[(u64, Vec<u8>)],
    ) -> Result<(Verification, bool)> {
        let mut sink = DigestCheck::new(
            Box::new(NullSink::default()),
            Some(recorded),
            size,
            pipeline,
            "v/b".into(),
        );
        let second = sink.prefix.is_some();
        let mut whole = ContentDigest::with_algorithm(pipeline, size);
        for (offset, data) in extents {
            whole.data(*offset, data);
            sink.write(Extent::Data {
                offset: *offset,
                data: Bytes::from(data.clone()),
            })
            .await?;
        }
        let summary = Summary {
            source: "longhorn v/b".into(),
            source_format: "longhorn",
            size,
            digest_algorithm: whole.algorithm(),
            digest: whole.finish(),
        };
        let verification = Box::new(sink).finish(&summary).await?.verification;
        Ok((verification, second))
    }

    /// 3 MiB + 100 bytes of data.
    fn disk() -> Vec<u8> {
        (0..3 * MIB + 100).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[tokio::test]
    async fn a_disk_restored_larger_is_checked_on_its_size_and_zero_tail() {
        let d = disk();
        let size = 8 * MIB as u64;
        // As the restore reader yields it: whole blocks, the last zero-padded.
        let mut padded = d.clone();
        padded.resize(4 * MIB, 0);
        let extents = vec![
            (0, padded[..2 * MIB].to_vec()),
            (2 * MIB as u64, padded[2 * MIB..].to_vec()),
        ];
        let v = check(recorded(&d, true), size, &extents).await.unwrap();
        assert_eq!(v.verified, Some(true), "{v:?}");

        // A byte past the recorded disk that is not zero fails, naming its offset.
        let mut bad = extents.clone();
        bad[1].1[MIB + 200] = 9;
        let err = check(recorded(&d, true), size, &bad).await.unwrap_err();
        let at = (3 * MIB + 200).to_string();
        assert!(err.to_string().contains(&at), "{err}");

        // A byte inside it that differs fails too.
        let mut bad = extents.clone();
        bad[0].1[7] ^= 1;
        let err = check(recorded(&d, true), size, &bad).await.unwrap_err();
        assert!(err.to_string().contains("the backup recorded"), "{err}");
    }

    #[tokio::test]
    async fn equal_sizes_use_the_pipeline_digest() {
        let d = disk();
        let extents = vec![(0, d.clone())];
        let v = check(recorded(&d, true), d.len() as u64, &extents)
            .await
            .unwrap();
        assert_eq!(v.verified, Some(true));
        let mut other = d.clone();
        other[5] ^= 1;
        let err = check(recorded(&d, true), d.len() as u64, &[(0, other)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Mismatch(_)), "{err}");
    }

    #[tokio::test]
    async fn a_digest_without_its_size_is_checked_when_the_sizes_agree() {
        let d = disk();
        let v = check(recorded(&d, false), d.len() as u64, &[(0, d.clone())])
            .await
            .unwrap();
        assert_eq!(v.verified, Some(true));
        // Restored larger: cannot be checked, said so, and the restore is kept.
        let v = check(recorded(&d, false), 4 * MIB as u64, &[(0, d.clone())])
            .await
            .unwrap();
        assert_eq!(v.verified, None);
        assert!(v.warning.unwrap().contains("not checked"));
    }

    #[test]
    fn labels_parse() {
        let mut labels = BTreeMap::from([(DIGEST_LABEL.to_owned(), "ab".to_owned())]);
        let r = RecordedDigest::from_labels(Some(&labels), "v/b")
            .unwrap()
            .unwrap();
        assert_eq!(r.disk_size, None);
        // Labels from before there was a second algorithm name SHA-256 or nothing.
        assert_eq!(r.algorithm, DigestAlgorithm::Sha256Blocks);
        for algorithm in DigestAlgorithm::ALL {
            labels.insert(DIGEST_ALGORITHM_LABEL.into(), algorithm.name().into());
            let r = RecordedDigest::from_labels(Some(&labels), "v/b")
                .unwrap()
                .unwrap();
            assert_eq!(r.algorithm, algorithm);
        }
        labels.insert(DIGEST_ALGORITHM_LABEL.into(), "crc32-of-it".into());
        let err = RecordedDigest::from_labels(Some(&labels), "v/b").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"crc32-of-it\"") && message.contains("blake3-of-1MiB"),
            "{message}"
        );
        labels.remove(DIGEST_ALGORITHM_LABEL);
        labels.insert(DISK_SIZE_LABEL.into(), "34607104".into());
        let r = RecordedDigest::from_labels(Some(&labels), "v/b")
            .unwrap()
            .unwrap();
        assert_eq!(r.disk_size, Some(34607104));
        labels.insert(DISK_SIZE_LABEL.into(), "big".into());
        let err = RecordedDigest::from_labels(Some(&labels), "v/b").unwrap_err();
        assert!(err.to_string().contains("not a size in bytes"), "{err}");
        assert_eq!(RecordedDigest::from_labels(None, "v/b").unwrap(), None);
    }
}
