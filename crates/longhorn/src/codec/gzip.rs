//! gzip (RFC 1952) with a reused deflate/inflate state. The header matches Go's
//! `gzip.NewWriter` at the default level: `1f 8b 08 00 00 00 00 00 00 ff`.

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Crc, Decompress, FlushCompress, FlushDecompress, Status};

use super::DecodeError;

/// Go's header: magic, CM=deflate, no flags, mtime 0, XFL 0 (default level), OS unknown.
const GO_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
const MAGIC: [u8; 2] = [0x1f, 0x8b];
const CM_DEFLATE: u8 = 8;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FLG_RESERVED: u8 = 0xe0;
const FIXED_HEADER_LEN: usize = 10;
const TRAILER_LEN: usize = 8;
/// Go's `gzip.DefaultCompression` maps to zlib level 6.
pub(crate) const DEFAULT_LEVEL: u32 = 6;
/// Extra room added to the deflate output when it does not fit.
const GROW_STEP: usize = 64 << 10;

/// A reusable deflate state.
pub(crate) fn new_compressor() -> Compress {
    Compress::new(flate2::Compression::new(DEFAULT_LEVEL), false)
}

/// Compresses `input` as one gzip member appended to `out`.
pub(crate) fn encode(
    input: &[u8],
    deflate: &mut Compress,
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
) {
    deflate.reset();
    scratch.clear();
    // Stored-block worst case plus slack; grown below if ever short.
    scratch.reserve(input.len() + input.len() / 1000 + GROW_STEP);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&input[consumed..], scratch, FlushCompress::Finish)
            .expect("deflate on an in-memory buffer cannot fail");
        if status == Status::StreamEnd {
            break;
        }
        scratch.reserve(GROW_STEP);
    }
    let mut crc = Crc::new();
    crc.update(input);
    out.reserve(FIXED_HEADER_LEN + scratch.len() + TRAILER_LEN);
    out.extend_from_slice(&GO_HEADER);
    out.extend_from_slice(scratch);
    out.put_u32_le(crc.sum());
    out.put_u32_le(input.len() as u32);
}

/// Parses a member header; returns the deflate data start.
fn parse_header(data: &[u8]) -> Result<usize, DecodeError> {
    let bad = || DecodeError::BadHeader("gzip: invalid header".into());
    if data.len() < FIXED_HEADER_LEN || data[..2] != MAGIC || data[2] != CM_DEFLATE {
        return Err(bad());
    }
    let flg = data[3];
    if flg & FLG_RESERVED != 0 {
        return Err(bad());
    }
    let mut pos = FIXED_HEADER_LEN;
    let short = || DecodeError::Corrupt("gzip: truncated header".into());
    if flg & FEXTRA != 0 {
        let xlen = data.get(pos..pos + 2).ok_or_else(short)?;
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flg & flag != 0 {
            let nul = data
                .get(pos..)
                .and_then(|d| d.iter().position(|&b| b == 0))
                .ok_or_else(short)?;
            pos += nul + 1;
        }
    }
    if flg & FHCRC != 0 {
        pos += 2;
    }
    if pos > data.len() {
        return Err(short());
    }
    Ok(pos)
}

/// Decodes one or more gzip members into `out`; returns the decoded length.
pub(crate) fn decode(
    data: &[u8],
    inflate: &mut Decompress,
    out: &mut [u8],
) -> Result<usize, DecodeError> {
    let corrupt = |m: String| DecodeError::Corrupt(format!("gzip: {m}"));
    let mut pos = 0usize;
    let mut written = 0usize;
    loop {
        let body = pos
            + parse_header(&data[pos..]).map_err(|e| match e {
                // Only the first member's header decides the codec fallback.
                DecodeError::BadHeader(m) if pos > 0 => DecodeError::Corrupt(m),
                e => e,
            })?;
        inflate.reset(false);
        let member_start = written;
        loop {
            let in_before = inflate.total_in() as usize;
            let out_before = inflate.total_out() as usize;
            let status = inflate
                .decompress(
                    &data[body + in_before..],
                    &mut out[member_start + out_before..],
                    FlushDecompress::Finish,
                )
                .map_err(|e| corrupt(e.to_string()))?;
            let progressed = inflate.total_in() as usize != in_before
                || inflate.total_out() as usize != out_before;
            if status == Status::StreamEnd {
                break;
            }
            if !progressed {
                return Err(
                    if member_start + inflate.total_out() as usize == out.len() {
                        corrupt("decompressed data exceeds the block size".into())
                    } else {
                        corrupt("unexpected end of data".into())
                    },
                );
            }
        }
        written = member_start + inflate.total_out() as usize;
        pos = body + inflate.total_in() as usize;
        let trailer = data
            .get(pos..pos + TRAILER_LEN)
            .ok_or_else(|| corrupt("truncated trailer".into()))?;
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let mut crc = Crc::new();
        crc.update(&out[member_start..written]);
        if crc.sum() != want_crc || (written - member_start) as u32 != want_len {
            return Err(corrupt("checksum error".into()));
        }
        pos += TRAILER_LEN;
        if pos == data.len() {
            return Ok(written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn round_trip_and_interop_with_flate2_streams() {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i % 97) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut c = new_compressor();
        let mut scratch = Vec::new();
        let mut out = BytesMut::new();
        encode(&data, &mut c, &mut scratch, &mut out);
        assert_eq!(&out[..10], &GO_HEADER);
        let mut d = flate2::read::GzDecoder::new(&out[..]);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        // A member with a file name, then a second member: both decode.
        let mut e = flate2::GzBuilder::new()
            .filename("x")
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(&data[..1000]).unwrap();
        let mut two = e.finish().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&data[1000..]).unwrap();
        two.extend(e.finish().unwrap());
        let mut inf = Decompress::new(false);
        let mut buf = vec![0u8; data.len()];
        assert_eq!(decode(&two, &mut inf, &mut buf).unwrap(), data.len());
        assert_eq!(buf, data);
        // Reuse after success; a too-small output is an error.
        let mut small = vec![0u8; data.len() - 1];
        assert!(decode(&out, &mut inf, &mut small).is_err());
        assert!(matches!(
            decode(b"\x04\x22\x4d\x18", &mut inf, &mut buf),
            Err(DecodeError::BadHeader(_))
        ));
    }
}
