//! The content digest both ends of a transfer record and check.
//!
//! A plain SHA-256 of a disk costs time in proportion to its *virtual* size: about 15 minutes
//! of CPU for a 1 TiB sparse disk with a few MiB of data. diskferry's digest costs time in
//! proportion to the data instead, and still covers every byte, zeros included:
//!
//! ```text
//! digest = H( H(block 0) || H(block 1) || ... )
//! ```
//!
//! with blocks of [`DIGEST_BLOCK_SIZE`] bytes of the logical disk content (the last one
//! shorter when the size is not a multiple) and `H` the hash of the [`DigestAlgorithm`]:
//! SHA-256 ([`SHA256_BLOCKS`]) or BLAKE3 with its 32-byte output ([`BLAKE3_BLOCKS`]). All-zero
//! full blocks take a precomputed constant, whether they are holes or zeros given as data, so
//! they cost almost nothing. Any tool can recompute it from a raw image, e.g. in Python:
//! `sha256(b"".join(sha256(b).digest() for b in blocks)).hexdigest()` (or the same with
//! `blake3`). The name recorded beside the value is the algorithm's [`DigestAlgorithm::name`];
//! a copy is checked with the algorithm its record names, so digests recorded with SHA-256
//! keep verifying whatever new copies compute ([`DIGEST_ALGORITHM`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use sha2::{Digest as _, Sha256};

/// Block size of the digest's first level.
pub const DIGEST_BLOCK_SIZE: u64 = 1 << 20;
/// The name of the SHA-256 digest ([`DigestAlgorithm::Sha256Blocks`]).
pub const SHA256_BLOCKS: &str = "sha256-of-1MiB-block-sha256s";
/// The name of the BLAKE3 digest ([`DigestAlgorithm::Blake3Blocks`]).
pub const BLAKE3_BLOCKS: &str = "blake3-of-1MiB-block-blake3s";
/// The name of the digest new copies compute and record ([`DigestAlgorithm::DEFAULT`]).
pub const DIGEST_ALGORITHM: &str = DigestAlgorithm::DEFAULT.name();

/// The hash of a content digest: both levels use it. Its [`name`](DigestAlgorithm::name) is
/// recorded beside every digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-256 of the 1 MiB blocks' SHA-256s: [`SHA256_BLOCKS`].
    Sha256Blocks,
    /// BLAKE3 of the 1 MiB blocks' BLAKE3s (32-byte outputs): [`BLAKE3_BLOCKS`].
    Blake3Blocks,
}

impl DigestAlgorithm {
    /// Every algorithm this version computes and checks.
    pub const ALL: [DigestAlgorithm; 2] =
        [DigestAlgorithm::Sha256Blocks, DigestAlgorithm::Blake3Blocks];

    /// What new copies compute: BLAKE3 costs about half the CPU of SHA-256 with SHA-NI per
    /// byte (paired imports: BENCHMARKS.md, "Session 8").
    pub const DEFAULT: DigestAlgorithm = DigestAlgorithm::Blake3Blocks;

    /// The name recorded beside a digest.
    pub const fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256Blocks => SHA256_BLOCKS,
            DigestAlgorithm::Blake3Blocks => BLAKE3_BLOCKS,
        }
    }

    /// The algorithm a recorded name stands for.
    pub fn parse(name: &str) -> Result<DigestAlgorithm, UnknownDigestAlgorithm> {
        DigestAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| UnknownDigestAlgorithm {
                name: name.to_owned(),
            })
    }

    fn hasher(self) -> Hasher {
        match self {
            DigestAlgorithm::Sha256Blocks => Hasher::Sha256(Sha256::new()),
            DigestAlgorithm::Blake3Blocks => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// The block digest of a whole block of zeros, computed once per algorithm.
    /// [`ZERO_BLOCKS_PER_UPDATE`] copies of [`Self::zero_block_hash`] end to end: a run of
    /// zero blocks is fed to the outer hash a batch at a time, not 32 bytes per call (a 1 PiB
    /// empty disk is 2^30 blocks).
    fn zero_block_hashes(self) -> &'static [u8] {
        static SHA256: OnceLock<Vec<u8>> = OnceLock::new();
        static BLAKE3: OnceLock<Vec<u8>> = OnceLock::new();
        let cell = match self {
            DigestAlgorithm::Sha256Blocks => &SHA256,
            DigestAlgorithm::Blake3Blocks => &BLAKE3,
        };
        cell.get_or_init(|| {
            self.zero_block_hash()
                .repeat(ZERO_BLOCKS_PER_UPDATE as usize)
        })
    }

    fn zero_block_hash(self) -> &'static [u8; 32] {
        static SHA256: OnceLock<[u8; 32]> = OnceLock::new();
        static BLAKE3: OnceLock<[u8; 32]> = OnceLock::new();
        let cell = match self {
            DigestAlgorithm::Sha256Blocks => &SHA256,
            DigestAlgorithm::Blake3Blocks => &BLAKE3,
        };
        cell.get_or_init(|| {
            let mut block = self.hasher();
            block.feed_zeros(DIGEST_BLOCK_SIZE);
            block.finalize()
        })
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Serialized as its recorded name.
impl serde::Serialize for DigestAlgorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl std::str::FromStr for DigestAlgorithm {
    type Err = UnknownDigestAlgorithm;

    fn from_str(name: &str) -> Result<DigestAlgorithm, UnknownDigestAlgorithm> {
        DigestAlgorithm::parse(name)
    }
}

/// A recorded digest algorithm name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "digest algorithm {name:?} is not one this diskferry computes (it knows {SHA256_BLOCKS} and \
     {BLAKE3_BLOCKS})"
)]
pub struct UnknownDigestAlgorithm {
    /// The name as recorded.
    pub name: String,
}

/// A digest recorded with a disk, with the algorithm its record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDigest {
    /// The algorithm it was computed with.
    pub algorithm: DigestAlgorithm,
    /// The hex digest.
    pub digest: String,
}

/// A zero buffer for hashing zero runs inside partly written blocks.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// One level's hasher of either algorithm. BLAKE3's state is boxed: it is about 2 KiB.
#[derive(Debug, Clone)]
enum Hasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    fn finalize(self) -> [u8; 32] {
        match self {
            Hasher::Sha256(h) => h.finalize().into(),
            Hasher::Blake3(h) => h.finalize().into(),
        }
    }

    fn feed_zeros(&mut self, mut len: u64) {
        while len > 0 {
            let n = len.min(ZEROS.len() as u64);
            self.update(&ZEROS[..n as usize]);
            len -= n;
        }
    }
}

/// Whole zero blocks fed to the outer hash per call (1 GiB of disk), and between two looks at
/// a [`DigestThread`]'s stop request.
const ZERO_BLOCKS_PER_UPDATE: u64 = 1024;

/// Computes the content digest from data given in increasing offset order; gaps are zeros.
#[derive(Debug, Clone)]
pub struct ContentDigest {
    algorithm: DigestAlgorithm,
    size: u64,
    /// Bytes of the logical content consumed so far.
    position: u64,
    outer: Hasher,
    block: Hasher,
    /// Set when the digest is no longer wanted (a cancelled copy): runs of zeros stop early,
    /// and the result is then meaningless.
    stop: Option<Arc<AtomicBool>>,
}

impl ContentDigest {
    /// A digest of a disk of `size` bytes with the algorithm new copies use.
    pub fn new(size: u64) -> ContentDigest {
        ContentDigest::with_algorithm(DigestAlgorithm::DEFAULT, size)
    }

    /// A digest of a disk of `size` bytes with `algorithm`.
    pub fn with_algorithm(algorithm: DigestAlgorithm, size: u64) -> ContentDigest {
        ContentDigest {
            algorithm,
            size,
            position: 0,
            outer: algorithm.hasher(),
            block: algorithm.hasher(),
            stop: None,
        }
    }

    /// This digest, giving up its runs of zeros once `stop` is set.
    fn stopping_on(mut self, stop: Arc<AtomicBool>) -> ContentDigest {
        self.stop = Some(stop);
        self
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
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
            let block = std::mem::replace(&mut self.block, self.algorithm.hasher());
            self.outer.update(&block.finalize());
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
                // Whole zero blocks: the constant each, no hashing of zeros, a batch at a time.
                if self.stopped() {
                    return;
                }
                let blocks =
                    ((offset - self.position) / DIGEST_BLOCK_SIZE).min(ZERO_BLOCKS_PER_UPDATE);
                let hash_len = self.algorithm.zero_block_hash().len();
                let hashes = self.algorithm.zero_block_hashes();
                self.outer.update(&hashes[..blocks as usize * hash_len]);
                self.position += blocks * DIGEST_BLOCK_SIZE;
                continue;
            }
            let run = offset.min(block_end) - self.position;
            self.block.feed_zeros(run);
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
                self.outer.update(self.algorithm.zero_block_hash());
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

    /// The digest of a whole in-memory disk, for tests and small inputs, with the algorithm
    /// new copies use.
    pub fn of(content: &[u8]) -> String {
        ContentDigest::of_with(DigestAlgorithm::DEFAULT, content)
    }

    /// The digest of a whole in-memory disk with `algorithm`.
    pub fn of_with(algorithm: DigestAlgorithm, content: &[u8]) -> String {
        let mut digest = ContentDigest::with_algorithm(algorithm, content.len() as u64);
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
    /// Asks the thread to give up ([`DigestThread::stop`]).
    stop: Arc<AtomicBool>,
}

impl DigestThread {
    /// Starts the digest of a disk of `size` bytes with the algorithm new copies use.
    pub fn spawn(size: u64) -> crate::Result<DigestThread> {
        DigestThread::spawn_with(DigestAlgorithm::DEFAULT, size)
    }

    /// Starts the digest of a disk of `size` bytes with `algorithm`.
    pub fn spawn_with(algorithm: DigestAlgorithm, size: u64) -> crate::Result<DigestThread> {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<(u64, bytes::Bytes)>(DIGEST_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("diskferry-digest".into())
            .spawn(move || {
                let mut digest =
                    ContentDigest::with_algorithm(algorithm, size).stopping_on(stopping);
                while let Some((offset, data)) = receiver.blocking_recv() {
                    if digest.stopped() {
                        break;
                    }
                    digest.data(offset, &data);
                }
                digest.finish()
            })
            .map_err(|e| crate::Error::io("start the digest thread", e))?;
        Ok(DigestThread {
            sender,
            thread,
            stop,
        })
    }

    /// Asks the thread to give up: the copy failed or was cancelled, and its digest will not
    /// be used. A long run of zeros (a huge sparse disk) then ends within a batch.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// [`DigestThread::finish`] without blocking the runtime, and given up when `cancel` is
    /// cancelled first ([`crate::Error::Cancelled`]): the digest of a huge sparse disk's last
    /// zeros can take a while, and an interrupt must not wait for it.
    pub async fn finish_unless_cancelled(
        self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> crate::Result<String> {
        let DigestThread {
            sender,
            thread,
            stop,
        } = self;
        drop(sender);
        let mut joined = tokio::task::spawn_blocking(move || thread.join());
        let result = tokio::select! {
            biased;
            joined = &mut joined => joined,
            _ = cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                let _ = joined.await;
                return Err(crate::Error::Cancelled);
            }
        };
        match result {
            Ok(Ok(digest)) => Ok(digest),
            _ => Err(digest_thread_died()),
        }
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

    /// The definition, straight from the primitive crates: `H(H(block 0) || H(block 1) ...)`.
    fn reference(algorithm: DigestAlgorithm, content: &[u8]) -> String {
        let blocks = content.chunks(DIGEST_BLOCK_SIZE as usize);
        match algorithm {
            DigestAlgorithm::Sha256Blocks => {
                let mut outer = Sha256::new();
                for block in blocks {
                    outer.update(Sha256::digest(block));
                }
                hex::encode(outer.finalize())
            }
            DigestAlgorithm::Blake3Blocks => {
                let mut outer = blake3::Hasher::new();
                for block in blocks {
                    outer.update(blake3::hash(block).as_bytes());
                }
                outer.finalize().to_hex().to_string()
            }
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn names_parse_back_and_unknown_names_are_refused_naming_the_known_ones() {
        for algorithm in DigestAlgorithm::ALL {
            assert_eq!(DigestAlgorithm::parse(algorithm.name()), Ok(algorithm));
            assert_eq!(algorithm.to_string().parse(), Ok(algorithm));
        }
        assert_eq!(SHA256_BLOCKS, "sha256-of-1MiB-block-sha256s");
        assert_eq!(BLAKE3_BLOCKS, "blake3-of-1MiB-block-blake3s");
        assert_eq!(DIGEST_ALGORITHM, DigestAlgorithm::DEFAULT.name());
        let error = DigestAlgorithm::parse("md5-of-everything").unwrap_err();
        let message = error.to_string();
        for part in ["\"md5-of-everything\"", SHA256_BLOCKS, BLAKE3_BLOCKS] {
            assert!(message.contains(part), "{message:?} lacks {part}");
        }
    }

    #[test]
    fn small_inputs_match_known_answers_from_the_primitive_crates() {
        // One block: the outer hash of the single inner digest, computed here directly.
        let abc_sha = hex::encode(Sha256::digest(Sha256::digest(b"abc")));
        let abc_blake = blake3::hash(blake3::hash(b"abc").as_bytes())
            .to_hex()
            .to_string();
        assert_eq!(
            ContentDigest::of_with(DigestAlgorithm::Sha256Blocks, b"abc"),
            abc_sha
        );
        assert_eq!(
            ContentDigest::of_with(DigestAlgorithm::Blake3Blocks, b"abc"),
            abc_blake
        );
        // An empty disk has no blocks: the outer hash of nothing.
        assert_eq!(
            ContentDigest::of_with(DigestAlgorithm::Sha256Blocks, b""),
            hex::encode(Sha256::digest(b""))
        );
        assert_eq!(
            ContentDigest::of_with(DigestAlgorithm::Blake3Blocks, b""),
            blake3::hash(b"").to_hex().to_string()
        );
        assert_ne!(abc_sha, abc_blake);
    }

    #[test]
    fn zero_block_constants_are_the_hash_of_a_zero_block() {
        let zeros = vec![0u8; DIGEST_BLOCK_SIZE as usize];
        let sha: [u8; 32] = Sha256::digest(&zeros).into();
        assert_eq!(DigestAlgorithm::Sha256Blocks.zero_block_hash(), &sha);
        assert_eq!(
            DigestAlgorithm::Blake3Blocks.zero_block_hash(),
            blake3::hash(&zeros).as_bytes()
        );
    }

    #[test]
    fn matches_the_definition_for_whole_inputs() {
        let mib = DIGEST_BLOCK_SIZE as usize;
        for algorithm in DigestAlgorithm::ALL {
            for len in [0, 1, 4096, mib - 1, mib, mib + 1, 3 * mib + 12345] {
                let data = sample(len);
                assert_eq!(
                    ContentDigest::of_with(algorithm, &data),
                    reference(algorithm, &data),
                    "{algorithm} len {len}"
                );
            }
        }
        let data = sample(4096);
        assert_eq!(
            ContentDigest::of(&data),
            reference(DigestAlgorithm::DEFAULT, &data)
        );
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
        for algorithm in DigestAlgorithm::ALL {
            let mut digest = ContentDigest::with_algorithm(algorithm, size as u64);
            for &(off, len) in &pieces {
                digest.data(off as u64, &content[off..off + len]);
            }
            assert_eq!(
                digest.finish(),
                reference(algorithm, &content),
                "{algorithm}"
            );
        }
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
        for algorithm in DigestAlgorithm::ALL {
            let expected = reference(algorithm, &content);
            for split in [1, 4096, mib / 2, mib, mib + 3] {
                let mut digest = ContentDigest::with_algorithm(algorithm, size as u64);
                for (i, piece) in content.chunks(split).enumerate() {
                    digest.data((i * split) as u64, piece);
                }
                assert_eq!(digest.finish(), expected, "{algorithm} split {split}");
            }
            let zeros = vec![0u8; 2 * mib + 7];
            assert_eq!(
                ContentDigest::of_with(algorithm, &zeros),
                reference(algorithm, &zeros)
            );
        }
    }

    #[test]
    fn a_sparse_disk_and_the_same_disk_dense_have_one_digest() {
        let mib = DIGEST_BLOCK_SIZE as usize;
        let size = 4 * mib + 300;
        let mut dense = vec![0u8; size];
        let data = sample(5000);
        dense[2 * mib + 10..2 * mib + 5010].copy_from_slice(&data);
        for algorithm in DigestAlgorithm::ALL {
            let mut sparse = ContentDigest::with_algorithm(algorithm, size as u64);
            sparse.data(2 * mib as u64 + 10, &data);
            assert_eq!(
                sparse.finish(),
                ContentDigest::of_with(algorithm, &dense),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn an_all_zero_disk_uses_the_constant_and_matches_the_definition() {
        let content = vec![0u8; 3 * DIGEST_BLOCK_SIZE as usize + 5];
        for algorithm in DigestAlgorithm::ALL {
            assert_eq!(
                ContentDigest::with_algorithm(algorithm, content.len() as u64).finish(),
                reference(algorithm, &content),
                "{algorithm}"
            );
        }
    }

    /// Runs of zero blocks longer than a batch ([`ZERO_BLOCKS_PER_UPDATE`]), between data
    /// and before a short last block, against the definition written out by hand.
    #[test]
    fn long_zero_runs_fed_in_batches_match_the_definition() {
        let zero_blocks = 2 * ZERO_BLOCKS_PER_UPDATE + 3;
        let size = (zero_blocks + 1) * DIGEST_BLOCK_SIZE + 300;
        let first = sample(DIGEST_BLOCK_SIZE as usize);
        let last = sample(300);
        for algorithm in DigestAlgorithm::ALL {
            let mut digest = ContentDigest::with_algorithm(algorithm, size);
            digest.data(0, &first);
            digest.data(size - 300, &last);
            let mut outer = algorithm.hasher();
            let block_hash = |data: &[u8]| {
                let mut h = algorithm.hasher();
                h.update(data);
                h.finalize()
            };
            outer.update(&block_hash(&first));
            for _ in 0..zero_blocks {
                outer.update(algorithm.zero_block_hash());
            }
            outer.update(&block_hash(&last));
            assert_eq!(
                digest.finish(),
                hex::encode(outer.finalize()),
                "{algorithm}"
            );
        }
    }

    /// A stopped digest gives up a run of zeros at once (a 1 PiB empty disk would otherwise
    /// take minutes), and so does its thread.
    #[tokio::test]
    async fn a_stopped_digest_thread_ends_within_a_batch() {
        let thread = DigestThread::spawn_with(DigestAlgorithm::DEFAULT, 1 << 50).unwrap();
        thread.stop();
        let started = std::time::Instant::now();
        let cancel = tokio_util::sync::CancellationToken::new();
        thread.finish_unless_cancelled(&cancel).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));

        let thread = DigestThread::spawn_with(DigestAlgorithm::DEFAULT, 1 << 50).unwrap();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            canceller.cancel();
        });
        let err = thread.finish_unless_cancelled(&cancel).await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[tokio::test]
    async fn the_digest_thread_computes_the_algorithm_it_was_given() {
        let content = sample(3 * DIGEST_BLOCK_SIZE as usize + 9);
        for algorithm in DigestAlgorithm::ALL {
            let thread = DigestThread::spawn_with(algorithm, content.len() as u64).unwrap();
            thread
                .data(0, bytes::Bytes::copy_from_slice(&content))
                .await
                .unwrap();
            assert_eq!(
                thread.finish().unwrap(),
                reference(algorithm, &content),
                "{algorithm}"
            );
        }
    }
}
