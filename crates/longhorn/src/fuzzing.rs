//! Entry points for the cargo-fuzz targets in `fuzz/` and for the stable corpus replay test
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes from a backup store and must return
//! without panicking, whatever they hold; what they accept must survive being written back.

use bytes::Bytes;

use crate::cfg::{BackupConfig, LockFile, VolumeConfig};
use crate::codec::{BlockDecoder, Compression};
use crate::error::{Error, Result};

/// Block sizes the block decoder target picks from with its first byte: the smallest Longhorn
/// allows, a small one, and the default 2 MiB (the largest, 64 MiB, only costs time).
pub const DECODE_BLOCK_SIZES: [u64; 3] = [4 << 10, 64 << 10, 2 << 20];

/// Decode methods, picked by the first byte too.
const DECODE_METHODS: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Lz4];

/// Parses `data` as a `volume.cfg`. What is accepted is written back as Longhorn writes it,
/// and that must read back to the same configuration. Returns whether it was accepted.
pub fn volume_cfg(data: &[u8]) -> bool {
    let Ok(v) = VolumeConfig::from_json(data, "volume.cfg") else {
        return false;
    };
    v.compression()
        .expect("an accepted volume.cfg has a known compression");
    let _ = v.data_engine();
    assert_round_trip("volume.cfg", &v, v.to_json(), VolumeConfig::from_json);
    true
}

/// Parses `data` as a `backup_<name>.cfg`, checks its blocks against its own size and writes
/// it back (which must read back the same). Returns whether it was accepted.
pub fn backup_cfg(data: &[u8]) -> bool {
    let Ok(b) = BackupConfig::from_json(data, "backup_b.cfg") else {
        return false;
    };
    b.compression()
        .expect("an accepted backup cfg has a known compression");
    b.block_size()
        .expect("an accepted backup cfg has a valid block size");
    let _ = b.in_progress();
    let _ = b.check_within(b.size, "backup_b.cfg");
    assert_round_trip("backup_b.cfg", &b, b.to_json(), BackupConfig::from_json);
    true
}

/// Parses `data` as a lock file (`locks/lock-*.lck`) and writes it back, which must read back
/// the same. Returns whether it was accepted.
pub fn lock_file(data: &[u8]) -> bool {
    let Ok(l) = LockFile::from_json(data, "locks/lock-0123456789abcdef.lck") else {
        return false;
    };
    assert_round_trip("lock file", &l, l.to_json(), LockFile::from_json);
    true
}

/// Reads `written`, what the writer made of `value` (a file called `what`), back with `read`:
/// the writer's output must be accepted and give `value` again.
fn assert_round_trip<T: PartialEq + std::fmt::Debug>(
    what: &str,
    value: &T,
    written: String,
    read: impl Fn(&[u8], &str) -> Result<T>,
) {
    let again = read(written.as_bytes(), what)
        .unwrap_or_else(|e| panic!("{what} as we wrote it is refused: {e}\n{written}"));
    assert_eq!(&again, value, "{what} changed on its way through {written}");
}

/// Decodes `data[1..]` as one block with the method and block size `data[0]` picks (see
/// [`DECODE_BLOCK_SIZES`]). A block that decodes to the wrong checksum is decoded again with
/// the checksum it had, through the same (reused) decoder: it must then be accepted and come
/// out the same. Returns whether the block decoded to a full block.
pub fn block_decode(data: &[u8]) -> bool {
    let Some((&selector, payload)) = data.split_first() else {
        return false;
    };
    let method = DECODE_METHODS[usize::from(selector) % DECODE_METHODS.len()];
    let block_size =
        DECODE_BLOCK_SIZES[usize::from(selector) / DECODE_METHODS.len() % DECODE_BLOCK_SIZES.len()];
    let payload = Bytes::copy_from_slice(payload);
    let mut decoder = BlockDecoder::new();
    let wrong = "0".repeat(64);
    match decoder.decode(method, &payload, block_size, &wrong, 0) {
        Ok(block) => {
            assert_eq!(block.len() as u64, block_size);
            true
        }
        Err(Error::ChecksumMismatch { actual, .. }) => {
            let block = decoder
                .decode(method, &payload, block_size, &actual, 0)
                .unwrap_or_else(|e| panic!("second decode of the same block failed: {e}"));
            assert_eq!(block.len() as u64, block_size);
            assert_eq!(crate::codec::checksum_hex(&block), actual);
            true
        }
        Err(_) => false,
    }
}
