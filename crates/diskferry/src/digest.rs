//! The content digest both ends of a transfer record and check.
//!
//! A plain SHA-256 of a disk costs time in proportion to its *virtual* size: about 15 minutes
//! of CPU for a 1 TiB sparse disk with a few MiB of data. diskferry's digest costs time in
//! proportion to the data instead, and still covers every byte, zeros included:
//!
//! ```text
//! digest = SHA-256( SHA-256(block 0) || SHA-256(block 1) || ... )
//! ```
//!
//! with blocks of [`DIGEST_BLOCK_SIZE`] bytes of the logical disk content (the last one
//! shorter when the size is not a multiple). All-zero full blocks take a precomputed
//! constant, whether they are holes or zeros given as data, so they cost almost nothing.
//! Any tool can recompute it from a raw image, e.g. in Python:
//! `sha256(b"".join(sha256(b).digest() for b in blocks)).hexdigest()`.
//! The name recorded beside the value is [`DIGEST_ALGORITHM`].

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// Block size of the digest's first level.
pub const DIGEST_BLOCK_SIZE: u64 = 1 << 20;
/// The name of the digest, recorded in image metadata and reports.
pub const DIGEST_ALGORITHM: &str = "sha256-of-1MiB-block-sha256s";

/// A zero buffer for hashing zero runs inside partly written blocks.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

fn zero_block_hash() -> &'static [u8; 32] {
    static HASH: OnceLock<[u8; 32]> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut block = Sha256::new();
        feed_zeros(&mut block, DIGEST_BLOCK_SIZE);
        block.finalize().into()
    })
}

fn feed_zeros(hasher: &mut Sha256, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64);
        hasher.update(&ZEROS[..n as usize]);
        len -= n;
    }
}

/// Computes the content digest from data given in increasing offset order; gaps are zeros.
#[derive(Debug, Clone)]
pub struct ContentDigest {
    size: u64,
    /// Bytes of the logical content consumed so far.
    position: u64,
    outer: Sha256,
    block: Sha256,
}

impl ContentDigest {
    /// A digest of a disk of `size` bytes.
    pub fn new(size: u64) -> ContentDigest {
        ContentDigest {
            size,
            position: 0,
            outer: Sha256::new(),
            block: Sha256::new(),
        }
    }

    /// The disk size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn block_end(&self) -> u64 {
        ((self.position / DIGEST_BLOCK_SIZE + 1) * DIGEST_BLOCK_SIZE).min(self.size)
    }

    fn close_block_if_full(&mut self) {
        let at_boundary =
            self.position.is_multiple_of(DIGEST_BLOCK_SIZE) || self.position == self.size;
        if self.position > 0 && at_boundary {
            let block = std::mem::take(&mut self.block);
            self.outer.update(block.finalize());
        }
    }

    /// Consumes zeros up to `offset`.
    pub fn zeros_until(&mut self, offset: u64) {
        let offset = offset.min(self.size);
        while self.position < offset {
            let block_start = self.position.is_multiple_of(DIGEST_BLOCK_SIZE);
            let block_end = self.block_end();
            if block_start && offset >= block_end && block_end - self.position == DIGEST_BLOCK_SIZE
            {
                // A whole zero block: the constant, no hashing of zeros.
                self.outer.update(zero_block_hash());
                self.position = block_end;
                continue;
            }
            let run = offset.min(block_end) - self.position;
            feed_zeros(&mut self.block, run);
            self.position += run;
            self.close_block_if_full();
        }
    }

    /// Consumes data at `offset` (at or after the current position; the gap is zeros).
    ///
    /// # Panics
    /// If `offset` is before the current position or the data runs past the size: the
    /// pipeline checks both before calling.
    pub fn data(&mut self, offset: u64, mut data: &[u8]) {
        assert!(offset >= self.position, "digest input out of order");
        assert!(
            offset + data.len() as u64 <= self.size,
            "digest input past the end"
        );
        self.zeros_until(offset);
        while !data.is_empty() {
            let take = (self.block_end() - self.position).min(data.len() as u64) as usize;
            if take as u64 == DIGEST_BLOCK_SIZE && crate::is_zero(&data[..take]) {
                // A whole block of zeros inside the data (an allocated zero cluster, a zeroed
                // region of a raw file): the constant, as for a hole. The zero check stops at
                // the first nonzero 64 bytes, so it costs next to nothing on other data, and
                // hashing the block would cost about 15 times as much as checking it whole.
                self.outer.update(zero_block_hash());
                self.position += take as u64;
                data = &data[take..];
                continue;
            }
            self.block.update(&data[..take]);
            self.position += take as u64;
            data = &data[take..];
            self.close_block_if_full();
        }
    }

    /// Consumes the zeros up to the end and returns the hex digest.
    pub fn finish(mut self) -> String {
        self.zeros_until(self.size);
        hex::encode(self.outer.finalize())
    }

    /// The digest of a whole in-memory disk, for tests and small inputs.
    pub fn of(content: &[u8]) -> String {
        let mut digest = ContentDigest::new(content.len() as u64);
        digest.data(0, content);
        digest.finish()
    }
}

/// Extents queued for a [`DigestThread`] at most; the sender waits when it is behind.
pub const DIGEST_QUEUE: usize = 8;

/// A [`ContentDigest`] computed on a thread of its own, fed through a bounded queue, so that
/// hashing overlaps the I/O of whoever feeds it.
#[derive(Debug)]
pub struct DigestThread {
    sender: tokio::sync::mpsc::Sender<(u64, bytes::Bytes)>,
    thread: std::thread::JoinHandle<String>,
}

impl DigestThread {
    /// Starts the digest of a disk of `size` bytes.
    pub fn spawn(size: u64) -> crate::Result<DigestThread> {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<(u64, bytes::Bytes)>(DIGEST_QUEUE);
        let thread = std::thread::Builder::new()
            .name("diskferry-digest".into())
            .spawn(move || {
                let mut digest = ContentDigest::new(size);
                while let Some((offset, data)) = receiver.blocking_recv() {
                    digest.data(offset, &data);
                }
                digest.finish()
            })
            .map_err(|e| crate::Error::io("start the digest thread", e))?;
        Ok(DigestThread { sender, thread })
    }

    /// Queues data at `offset` (in increasing order, inside the size). Fails only if the
    /// thread died, which [`DigestThread::finish`] then reports.
    pub async fn data(&self, offset: u64, data: bytes::Bytes) -> crate::Result<()> {
        self.sender
            .send((offset, data))
            .await
            .map_err(|_| digest_thread_died())
    }

    /// Waits for the digest of everything queued.
    pub fn finish(self) -> crate::Result<String> {
        drop(self.sender);
        self.thread.join().map_err(|_| digest_thread_died())
    }
}

fn digest_thread_died() -> crate::Error {
    crate::Error::io(
        "compute the content digest",
        std::io::Error::other("the digest thread panicked"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(content: &[u8]) -> String {
        let mut outer = Sha256::new();
        for block in content.chunks(DIGEST_BLOCK_SIZE as usize) {
            outer.update(Sha256::digest(block));
        }
        hex::encode(outer.finalize())
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn matches_the_definition_for_whole_inputs() {
        let mib = DIGEST_BLOCK_SIZE as usize;
        for len in [0, 1, 4096, mib - 1, mib, mib + 1, 3 * mib + 12345] {
            let data = sample(len);
            assert_eq!(ContentDigest::of(&data), reference(&data), "len {len}");
        }
    }

    #[test]
    fn gaps_hash_as_zeros_whatever_the_split() {
        let mib = DIGEST_BLOCK_SIZE as usize;
        let size = 5 * mib + 777;
        let mut content = vec![0u8; size];
        let pieces = [
            (10usize, 100usize),
            (mib - 50, 100),
            (3 * mib, mib),
            (5 * mib + 700, 77),
        ];
        for &(off, len) in &pieces {
            content[off..off + len].copy_from_slice(&sample(len));
        }
        let mut digest = ContentDigest::new(size as u64);
        for &(off, len) in &pieces {
            digest.data(off as u64, &content[off..off + len]);
        }
        assert_eq!(digest.finish(), reference(&content));
    }

    #[test]
    fn zero_blocks_given_as_data_match_the_definition() {
        // Whole zero blocks inside data, at and off block boundaries, beside a block that is
        // zero but for its last byte and a zero block cut short by the end of the disk.
        let mib = DIGEST_BLOCK_SIZE as usize;
        let size = 6 * mib + 100;
        let mut content = vec![0u8; size];
        content[..mib / 2].copy_from_slice(&sample(mib / 2));
        content[4 * mib - 1] = 1;
        content[5 * mib + 10] = 9;
        for split in [1, 4096, mib / 2, mib, mib + 3] {
            let mut digest = ContentDigest::new(size as u64);
            for (i, piece) in content.chunks(split).enumerate() {
                digest.data((i * split) as u64, piece);
            }
            assert_eq!(digest.finish(), reference(&content), "split {split}");
        }
        let zeros = vec![0u8; 2 * mib + 7];
        assert_eq!(ContentDigest::of(&zeros), reference(&zeros));
    }

    #[test]
    fn an_all_zero_disk_uses_the_constant_and_matches_the_definition() {
        let content = vec![0u8; 3 * DIGEST_BLOCK_SIZE as usize + 5];
        assert_eq!(
            ContentDigest::new(content.len() as u64).finish(),
            reference(&content)
        );
    }
}
