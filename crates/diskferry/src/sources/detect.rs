//! Opening an address as a source, detecting its format by magic, never by file name.

use std::sync::Arc;

use objstore::{HttpObject, LocalFile, RangeRead};

use super::{zstd_raw, Qcow2Source, RawSource, RbdSource, RbdSourceOptions, ZstdRawSource};
use crate::{Address, Context, Error, Result, Source};

/// Bytes read from the start of an object to detect its format.
pub const MAGIC_PROBE_LEN: usize = 512;

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

/// The format of an image, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// qcow2 (v2 or v3).
    Qcow2,
    /// Anything else is raw: the bytes are the disk.
    Raw,
    /// A zstd-compressed raw disk (`raw.zst`, see [`zstd_raw`]).
    RawZstd,
}

/// Detects the format from the first bytes of an object.
pub fn detect_format(name: &str, head: &[u8]) -> Result<ImageFormat> {
    if head.starts_with(QCOW2_MAGIC) {
        return Ok(ImageFormat::Qcow2);
    }
    if zstd_raw::is_zstd(head) {
        return Ok(ImageFormat::RawZstd);
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
    Ok(ImageFormat::Raw)
}

/// Opens a file, HTTP(S) or S3 address as a range reader.
pub async fn open_object(ctx: &Context, address: &Address) -> Result<Arc<dyn RangeRead>> {
    Ok(match address {
        Address::File(path) => Arc::new(LocalFile::open(path).await?),
        Address::Http(url) => Arc::new(HttpObject::open_with(ctx.http(), url).await?),
        Address::S3(addr) => Arc::new(ctx.s3().await?.open(&addr.bucket, &addr.key).await?),
        Address::Rbd(spec) => {
            return Err(Error::InvalidAddress {
                address: spec.to_string(),
                reason: "an RBD image is not an object".into(),
            })
        }
    })
}

/// Opens any address as a disk source: RBD images directly, objects as qcow2 or raw by magic.
pub async fn open_source(ctx: &Context, address: &Address) -> Result<Box<dyn Source>> {
    if let Address::Rbd(spec) = address {
        let source = RbdSource::open(ctx, spec, RbdSourceOptions::default()).await?;
        return Ok(Box::new(source));
    }
    let object = open_object(ctx, address).await?;
    let name = object.describe();
    let probe = (object.size() as usize).min(MAGIC_PROBE_LEN);
    let head = object.read_at(0, probe).await?;
    match detect_format(&name, &head)? {
        ImageFormat::Qcow2 => {
            let options = match address {
                Address::File(_) => Qcow2Source::read_options(),
                _ => Qcow2Source::remote_read_options(),
            };
            Ok(Box::new(Qcow2Source::open_with(object, options).await?))
        }
        ImageFormat::Raw => Ok(Box::new(RawSource::new(object))),
        ImageFormat::RawZstd => Ok(Box::new(ZstdRawSource::open(object).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_by_magic() {
        assert_eq!(
            detect_format("x", b"QFI\xfb\0\0\0\x03").unwrap(),
            ImageFormat::Qcow2
        );
        assert_eq!(detect_format("x", &[0u8; 512]).unwrap(), ImageFormat::Raw);
        assert_eq!(detect_format("x", b"").unwrap(), ImageFormat::Raw);
        let err = detect_format("disk.qcow2", b"KDMV\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk.qcow2") && err.contains("VMDK"), "{err}");
    }
}
