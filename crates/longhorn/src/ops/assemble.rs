//! Cutting a stream of extents into Longhorn's fixed blocks.
//!
//! Sources yield allocated extents of any size and alignment; the backup writer takes whole
//! blocks. The assembler zero-fills the parts of a block no extent covers, which is right when
//! every allocated byte of the block is fed (a full backup). For a diff-driven incremental
//! backup, read changed ranges rounded out to whole blocks instead: the unchanged bytes of a
//! partly changed block must come from the image, not be zero.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};

/// Turns ordered `(offset, data)` extents into whole blocks.
#[derive(Debug)]
pub struct BlockAssembler {
    block_size: u64,
    volume_size: u64,
    /// Start of the block being filled, if any.
    current: Option<u64>,
    buf: BytesMut,
    /// End of the last extent fed: extents must not go backwards or overlap.
    fed_to: u64,
}

impl BlockAssembler {
    /// An assembler for `block_size` blocks of a `volume_size`-byte volume (a block multiple).
    pub fn new(block_size: u64, volume_size: u64) -> Self {
        Self {
            block_size,
            volume_size,
            current: None,
            buf: BytesMut::new(),
            fed_to: 0,
        }
    }

    fn take_current(&mut self) -> Option<(u64, Bytes)> {
        let start = self.current.take()?;
        self.buf.resize(self.block_size as usize, 0);
        Some((start, self.buf.split().freeze()))
    }

    /// Feeds the extent at `offset`; returns the blocks it completed, in order. Whole aligned
    /// blocks inside `data` are passed on without copying.
    pub fn push(&mut self, offset: u64, data: Bytes) -> Result<Vec<(u64, Bytes)>> {
        let end = offset.saturating_add(data.len() as u64);
        if offset < self.fed_to {
            return Err(Error::BadBlock {
                offset,
                reason: format!(
                    "extent overlaps or precedes the previous one (ending at {})",
                    self.fed_to
                ),
            });
        }
        if end > self.volume_size {
            return Err(Error::BadBlock {
                offset,
                reason: format!(
                    "extent ends at {end}, beyond the volume size {}",
                    self.volume_size
                ),
            });
        }
        self.fed_to = end;
        let bs = self.block_size;
        let mut out = Vec::new();
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let block = pos - pos % bs;
            if self.current.is_some_and(|c| c != block) {
                out.extend(self.take_current());
            }
            let in_block = pos - block;
            let n = (bs - in_block).min(rest.len() as u64) as usize;
            if self.current.is_none() && in_block == 0 && n as u64 == bs {
                out.push((block, rest.split_to(n)));
            } else {
                if self.current.is_none() {
                    self.current = Some(block);
                    self.buf.clear();
                }
                // Holes inside the block read as zeros.
                self.buf.resize(in_block as usize, 0);
                self.buf.extend_from_slice(&rest.split_to(n));
            }
            pos += n as u64;
        }
        if self.current.is_some() && self.buf.len() as u64 == bs {
            out.extend(self.take_current());
        }
        Ok(out)
    }

    /// The last, partly filled block, zero-padded.
    pub fn finish(&mut self) -> Option<(u64, Bytes)> {
        self.take_current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_blocks_from_unaligned_extents() {
        let bs = 8u64;
        let mut a = BlockAssembler::new(bs, 48);
        let mut got = Vec::new();
        got.extend(a.push(2, Bytes::from_static(b"abc")).unwrap()); // block 0, partial
        got.extend(
            a.push(6, Bytes::from_static(b"DEFGHIJKLMNOPQRSTU"))
                .unwrap(),
        ); // 6..24
        got.extend(a.push(40, Bytes::from_static(b"zz")).unwrap());
        got.extend(a.finish());
        assert_eq!(
            got,
            vec![
                (0, Bytes::from_static(b"\0\0abc\0DE")),
                (8, Bytes::from_static(b"FGHIJKLM")),
                (16, Bytes::from_static(b"NOPQRSTU")),
                (40, Bytes::from_static(b"zz\0\0\0\0\0\0")),
            ]
        );
        assert!(a.push(39, Bytes::from_static(b"x")).is_err());
        assert!(a.push(47, Bytes::from_static(b"xy")).is_err());
    }

    #[test]
    fn aligned_blocks_pass_through_without_copy() {
        let data = Bytes::from(vec![7u8; 32]);
        let mut a = BlockAssembler::new(16, 64);
        let out = a.push(16, data.clone()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.as_ptr(), data.as_ptr());
        assert_eq!((out[0].0, out[1].0), (16, 32));
        assert!(a.finish().is_none());
    }
}
