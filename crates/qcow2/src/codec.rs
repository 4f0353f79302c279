//! Cluster codecs: raw deflate and zstd, one cluster at a time, with codec state kept per
//! thread (allocating a codec per cluster costs more than the work itself).
//!
//! Decompression writes into a caller-sized output buffer and never past it, so a crafted
//! cluster cannot make us allocate more than one cluster.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::DParameter;

/// Largest zstd window a cluster may ask for: 2^22 = 4 MiB, twice the largest cluster. Bounds
/// the decoder's memory against crafted frames (zstd's own default allows 128 MiB).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 22;

/// Compression codec for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Raw deflate (no zlib header), levels 0..=9.
    Deflate {
        /// Compression level.
        level: u32,
    },
    /// zstd, levels 1..=22 (negative levels are the fast modes).
    Zstd {
        /// Compression level.
        level: i32,
    },
}

impl Codec {
    /// The codec's name, as qemu-img's `compression_type` option spells it: `deflate`
    /// (qemu's `zlib`) or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Deflate { .. } => "deflate",
            Codec::Zstd { .. } => "zstd",
        }
    }
}

/// The codec's [name](Codec::name); the level is not part of it.
impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a codec's [name](Codec::name), `deflate` or `zstd`, at its default level (what
/// qemu uses: [`DEFLATE_DEFAULT_LEVEL`], [`ZSTD_DEFAULT_LEVEL`]).
impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Codec, String> {
        match s {
            "deflate" => Ok(Codec::Deflate {
                level: DEFLATE_DEFAULT_LEVEL,
            }),
            "zstd" => Ok(Codec::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            }),
            other => Err(format!(
                "unknown qcow2 cluster compression {other:?}; expected deflate or zstd"
            )),
        }
    }
}

/// Bytes added to the deflate output buffer beyond 1/8 growth (headers of stored blocks).
const DEFLATE_SLACK: usize = 64;

/// Highest deflate level.
pub const DEFLATE_MAX_LEVEL: u32 = 9;
/// Default deflate level (qemu uses zlib's default, 6).
pub const DEFLATE_DEFAULT_LEVEL: u32 = 6;
/// Default zstd level (qemu uses zstd's default, 3).
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
/// Deflate window: 4 KiB (2^12), as qemu writes and reads compressed clusters
/// (`deflateInit2(.., -12, ..)` / `inflateInit2(.., -12)` in `block/qcow2-threads.c`). A larger
/// window could emit back-references that a reader with qemu's window may reject, and the
/// side-by-side benchmark must compress with qemu's parameters.
pub const DEFLATE_WINDOW_BITS: u8 = 12;

thread_local! {
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static ZSTD_DECODER: RefCell<Option<Decoder<'static>>> = const { RefCell::new(None) };
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static ZSTD_ENCODER: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Inflates raw deflate `input` until `out` is full. Trailing input (sector padding) is
/// ignored, as qemu does. Fails if the stream ends or breaks before `out` is full.
pub fn inflate_into(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    INFLATE.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        let mut in_pos = 0usize;
        let mut out_pos = 0usize;
        // Each round either makes progress or returns; inflate output is bounded by `out`.
        while out_pos < out.len() {
            let before = (d.total_in(), d.total_out());
            let status = d
                .decompress(
                    &input[in_pos..],
                    &mut out[out_pos..],
                    FlushDecompress::Finish,
                )
                .map_err(|e| format!("corrupt deflate stream: {e}"))?;
            in_pos = d.total_in() as usize;
            out_pos = d.total_out() as usize;
            if out_pos >= out.len() {
                break;
            }
            if status == Status::StreamEnd {
                return Err(format!(
                    "deflate stream ended after {out_pos} bytes, expected {}",
                    out.len()
                ));
            }
            if (d.total_in(), d.total_out()) == before {
                return Err(format!(
                    "deflate stream truncated after {out_pos} of {} bytes",
                    out.len()
                ));
            }
        }
        Ok(())
    })
}

/// Decodes zstd `input` (one or more frames) until `out` is full; trailing input is ignored.
pub fn zstd_decompress_into(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    ZSTD_DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut d = Decoder::new().map_err(|e| format!("zstd decoder: {e}"))?;
            d.set_parameter(DParameter::WindowLogMax(ZSTD_MAX_WINDOW_LOG))
                .map_err(|e| format!("zstd decoder: {e}"))?;
            *slot = Some(d);
        }
        let d = slot.as_mut().expect("decoder just set");
        d.reinit().map_err(|e| format!("zstd decoder reset: {e}"))?;
        let mut inb = InBuffer::around(input);
        let mut outb = OutBuffer::around(out);
        let cap = outb.capacity();
        while outb.pos() < cap {
            let before = (inb.pos(), outb.pos());
            let result = d.run(&mut inb, &mut outb);
            if let Err(e) = result {
                // The session is unusable after an error; start afresh next time.
                *slot = None;
                return Err(format!("corrupt zstd data: {e}"));
            }
            if (inb.pos(), outb.pos()) == before {
                return Err(format!(
                    "zstd data truncated after {} of {cap} bytes",
                    outb.pos()
                ));
            }
        }
        Ok(())
    })
}

/// Compresses `input` into `out` (cleared first), giving up as soon as the result would not
/// fit in `limit` bytes. Returns whether it fit.
pub fn compress_into(
    codec: Codec,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, String> {
    out.clear();
    match codec {
        Codec::Deflate { level } => DEFLATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                let c = Compress::new_with_window_bits(
                    Compression::new(level),
                    false,
                    DEFLATE_WINDOW_BITS,
                );
                *slot = Some((level, c));
            }
            let (_, c) = slot.as_mut().expect("compressor just set");
            c.reset();
            // Room for the worst case (deflate bound plus slack): zlib-rs panics when a
            // finishing stream meets a too-small buffer, so the limit is checked afterwards.
            out.reserve(input.len() + input.len() / 8 + DEFLATE_SLACK);
            let status = c
                .compress_vec(input, out, FlushCompress::Finish)
                .map_err(|e| format!("deflate: {e}"))?;
            Ok(status == Status::StreamEnd && out.len() <= limit)
        }),
        Codec::Zstd { level } => ZSTD_ENCODER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                let c = zstd::bulk::Compressor::new(level).map_err(|e| format!("zstd: {e}"))?;
                *slot = Some((level, c));
            }
            let (_, c) = slot.as_mut().expect("compressor just set");
            out.reserve(limit);
            out.truncate(0);
            let spare = out.capacity().min(limit);
            out.resize(spare, 0);
            match c.compress_to_buffer(input, &mut out[..]) {
                Ok(n) => {
                    out.truncate(n);
                    Ok(true)
                }
                // zstd reports "destination buffer too small" as an error: the cluster stays raw.
                Err(_) => {
                    out.clear();
                    Ok(false)
                }
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_parse_back_at_the_default_level() {
        for codec in [
            Codec::Deflate {
                level: DEFLATE_DEFAULT_LEVEL,
            },
            Codec::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            },
        ] {
            assert_eq!(codec.to_string().parse::<Codec>(), Ok(codec));
        }
        let err = "zlib".parse::<Codec>().unwrap_err();
        assert!(err.contains("\"zlib\""), "{err}");
    }
}
