//! Opening an address as a source. The format is the one given, else the one diskferry
//! recorded, else guessed from the magic bytes (never from the file name): see
//! [`crate::FormatOrigin`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use objstore::{HttpObject, RangeRead};

use super::{Qcow2Source, RawSource, RbdSource, RbdSourceOptions, ZstdRawSource};
use crate::digest::{DigestAlgorithm, RecordedDigest};
use crate::formats::raw_zst;
use crate::sinks::{S3_METADATA_DIGEST, S3_METADATA_DIGEST_ALGORITHM, S3_METADATA_FORMAT};
use crate::{Address, Context, Error, Extent, FormatOrigin, ObjectFormat, Result, Source};

/// Bytes read from the start of an object to detect its format. They are kept, and the
/// format's reader gets them from memory (`Probed`): a qcow2 image's first cluster (the
/// reader reads its first 4 KiB, then the whole cluster, 64 KiB by default) and raw.zst's
/// header frame are not fetched again.
pub const MAGIC_PROBE_LEN: usize = 64 << 10;

/// qcow2 images start with `QFI\xfb`.
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

/// Formats recognised by magic that diskferry does not read; the user must convert them.
const FOREIGN_MAGICS: &[(&[u8], &str)] = &[
    (b"KDMV", "VMDK"),
    (b"vhdxfile", "VHDX"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", "VDI"),
    (b"conectix", "VHD (dynamic)"),
    (&[0x1f, 0x8b], "gzip-compressed"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz-compressed"),
];

/// Guesses the format from the first bytes of an object.
pub fn detect_format(name: &str, head: &[u8]) -> Result<ObjectFormat> {
    if head.starts_with(QCOW2_MAGIC) {
        return Ok(ObjectFormat::Qcow2);
    }
    if raw_zst::is_zstd(head) {
        return Ok(ObjectFormat::RawZstd);
    }
    if let Some((_, format)) = FOREIGN_MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
    {
        return Err(Error::UnsupportedSource {
            source_name: name.to_string(),
            reason: format!("it is a {format} file; convert it to qcow2 or raw first"),
        });
    }
    Ok(ObjectFormat::Raw)
}

/// The format diskferry recorded with `object` when it wrote it, if any.
pub fn recorded_format(object: &dyn RangeRead) -> Result<Option<ObjectFormat>> {
    let Some(value) = object.metadata(S3_METADATA_FORMAT) else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|_| Error::UnsupportedSource {
            source_name: object.describe(),
            reason: format!(
                "its {S3_METADATA_FORMAT} metadata says {value:?}, a format this version does not \
             read; give the format with --format if you know it"
            ),
        })
}

/// Opens a file, HTTP(S) or S3 address as a range reader.
pub async fn open_object(ctx: &Context, address: &Address) -> Result<Arc<dyn RangeRead>> {
    if let Address::Http(url) = address {
        // A URL is read-only: a reader, not an object in a store.
        return Ok(Arc::new(HttpObject::open_with(ctx.http(), url).await?));
    }
    let (store, key) = ctx.store_for(address).await?;
    Ok(store.open(&key).await?)
}

/// Opens any address as a disk source, deciding its format as [`crate::FormatOrigin`] says:
/// probing the magic bytes only when nothing else is known.
pub async fn open_source(ctx: &Context, address: &Address) -> Result<Box<dyn Source>> {
    open_source_as(ctx, address, None).await
}

/// Opens `address` as a disk source of the given `format` (`None`: as recorded, else guessed).
/// An RBD image is raw: asking for another format is an error.
pub async fn open_source_as(
    ctx: &Context,
    address: &Address,
    format: Option<ObjectFormat>,
) -> Result<Box<dyn Source>> {
    if let Address::Rbd(spec) = address {
        if let Some(other) = format.filter(|f| *f != ObjectFormat::Raw) {
            return Err(Error::InvalidOption(format!(
                "{address} is an RBD image, whose content is a raw disk; it cannot be read as {other}"
            )));
        }
        let source = RbdSource::open(ctx, spec, RbdSourceOptions::default()).await?;
        return Ok(Box::new(source));
    }
    let object = open_object(ctx, address).await?;
    let remote = !matches!(address, Address::File(_));
    open_object_as(object, format, remote).await
}

/// Opens `object`, already opened, as a disk source, as [`open_source_as`] does; `remote`
/// (HTTP(S), S3) sets the qcow2 read options. For a caller that opened it itself, e.g. a
/// bundle's disk file, which is opened without following links.
pub async fn open_object_as(
    object: Arc<dyn RangeRead>,
    format: Option<ObjectFormat>,
    remote: bool,
) -> Result<Box<dyn Source>> {
    let (format, origin, object) = match format {
        Some(format) => (format, FormatOrigin::Given, object),
        None => match recorded_format(object.as_ref())? {
            Some(format) => (format, FormatOrigin::Recorded, object),
            None => {
                let probe = (object.size() as usize).min(MAGIC_PROBE_LEN);
                let head = object.read_at(0, probe).await?;
                let format = detect_format(&object.describe(), &head)?;
                let object: Arc<dyn RangeRead> = Arc::new(Probed { object, head });
                (format, FormatOrigin::Guessed, object)
            }
        },
    };
    let recorded_digest = recorded_digest(object.as_ref())?;
    let inner: Box<dyn Source> = match format {
        ObjectFormat::Qcow2 => {
            let options = if remote {
                Qcow2Source::remote_read_options()
            } else {
                Qcow2Source::read_options()
            };
            Box::new(Qcow2Source::open_with(object, options).await?)
        }
        // Where the store knows the holes (a sparse local file), they are not read.
        ObjectFormat::Raw => match object.data_segments().await? {
            Some(segments) => Box::new(RawSource::with_segments(object, segments)),
            None => Box::new(RawSource::new(object)),
        },
        ObjectFormat::RawZstd => Box::new(ZstdRawSource::open(object).await?),
    };
    Ok(Box::new(Decided {
        inner,
        origin,
        recorded_digest,
    }))
}

/// The digest recorded with `object` by the export that wrote it, with its algorithm; an
/// algorithm this version does not know is refused rather than the copy left unchecked.
fn recorded_digest(object: &dyn RangeRead) -> Result<Option<RecordedDigest>> {
    if object.changed_since_recorded() {
        // Written to since (a VM's disk): the digest is of what it held then. Its recorded
        // format still holds, and is kept: guessing a raw disk's format from content a guest
        // wrote could read it as a qcow2 the guest made.
        tracing::info!(object = %object.describe(), "changed since diskferry wrote it: its recorded digest is not checked");
        return Ok(None);
    }
    let Some(name) = object.metadata(S3_METADATA_DIGEST_ALGORITHM) else {
        return Ok(None);
    };
    let Some(digest) = object.metadata(S3_METADATA_DIGEST) else {
        return Ok(None);
    };
    let algorithm = DigestAlgorithm::parse(&name).map_err(|e| Error::UnsupportedSource {
        source_name: object.describe(),
        reason: format!("its recorded digest cannot be checked: {e}"),
    })?;
    Ok(Some(RecordedDigest { algorithm, digest }))
}

/// An object whose first bytes were read to detect its format: reads within them are served
/// from memory, so the format's reader does not fetch the header again (for S3 and HTTP(S),
/// one request less per job). Other reads go to the object.
#[derive(Debug)]
struct Probed {
    object: Arc<dyn RangeRead>,
    /// The object's first bytes.
    head: Bytes,
}

#[async_trait]
impl RangeRead for Probed {
    fn size(&self) -> u64 {
        self.object.size()
    }

    fn describe(&self) -> String {
        self.object.describe()
    }

    fn metadata(&self, key: &str) -> Option<String> {
        self.object.metadata(key)
    }

    fn changed_since_recorded(&self) -> bool {
        self.object.changed_since_recorded()
    }

    async fn data_segments(&self) -> objstore::Result<Option<Vec<(u64, u64)>>> {
        self.object.data_segments().await
    }

    async fn read_at(&self, offset: u64, len: usize) -> objstore::Result<Bytes> {
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= self.head.len() as u64 => {
                Ok(self.head.slice(offset as usize..end as usize))
            }
            _ => self.object.read_at(offset, len).await,
        }
    }
}

/// A source whose format was decided by [`open_source_as`], which says how.
struct Decided {
    inner: Box<dyn Source>,
    origin: FormatOrigin,
    recorded_digest: Option<RecordedDigest>,
}

#[async_trait]
impl Source for Decided {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn format(&self) -> &'static str {
        self.inner.format()
    }

    fn format_origin(&self) -> FormatOrigin {
        self.origin
    }

    fn recorded_digest(&self) -> Option<RecordedDigest> {
        self.recorded_digest.clone()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        self.inner.next_extent().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::formats::{Encoder, Qcow2Encoder};

    /// An object in memory that records every read.
    #[derive(Debug)]
    struct Recorded {
        data: Bytes,
        reads: Mutex<Vec<(u64, usize)>>,
    }

    #[async_trait]
    impl RangeRead for Recorded {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }

        fn describe(&self) -> String {
            "memory".into()
        }

        async fn read_at(&self, offset: u64, len: usize) -> objstore::Result<Bytes> {
            objstore::check_range(self, offset, len)?;
            self.reads.lock().unwrap().push((offset, len));
            Ok(self.data.slice(offset as usize..offset as usize + len))
        }
    }

    /// A 4 MiB qcow2 image (64 KiB clusters) holding `disk`'s first MiB.
    async fn qcow2_image(disk: &Bytes) -> Bytes {
        let mut encoder = Qcow2Encoder::new(4 << 20, 64 << 10, None, 1, "memory").unwrap();
        let mut chunks = encoder.push(0, disk.clone()).await.unwrap();
        chunks.extend(Box::new(encoder).finish().await.unwrap());
        let len = chunks
            .iter()
            .map(|c| c.offset as usize + c.data.len())
            .max();
        let mut image = vec![0u8; len.unwrap()];
        for c in chunks {
            image[c.offset as usize..][..c.data.len()].copy_from_slice(&c.data);
        }
        Bytes::from(image)
    }

    #[tokio::test]
    async fn the_format_probe_is_not_fetched_again_for_the_header() {
        let disk = Bytes::from((0..1u32 << 20).map(|i| (i % 253) as u8).collect::<Vec<_>>());
        let object = Arc::new(Recorded {
            data: qcow2_image(&disk).await,
            reads: Mutex::default(),
        });
        let mut source = open_object_as(object.clone(), None, true).await.unwrap();
        assert_eq!(source.format(), "qcow2");
        assert_eq!(source.format_origin(), FormatOrigin::Guessed);
        let mut read_back = Vec::new();
        while let Some(extent) = source.next_extent().await.unwrap() {
            if let Extent::Data { data, .. } = extent {
                read_back.extend_from_slice(&data);
            }
        }
        assert!(read_back == disk[..], "the disk read back differs");
        let reads = object.reads.lock().unwrap().clone();
        let of_the_header: Vec<_> = reads
            .iter()
            .filter(|(offset, _)| (*offset as usize) < MAGIC_PROBE_LEN)
            .collect();
        assert_eq!(
            of_the_header,
            [&(0, MAGIC_PROBE_LEN)],
            "the first cluster was read more than once: {reads:?}"
        );
    }

    /// A raw object in memory with the digest metadata an export records.
    #[derive(Debug)]
    struct Exported {
        data: Bytes,
        algorithm: &'static str,
        digest: String,
    }

    #[async_trait]
    impl RangeRead for Exported {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }

        fn describe(&self) -> String {
            "exported".into()
        }

        fn metadata(&self, key: &str) -> Option<String> {
            match key {
                S3_METADATA_DIGEST_ALGORITHM => Some(self.algorithm.into()),
                S3_METADATA_DIGEST => Some(self.digest.clone()),
                _ => None,
            }
        }

        async fn read_at(&self, offset: u64, len: usize) -> objstore::Result<Bytes> {
            objstore::check_range(self, offset, len)?;
            Ok(self.data.slice(offset as usize..offset as usize + len))
        }
    }

    #[tokio::test]
    async fn a_recorded_digest_comes_with_its_algorithm_and_an_unknown_one_is_refused() {
        let data = Bytes::from(vec![5u8; 10_000]);
        for algorithm in DigestAlgorithm::ALL {
            let digest = crate::ContentDigest::of_with(algorithm, &data);
            let object = Arc::new(Exported {
                data: data.clone(),
                algorithm: algorithm.name(),
                digest: digest.clone(),
            });
            let source = open_object_as(object, Some(ObjectFormat::Raw), true)
                .await
                .unwrap();
            assert_eq!(
                source.recorded_digest(),
                Some(RecordedDigest { algorithm, digest })
            );
        }
        let object = Arc::new(Exported {
            data,
            algorithm: "whirlpool-of-it-all",
            digest: "ab".into(),
        });
        let err = open_object_as(object, Some(ObjectFormat::Raw), true)
            .await
            .err()
            .expect("an unknown algorithm is refused")
            .to_string();
        for part in [
            "exported",
            "\"whirlpool-of-it-all\"",
            crate::digest::SHA256_BLOCKS,
            crate::digest::BLAKE3_BLOCKS,
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
    }

    #[test]
    fn formats_are_detected_by_magic() {
        assert_eq!(
            detect_format("x", b"QFI\xfb\0\0\0\x03").unwrap(),
            ObjectFormat::Qcow2
        );
        assert_eq!(detect_format("x", &[0u8; 512]).unwrap(), ObjectFormat::Raw);
        assert_eq!(detect_format("x", b"").unwrap(), ObjectFormat::Raw);
        let err = detect_format("disk.qcow2", b"KDMV\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk.qcow2") && err.contains("VMDK"), "{err}");
    }
}
