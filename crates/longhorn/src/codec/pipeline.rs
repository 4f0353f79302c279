//! Per-block encode (hash + compress) and decode (decompress + verify) with state reused
//! across blocks: one encoder or decoder per worker, never one per block.

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Decompress};

use super::{checksum_hex, gzip, is_zero, lz4, Compression, DecodeError};
use crate::error::{Error, Result};

/// A block after [`BlockEncoder::encode`].
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    /// Longhorn checksum of the uncompressed block (its file name).
    pub checksum: String,
    /// The bytes to store in `<checksum>.blk`.
    pub payload: Bytes,
}

/// Hashes and compresses blocks, reusing its output buffer, scratch space and deflate state.
///
/// The output buffer is handed out as [`Bytes`]; once the caller drops that `Bytes` (the upload
/// finished), the next block reclaims the same allocation.
#[derive(Debug)]
pub struct BlockEncoder {
    method: Compression,
    scratch: Vec<u8>,
    out: BytesMut,
    deflate: Option<Compress>,
}

impl BlockEncoder {
    /// An encoder for `method`.
    pub fn new(method: Compression) -> Self {
        Self {
            method,
            scratch: Vec::new(),
            out: BytesMut::new(),
            deflate: None,
        }
    }

    /// The compression method.
    pub fn method(&self) -> Compression {
        self.method
    }

    /// Longhorn checksum of a block.
    pub fn checksum(data: &[u8]) -> String {
        checksum_hex(data)
    }

    /// Whether a block is all zeros (such blocks need not be stored).
    pub fn is_zero(data: &[u8]) -> bool {
        is_zero(data)
    }

    /// Compresses one block into the payload of its `.blk` file.
    pub fn compress(&mut self, data: &Bytes) -> Bytes {
        match self.method {
            Compression::None => data.clone(),
            Compression::Lz4 => {
                lz4::encode_frame(data, &mut self.scratch, &mut self.out);
                self.out.split().freeze()
            }
            Compression::Gzip => {
                let deflate = self.deflate.get_or_insert_with(gzip::new_compressor);
                gzip::encode(data, deflate, &mut self.scratch, &mut self.out);
                self.out.split().freeze()
            }
        }
    }

    /// The whole block pipeline: checksum, then compress.
    pub fn encode(&mut self, data: &Bytes) -> EncodedBlock {
        EncodedBlock {
            checksum: checksum_hex(data),
            payload: self.compress(data),
        }
    }
}

/// Decompresses and verifies blocks, reusing its output buffer and inflate state.
#[derive(Debug)]
pub struct BlockDecoder {
    out: BytesMut,
    inflate: Option<Decompress>,
}

impl Default for BlockDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self {
            out: BytesMut::new(),
            inflate: None,
        }
    }

    fn decode_with(
        &mut self,
        method: Compression,
        data: &[u8],
        block_size: usize,
    ) -> Result<usize, DecodeError> {
        match method {
            Compression::None => {
                if data.len() > block_size {
                    return Err(DecodeError::Corrupt("data exceeds the block size".into()));
                }
                self.out[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
            Compression::Lz4 => lz4::decode_frames(data, &mut self.out),
            Compression::Gzip => {
                let inflate = self.inflate.get_or_insert_with(|| Decompress::new(false));
                gzip::decode(data, inflate, &mut self.out)
            }
        }
    }

    /// Decompresses a stored block with `method` (falling back between gzip and lz4 on a
    /// header error, as Longhorn does since 1.5.5/1.6.2), checks it is exactly `block_size`
    /// bytes and that its checksum is `checksum`. `offset` only names the block in errors.
    pub fn decode(
        &mut self,
        method: Compression,
        data: &Bytes,
        block_size: u64,
        checksum: &str,
        offset: u64,
    ) -> Result<Bytes> {
        let bs = usize::try_from(block_size).map_err(|_| Error::InvalidBlockSize {
            value: block_size.to_string(),
            reason: "does not fit in memory",
        })?;
        let decompress_err = |method: Compression, e: &DecodeError| Error::Decompress {
            checksum: checksum.to_owned(),
            offset,
            method: method.as_str(),
            reason: e.message().to_owned(),
        };
        let decoded = if method == Compression::None {
            // Zero-copy: the stored bytes are the block.
            data.clone()
        } else {
            self.out.clear();
            self.out.resize(bs, 0);
            let n = match self.decode_with(method, data, bs) {
                Ok(n) => n,
                Err(first @ DecodeError::BadHeader(_)) => {
                    let other = match method {
                        Compression::Lz4 => Compression::Gzip,
                        _ => Compression::Lz4,
                    };
                    self.decode_with(other, data, bs)
                        .map_err(|_| decompress_err(method, &first))?
                }
                Err(e) => return Err(decompress_err(method, &e)),
            };
            self.out.truncate(n);
            self.out.split().freeze()
        };
        if decoded.len() != bs {
            return Err(Error::Decompress {
                checksum: checksum.to_owned(),
                offset,
                method: method.as_str(),
                reason: format!(
                    "decompressed to {} bytes, expected the block size {bs}",
                    decoded.len()
                ),
            });
        }
        let actual = checksum_hex(&decoded);
        if actual != checksum {
            return Err(Error::ChecksumMismatch {
                checksum: checksum.to_owned(),
                offset,
                actual,
            });
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bs: usize) -> Bytes {
        let mut v: Vec<u8> = (0..bs).map(|i| (i * 31 / 7) as u8).collect();
        v[100..200].fill(0x5a);
        Bytes::from(v)
    }

    #[test]
    fn encode_decode_every_method_with_reused_state() {
        // Small blocks: deflate is very slow in unoptimized test builds.
        let bs = 256 << 10;
        for method in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let mut enc = BlockEncoder::new(method);
            let mut dec = BlockDecoder::new();
            for round in 0..3u8 {
                let mut v = sample(bs).to_vec();
                v[0] = round;
                let data = Bytes::from(v);
                let e = enc.encode(&data);
                assert_eq!(e.checksum, checksum_hex(&data));
                let back = dec
                    .decode(method, &e.payload, bs as u64, &e.checksum, 0)
                    .unwrap();
                assert_eq!(back, data);
            }
        }
    }

    #[test]
    fn buffers_are_reused_once_the_previous_block_is_dropped() {
        let bs = 256 << 10;
        let data = sample(bs);
        for method in [Compression::Gzip, Compression::Lz4] {
            let mut enc = BlockEncoder::new(method);
            let first = enc.encode(&data).payload;
            let ptr = first.as_ptr();
            drop(first);
            assert_eq!(
                enc.encode(&data).payload.as_ptr(),
                ptr,
                "{method} encoder reallocated"
            );
            let mut dec = BlockDecoder::new();
            let e = enc.encode(&data);
            let out = dec
                .decode(method, &e.payload, bs as u64, &e.checksum, 0)
                .unwrap();
            let ptr = out.as_ptr();
            drop(out);
            let again = dec
                .decode(method, &e.payload, bs as u64, &e.checksum, 0)
                .unwrap();
            assert_eq!(again.as_ptr(), ptr, "{method} decoder reallocated");
        }
    }

    #[test]
    fn falls_back_between_gzip_and_lz4() {
        let bs = 1 << 20;
        let data = sample(bs);
        let lz = BlockEncoder::new(Compression::Lz4).encode(&data);
        let gz = BlockEncoder::new(Compression::Gzip).encode(&data);
        let mut dec = BlockDecoder::new();
        assert_eq!(
            dec.decode(Compression::Gzip, &lz.payload, bs as u64, &lz.checksum, 0)
                .unwrap(),
            data
        );
        assert_eq!(
            dec.decode(Compression::Lz4, &gz.payload, bs as u64, &gz.checksum, 0)
                .unwrap(),
            data
        );
    }

    #[test]
    fn errors_name_the_block() {
        let bs = 1 << 20;
        let data = sample(bs);
        let e = BlockEncoder::new(Compression::Lz4).encode(&data);
        let mut dec = BlockDecoder::new();
        let other = "0".repeat(64);
        let err = dec
            .decode(Compression::Lz4, &e.payload, bs as u64, &other, 4096)
            .unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }));
        assert!(
            err.to_string().contains(&other) && err.to_string().contains("4096"),
            "{err}"
        );
        let err = dec
            .decode(
                Compression::Lz4,
                &Bytes::from_static(b"junk"),
                bs as u64,
                &e.checksum,
                0,
            )
            .unwrap_err();
        assert!(err.to_string().contains(&e.checksum), "{err}");
        // Wrong length.
        let short = BlockEncoder::new(Compression::None).encode(&data.slice(..100));
        assert!(dec
            .decode(
                Compression::None,
                &short.payload,
                bs as u64,
                &short.checksum,
                0
            )
            .is_err());
    }
}
