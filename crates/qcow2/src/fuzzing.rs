//! Entry points for the cargo-fuzz targets in `fuzz/` and for the stable corpus replay test.
//! Each takes arbitrary bytes and must return without panicking, whatever they hold.

use std::sync::Arc;

use crate::codec;
use crate::header::Header;
use crate::io::MemReadAt;
use crate::reader::{Qcow2Image, ReadOptions};

/// Extents walked at most per input, so that a valid but huge mapping stays fast to fuzz.
pub const MAX_EXTENTS: usize = 1 << 16;
/// Data chunks read at most per input.
pub const MAX_CHUNKS: usize = 64;
/// Output size used by the decompressor targets (one 64 KiB cluster).
pub const DECOMPRESS_OUT: usize = 64 << 10;

/// Parses `data` as the start of an image. Returns whether the header is valid.
pub fn header(data: &[u8]) -> bool {
    Header::parse(data, data.len() as u64).is_ok()
}

/// Opens `data` as a whole image, walks its mapping and reads the first data chunks (which
/// decompresses compressed clusters). Returns the number of extents seen, or `None` if the
/// image, its mapping or its data is rejected.
pub fn mapping(data: &[u8]) -> Option<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    runtime.block_on(async {
        let reader = Arc::new(MemReadAt::new(data.to_vec()));
        let image = Qcow2Image::open(reader).await.ok()?;
        let mut walker = image.extents();
        let mut count = 0;
        while count < MAX_EXTENTS {
            match walker.next().await {
                Ok(Some(e)) => {
                    assert!(e.len > 0, "empty extent {e:?}");
                    assert!(
                        e.guest_end() <= image.virtual_size(),
                        "extent past the end {e:?}"
                    );
                    count += 1;
                }
                Ok(None) => break,
                Err(_) => return None,
            }
        }
        let options = ReadOptions {
            max_read_size: 1 << 20,
            max_in_flight_bytes: 4 << 20,
            concurrency: 2,
        };
        let mut reader = image.data_reader(options);
        for _ in 0..MAX_CHUNKS {
            match reader.next_chunk().await {
                Ok(Some(c)) => {
                    assert!(c.guest_offset + c.data.len() as u64 <= image.virtual_size())
                }
                Ok(None) => break,
                Err(_) => return None,
            }
        }
        Some(count)
    })
}

/// Inflates `data` as one raw-deflate cluster. Returns whether it decoded.
pub fn decompress_deflate(data: &[u8]) -> bool {
    let mut out = vec![0u8; DECOMPRESS_OUT];
    codec::inflate_into(data, &mut out).is_ok()
}

/// Decodes `data` as one zstd cluster. Returns whether it decoded.
pub fn decompress_zstd(data: &[u8]) -> bool {
    let mut out = vec![0u8; DECOMPRESS_OUT];
    codec::zstd_decompress_into(data, &mut out).is_ok()
}
