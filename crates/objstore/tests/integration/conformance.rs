//! The conformance suite every `RangeRead` and every `ObjectWriter` runs (in the style of
//! object_store's `integration.rs`): generic functions, called by each store's tests.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use objstore::{ranges, read_range_parallel, Error, ObjectWriter, RangeRead};

use crate::support::pattern;

/// Size of the object the read suite expects: not a multiple of any chunk used.
pub const READ_SIZE: usize = 300 * 1024 + 17;

/// Exact ranges, zero-length reads, past-EOF errors, concurrent reads and the ordered
/// parallel fetcher, against an object holding `expected`.
pub async fn range_read(reader: Arc<dyn RangeRead>, expected: &[u8]) {
    let n = expected.len();
    let what = reader.describe();
    assert_eq!(reader.size(), n as u64, "{what}: size");

    for (off, len) in [
        (0, 1),
        (0, n),
        (n - 1, 1),
        (n / 3, n / 3),
        (n / 2, 4097),
        (12345, 1),
    ] {
        let got = reader.read_at(off as u64, len).await.unwrap();
        assert_eq!(got.len(), len, "{what}: length of {off}+{len}");
        assert!(
            got[..] == expected[off..off + len],
            "{what}: bytes of {off}+{len}"
        );
    }

    for off in [0, n / 2, n] {
        let got = reader.read_at(off as u64, 0).await.unwrap();
        assert!(got.is_empty(), "{what}: zero-length read at {off}");
    }

    for (off, len) in [(n - 1, 2), (n, 1), (n + 10, 1), (n + 1, 0)] {
        let err = reader.read_at(off as u64, len).await.unwrap_err();
        assert!(
            matches!(err, Error::ShortRead { .. }),
            "{what}: {off}+{len} gave {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&what),
            "{what}: error does not name the object: {msg}"
        );
    }

    // Many tasks sharing one reader.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let r = Arc::clone(&reader);
            tokio::spawn(async move { (i, r.read_at(i * 1000, 999).await) })
        })
        .collect();
    for t in tasks {
        let (i, res) = t.await.unwrap();
        let off = (i * 1000) as usize;
        assert!(
            res.unwrap()[..] == expected[off..off + 999],
            "{what}: concurrent read {i}"
        );
    }

    // Ordered parallel fetch of an unaligned sub-range.
    let (start, end, chunk) = (3u64, n as u64 - 5, 4096 + 7);
    let items: Vec<_> = ranges(Arc::clone(&reader), start, end, chunk, 4)
        .collect()
        .await;
    let mut next = start;
    let mut joined = Vec::new();
    for item in items {
        let (off, bytes) = item.unwrap();
        assert_eq!(off, next, "{what}: ranges() out of order");
        assert!(bytes.len() <= chunk);
        next += bytes.len() as u64;
        joined.extend_from_slice(&bytes);
    }
    assert_eq!(next, end, "{what}: ranges() did not reach the end");
    assert!(
        joined[..] == expected[start as usize..end as usize],
        "{what}: ranges() bytes"
    );

    let all = read_range_parallel(Arc::clone(&reader), 0, n as u64, 64 * 1024, 3)
        .await
        .unwrap();
    assert!(all[..] == expected[..], "{what}: read_range_parallel");

    // A range past the end: the stream ends with one error and nothing after it.
    let items: Vec<_> = ranges(Arc::clone(&reader), 0, n as u64 + 1, 100_000, 2)
        .collect()
        .await;
    assert!(
        items.last().unwrap().is_err(),
        "{what}: past-EOF ranges() must end in an error"
    );
    assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);

    let items: Vec<_> = ranges(Arc::clone(&reader), 0, 10, 0, 2).collect().await;
    assert_eq!(items.len(), 1);
    assert!(
        matches!(items[0], Err(Error::Config { .. })),
        "chunk 0 must be refused"
    );
}

/// What the writer suite needs from a store.
#[async_trait]
pub trait WriterHarness: Sync {
    /// The writers' first-part size `P`: writes from `P` on come in order.
    fn first_part(&self) -> usize;
    /// A new writer for object `name`.
    async fn create(&self, name: &str) -> Box<dyn ObjectWriter>;
    /// The stored object, or `None` if there is none.
    async fn read_back(&self, name: &str) -> Option<Vec<u8>>;
    /// Traces an unfinished write could leave (temporary files, pending uploads).
    async fn leftovers(&self, name: &str) -> Vec<String>;
}

async fn write_all(w: &mut Box<dyn ObjectWriter>, data: &[u8], pieces: &[(usize, usize)]) {
    for &(a, b) in pieces {
        w.write_at(a as u64, Bytes::copy_from_slice(&data[a..b]))
            .await
            .unwrap_or_else(|e| panic!("write {a}..{b}: {e}"));
    }
}

/// Splits `[a, b)` into chunks whose sizes cycle through `sizes`.
fn chunks(a: usize, b: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = a;
    for i in 0.. {
        if pos >= b {
            break;
        }
        let end = (pos + sizes[i % sizes.len()]).min(b);
        out.push((pos, end));
        pos = end;
    }
    out
}

async fn check_stored(h: &dyn WriterHarness, name: &str, data: &[u8], w: objstore::WrittenObject) {
    assert_eq!(w.size, data.len() as u64, "{name}: finish() size");
    let back = h
        .read_back(name)
        .await
        .unwrap_or_else(|| panic!("{name}: object missing"));
    assert_eq!(back.len(), data.len(), "{name}: stored size");
    assert!(back == data, "{name}: stored bytes differ");
    assert!(
        h.leftovers(name).await.is_empty(),
        "{name}: leftovers after finish"
    );
}

async fn check_nothing(h: &dyn WriterHarness, name: &str) {
    assert!(
        h.read_back(name).await.is_none(),
        "{name}: object exists after a failed write"
    );
    let left = h.leftovers(name).await;
    assert!(left.is_empty(), "{name}: leftovers {left:?}");
}

/// Every writer suite test, one after the other, each on its own object.
pub async fn writer_suite(h: &dyn WriterHarness) {
    sequential(h).await;
    header_last(h).await;
    first_part_any_order(h).await;
    small_object(h).await;
    empty_object(h).await;
    overlap_rejected(h).await;
    gap_rejected(h).await;
    abort_leaves_nothing(h).await;
}

/// In-order chunks of odd sizes over several parts.
pub async fn sequential(h: &dyn WriterHarness) {
    let p = h.first_part();
    let data = pattern(2 * p + p / 2 + 123, 1);
    let mut w = h.create("sequential").await;
    write_all(
        &mut w,
        &data,
        &chunks(0, data.len(), &[1024 * 1024 + 13, 77, 3 * 1024 * 1024]),
    )
    .await;
    let written = w.finish().await.unwrap();
    check_stored(h, "sequential", &data, written).await;
}

/// The qcow2 shape: data from one cluster on, then the 64 KiB header at offset 0 last.
pub async fn header_last(h: &dyn WriterHarness) {
    const CLUSTER: usize = 65536;
    let p = h.first_part();
    let data = pattern(2 * p + 777, 2);
    let mut w = h.create("header-last").await;
    write_all(
        &mut w,
        &data,
        &chunks(CLUSTER, data.len(), &[100_000, 1 << 20, 3 << 20]),
    )
    .await;
    write_all(&mut w, &data, &[(0, CLUSTER)]).await;
    let written = w.finish().await.unwrap();
    check_stored(h, "header-last", &data, written).await;
}

/// Writes into the first part in shuffled order, interleaved with the (in-order) rest.
pub async fn first_part_any_order(h: &dyn WriterHarness) {
    let p = h.first_part();
    let data = pattern(p + 1000, 3);
    let q = p / 4;
    let mut w = h.create("any-order").await;
    write_all(&mut w, &data, &[(3 * q, p), (p, p + 400)]).await;
    write_all(
        &mut w,
        &data,
        &[(0, q), (p + 400, p + 1000), (2 * q, 3 * q), (q, 2 * q)],
    )
    .await;
    let written = w.finish().await.unwrap();
    check_stored(h, "any-order", &data, written).await;
}

/// An object smaller than one part, written back to front.
pub async fn small_object(h: &dyn WriterHarness) {
    let data = pattern(1000, 4);
    let mut w = h.create("small").await;
    write_all(&mut w, &data, &[(600, 1000), (0, 600)]).await;
    let written = w.finish().await.unwrap();
    check_stored(h, "small", &data, written).await;
}

/// No writes at all: an empty object.
pub async fn empty_object(h: &dyn WriterHarness) {
    let w = h.create("empty").await;
    let written = w.finish().await.unwrap();
    check_stored(h, "empty", &[], written).await;
}

/// Overlapping writes are refused at once, with the object named; nothing is left.
pub async fn overlap_rejected(h: &dyn WriterHarness) {
    let data = pattern(200, 5);
    let mut w = h.create("overlap").await;
    let what = w.describe();
    write_all(&mut w, &data, &[(0, 100)]).await;
    let err = w
        .write_at(50, Bytes::copy_from_slice(&data[50..150]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidWrite { .. }),
        "overlap gave {err:?}"
    );
    assert!(err.to_string().contains(&what), "{err}");
    w.abort().await.unwrap();
    check_nothing(h, "overlap").await;
}

/// A gap is refused at finish, which then leaves nothing behind.
pub async fn gap_rejected(h: &dyn WriterHarness) {
    let data = pattern(300, 6);
    let mut w = h.create("gap").await;
    write_all(&mut w, &data, &[(200, 300), (0, 100)]).await;
    let err = w.finish().await.unwrap_err();
    assert!(err.to_string().contains("100..200"), "gap error: {err}");
    check_nothing(h, "gap").await;
}

/// Abort after several parts went out leaves no object and no pending upload.
pub async fn abort_leaves_nothing(h: &dyn WriterHarness) {
    let p = h.first_part();
    let data = pattern(2 * p + 10, 7);
    let mut w = h.create("aborted").await;
    write_all(&mut w, &data, &chunks(0, data.len(), &[1 << 20])).await;
    w.abort().await.unwrap();
    check_nothing(h, "aborted").await;
}
