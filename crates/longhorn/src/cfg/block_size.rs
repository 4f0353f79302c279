//! Block sizes: Longhorn's `backup-block-size` parameter (a Kubernetes quantity).

use crate::error::{Error, Result};

/// Longhorn's default block size, 2 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 * 1024 * 1024;
/// The larger block size Longhorn's manager allows, 16 MiB.
pub const LARGE_BLOCK_SIZE: u64 = 16 * 1024 * 1024;
/// Smallest block size we read (and the alignment a block size must have).
pub const MIN_BLOCK_SIZE: u64 = 4096;
/// Largest block size we read: bounds the memory a restore needs per block.
pub const MAX_BLOCK_SIZE: u64 = 64 * 1024 * 1024;

/// The block sizes this crate writes (the two Longhorn's manager accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockSize {
    /// 2 MiB, Longhorn's default.
    #[default]
    Mib2,
    /// 16 MiB (Longhorn >= 1.10).
    Mib16,
}

impl BlockSize {
    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            BlockSize::Mib2 => DEFAULT_BLOCK_SIZE,
            BlockSize::Mib16 => LARGE_BLOCK_SIZE,
        }
    }

    /// `size` rounded up to a whole number of blocks: the volume size to back up a disk whose
    /// size is not block-aligned (Longhorn needs aligned volume sizes; pad the last block
    /// with zeros).
    pub fn round_up(self, size: u64) -> u64 {
        size.div_ceil(self.bytes()) * self.bytes()
    }

    /// The writer's block size for a byte count, if it is one of the two.
    pub fn from_bytes(n: u64) -> Option<Self> {
        match n {
            DEFAULT_BLOCK_SIZE => Some(BlockSize::Mib2),
            LARGE_BLOCK_SIZE => Some(BlockSize::Mib16),
            _ => None,
        }
    }
}

const QUANTITY_SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
];

/// Parses a `backup-block-size` value the way Longhorn does for the forms it writes (`"2097152"`,
/// `"2Mi"`, `"16Mi"`, decimal suffixes); absent, empty or zero → 2 MiB. Refuses sizes that
/// are not a multiple of 4 KiB or above 64 MiB.
pub fn parse_block_size(value: Option<&str>) -> Result<u64> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_BLOCK_SIZE);
    };
    let bad = |reason| Error::InvalidBlockSize {
        value: v.to_owned(),
        reason,
    };
    let (digits, mult) = QUANTITY_SUFFIXES
        .iter()
        .find_map(|(suf, m)| v.strip_suffix(suf).map(|d| (d, *m)))
        .unwrap_or((v, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "not a whole number of bytes with an optional Ki/Mi/Gi/k/M/G suffix",
        ));
    }
    let n: u64 = digits.parse().map_err(|_| bad("too large"))?;
    let n = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if n == 0 {
        return Ok(DEFAULT_BLOCK_SIZE);
    }
    if n % MIN_BLOCK_SIZE != 0 {
        return Err(bad("not a multiple of 4096"));
    }
    if n > MAX_BLOCK_SIZE {
        return Err(bad("larger than 64 MiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_block_size(None).unwrap(), DEFAULT_BLOCK_SIZE);
        assert_eq!(parse_block_size(Some("")).unwrap(), DEFAULT_BLOCK_SIZE);
        assert_eq!(parse_block_size(Some("0")).unwrap(), DEFAULT_BLOCK_SIZE);
        assert_eq!(
            parse_block_size(Some("2097152")).unwrap(),
            DEFAULT_BLOCK_SIZE
        );
        assert_eq!(parse_block_size(Some("2Mi")).unwrap(), DEFAULT_BLOCK_SIZE);
        assert_eq!(parse_block_size(Some("16Mi")).unwrap(), LARGE_BLOCK_SIZE);
        assert!(parse_block_size(Some("1Gi")).is_err());
        assert!(parse_block_size(Some("1000")).is_err());
        assert!(parse_block_size(Some("-2Mi")).is_err());
        assert!(parse_block_size(Some("2Xi")).is_err());
        assert_eq!(BlockSize::Mib2.round_up(1), DEFAULT_BLOCK_SIZE);
        assert_eq!(
            BlockSize::Mib2.round_up(DEFAULT_BLOCK_SIZE),
            DEFAULT_BLOCK_SIZE
        );
        assert_eq!(BlockSize::Mib16.round_up(0), 0);
    }
}
