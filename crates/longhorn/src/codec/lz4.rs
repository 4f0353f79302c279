//! LZ4 frame format (magic `04 22 4D 18`), written like pierrec/lz4 v4's default writer:
//! independent 4 MiB blocks, no block checksums, a content checksum. Reading accepts any
//! valid frame (linked blocks, block checksums, content size, concatenated and skippable
//! frames).

use bytes::{BufMut, BytesMut};
use xxhash_rust::xxh32::xxh32;

use super::DecodeError;

/// Frame magic number (little endian `04 22 4D 18`).
const MAGIC: u32 = 0x184D_2204;
/// Skippable frames use magics `0x184D2A50..=0x184D2A5F`.
const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// FLG as pierrec writes it: version 01, independent blocks, content checksum.
const FLG_WRITTEN: u8 = 0x64;
/// BD as pierrec writes it: 4 MiB maximum block size.
const BD_WRITTEN: u8 = 0x70;
const FLG_VERSION_MASK: u8 = 0xC0;
const FLG_VERSION_01: u8 = 0x40;
const FLG_BLOCK_INDEPENDENT: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_RESERVED: u8 = 0x02;
const FLG_DICT_ID: u8 = 0x01;
const BD_SIZE_SHIFT: u8 = 4;
const BD_SIZE_MASK: u8 = 0x07;
const BD_RESERVED: u8 = 0x8F;
/// High bit of a block size word: the block is stored uncompressed.
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;
/// Largest data block of the frames we write.
const WRITE_BLOCK_MAX: usize = 4 << 20;
/// Linked blocks may reference this much earlier output.
const WINDOW: usize = 64 << 10;

fn header_checksum(descriptor: &[u8]) -> u8 {
    ((xxh32(descriptor, 0) >> 8) & 0xff) as u8
}

/// Compresses `input` as one LZ4 frame appended to `out`; `scratch` is reused across calls.
pub(crate) fn encode_frame(input: &[u8], scratch: &mut Vec<u8>, out: &mut BytesMut) {
    let bound = lz4_flex::block::get_maximum_output_size(input.len().min(WRITE_BLOCK_MAX));
    if scratch.len() < bound {
        scratch.resize(bound, 0);
    }
    out.reserve(input.len() + 32);
    out.put_u32_le(MAGIC);
    out.put_u8(FLG_WRITTEN);
    out.put_u8(BD_WRITTEN);
    out.put_u8(header_checksum(&[FLG_WRITTEN, BD_WRITTEN]));
    for chunk in input.chunks(WRITE_BLOCK_MAX) {
        match lz4_flex::block::compress_into(chunk, scratch) {
            Ok(n) if n < chunk.len() => {
                out.put_u32_le(n as u32);
                out.extend_from_slice(&scratch[..n]);
            }
            // Incompressible (or a bound error, which cannot happen with the scratch sized
            // above): store it raw like the reference writers do.
            _ => {
                out.put_u32_le(chunk.len() as u32 | BLOCK_UNCOMPRESSED);
                out.extend_from_slice(chunk);
            }
        }
    }
    out.put_u32_le(0);
    out.put_u32_le(xxh32(input, 0));
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| DecodeError::Corrupt("unexpected end of lz4 data".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes one or more concatenated LZ4 frames into `out`; returns the decoded length.
/// Output that does not fit `out` is an error.
pub(crate) fn decode_frames(data: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    let mut c = Cursor { data, pos: 0 };
    let mut written = 0usize;
    let mut first = true;
    while c.pos < data.len() || first {
        let magic = if data.len() - c.pos < 4 {
            if first {
                return Err(DecodeError::BadHeader("lz4: bad magic number".into()));
            }
            return Err(DecodeError::Corrupt(
                "trailing bytes after lz4 frame".into(),
            ));
        } else {
            c.u32()?
        };
        if magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC {
            let n = c.u32()? as usize;
            c.take(n)?;
            first = false;
            continue;
        }
        if magic != MAGIC {
            if first {
                return Err(DecodeError::BadHeader("lz4: bad magic number".into()));
            }
            return Err(DecodeError::Corrupt(
                "trailing bytes after lz4 frame".into(),
            ));
        }
        first = false;
        written = decode_frame_body(&mut c, out, written)?;
    }
    Ok(written)
}

fn decode_frame_body(
    c: &mut Cursor<'_>,
    out: &mut [u8],
    start: usize,
) -> Result<usize, DecodeError> {
    let corrupt = |m: &str| DecodeError::Corrupt(format!("lz4: {m}"));
    let desc_start = c.pos;
    let flg = c.take(1)?[0];
    let bd = c.take(1)?[0];
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 || flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0
    {
        return Err(corrupt("unsupported frame descriptor"));
    }
    let max_block = 1usize << (8 + 2 * usize::from((bd >> BD_SIZE_SHIFT) & BD_SIZE_MASK));
    if (bd >> BD_SIZE_SHIFT) & BD_SIZE_MASK < 4 {
        return Err(corrupt("invalid block maximum size"));
    }
    if flg & FLG_CONTENT_SIZE != 0 {
        c.take(8)?;
    }
    if flg & FLG_DICT_ID != 0 {
        return Err(corrupt("frames with a dictionary are not supported"));
    }
    let hc = c.take(1)?[0];
    if hc != header_checksum(&c.data[desc_start..c.pos - 1]) {
        return Err(corrupt("frame header checksum mismatch"));
    }
    let independent = flg & FLG_BLOCK_INDEPENDENT != 0;
    let mut pos = start;
    loop {
        let word = c.u32()?;
        if word == 0 {
            break;
        }
        let len = (word & !BLOCK_UNCOMPRESSED) as usize;
        if len > max_block {
            return Err(corrupt("block larger than the frame's maximum"));
        }
        let block = c.take(len)?;
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            let want = c.u32()?;
            if xxh32(block, 0) != want {
                return Err(corrupt("block checksum mismatch"));
            }
        }
        if word & BLOCK_UNCOMPRESSED != 0 {
            let dst = out
                .get_mut(pos..pos + len)
                .ok_or_else(|| corrupt("decompressed data exceeds the block size"))?;
            dst.copy_from_slice(block);
            pos += len;
        } else {
            let (prev, rest) = out.split_at_mut(pos);
            let n = if independent || pos == start {
                lz4_flex::block::decompress_into(block, rest)
            } else {
                let dict = &prev[pos.saturating_sub(WINDOW).max(start)..];
                lz4_flex::block::decompress_into_with_dict(block, rest, dict)
            }
            .map_err(|e| corrupt(&format!("{e} (or data exceeds the block size)")))?;
            pos += n;
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        let want = c.u32()?;
        if xxh32(&out[start..pos], 0) != want {
            return Err(corrupt("content checksum mismatch"));
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_pierrec() {
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        let zeros = vec![0u8; 2 << 20];
        encode_frame(&zeros, &mut scratch, &mut out);
        assert_eq!(&out[..7], &[0x04, 0x22, 0x4d, 0x18, 0x64, 0x70, 0xb9]);
        let mut back = vec![1u8; 2 << 20];
        assert_eq!(decode_frames(&out, &mut back).unwrap(), 2 << 20);
        assert!(back.iter().all(|&b| b == 0));
    }

    #[test]
    fn decodes_lz4_flex_linked_frames() {
        use std::io::Write;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i / 7 % 13) as u8).collect();
        let info = lz4_flex::frame::FrameInfo::new()
            .block_mode(lz4_flex::frame::BlockMode::Linked)
            .content_checksum(true)
            .block_checksums(true);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).unwrap();
        let frame = enc.finish().unwrap();
        let mut out = vec![0u8; data.len()];
        assert_eq!(decode_frames(&frame, &mut out).unwrap(), data.len());
        assert_eq!(out, data);
        let mut small = vec![0u8; data.len() - 1];
        assert!(decode_frames(&frame, &mut small).is_err());
        assert!(matches!(
            decode_frames(b"\x1f\x8b\x08\x00", &mut out),
            Err(DecodeError::BadHeader(_))
        ));
    }
}
