//! Blocks: checksum, zero detection, compression (`none`, `gzip`, `lz4` frames) and the
//! per-block encode/decode pipeline with reused buffers and codec state.

mod gzip;
mod lz4;
mod pipeline;

use crate::error::{Error, Result};
use crate::paths::CHECKSUM_HEX_LEN;

pub use pipeline::{BlockDecoder, BlockEncoder, EncodedBlock};

/// Bytes scanned per step when looking for a non-zero byte; a branch-free OR over a chunk
/// vectorizes, and the early exit per chunk keeps data blocks cheap.
const ZERO_SCAN_CHUNK: usize = 4096;

/// Longhorn's block compression methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Raw bytes.
    None,
    /// RFC 1952 gzip (Longhorn's legacy default).
    Gzip,
    /// LZ4 frame format (Longhorn's default since 1.5).
    #[default]
    Lz4,
}

impl Compression {
    /// The exact identifier Longhorn stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }

    /// Parses an identifier (exact lowercase, as Longhorn compares it).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            other => Err(Error::UnsupportedCompression(other.to_owned())),
        }
    }
}

impl Compression {
    /// Every method with what it is, for command-line help.
    pub const NAMES: [(&'static str, &'static str); 3] = [
        ("none", "Uncompressed"),
        ("lz4", "lz4 frames (Longhorn's default)"),
        ("gzip", "gzip"),
    ];
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Compression::parse(s)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longhorn's checksum: the first 64 hex characters of SHA-512 (used for blocks and for the
/// volume-directory sharding).
///
/// This is the largest share of a backup's own CPU, so it uses the system OpenSSL's SHA-512,
/// which picks its AVX2 code on any CPU that has AVX2. aws-lc (linked for TLS) takes its AVX
/// code on Intel only and its scalar code elsewhere; on this project's AMD EPYC machines
/// OpenSSL's ran 1.5× as fast (criterion, `longhorn_blocks`), and the `sha2` crate's was no
/// faster than aws-lc's.
pub fn checksum_hex(data: &[u8]) -> String {
    let digest = openssl::sha::sha512(data);
    hex::encode(&digest[..CHECKSUM_HEX_LEN / 2])
}

/// Whether every byte of `data` is zero.
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(ZERO_SCAN_CHUNK);
    for c in &mut chunks {
        if c.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Why a decoder failed; header errors let the caller fall back to the other codec.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// Not this format at all (Go's `gzip.ErrHeader` / `lz4: bad magic number`).
    BadHeader(String),
    /// The format matched but the data is corrupt or too long.
    Corrupt(String),
}

impl DecodeError {
    fn message(&self) -> &str {
        match self {
            DecodeError::BadHeader(m) | DecodeError::Corrupt(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_vectors_from_reference() {
        let z2 = vec![0u8; 2 << 20];
        assert_eq!(
            checksum_hex(&z2),
            "731859029215873fdac1c9f2f8bd25a334abf0f3a9e1b057cf2cacc2826d86b0"
        );
        let z16 = vec![0u8; 16 << 20];
        assert_eq!(
            checksum_hex(&z16),
            "7e208b53e5c541b23906ef8ed8f5e12e4f1b470fbd0d3e907b1fc0c0b8d78eb1"
        );
        let pat: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            checksum_hex(&pat),
            "eb0e38fa0c2dd92c3ae29a6b05f74393547516089d640fc98dda8289582a3631"
        );
    }

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 2 << 20];
        assert!(is_zero(&b));
        assert!(is_zero(&b[..5000]));
        b[(2 << 20) - 1] = 1;
        assert!(!is_zero(&b));
        b[(2 << 20) - 1] = 0;
        b[4097] = 0x80;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }
}
