//! The conformance suite every `RangeRead`, every `ObjectWriter` and every `ObjectStore`
//! runs (in the style of object_store's `integration.rs`): generic functions, called by each
//! store's tests.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use objstore::{
    ranges, read_range_parallel, Error, ObjectStore, ObjectWriter, PutOptions, RangeRead,
    WriteOptions, MIN_PART_SIZE,
};

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

/// Lists the traces an unfinished write of `key` could leave in a store (temporary files,
/// pending uploads).
pub type Leftovers = Box<dyn Fn(String) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// A store under test: the [`ObjectStore`] and how to find what an unfinished write left.
pub struct StoreHarness {
    pub store: Arc<dyn ObjectStore>,
    pub leftovers: Leftovers,
}

impl StoreHarness {
    /// Writer options for the suite: the smallest parts, so that several parts go out.
    fn options(&self) -> WriteOptions {
        WriteOptions {
            part_size: MIN_PART_SIZE,
            parts_in_flight: 3,
            ..WriteOptions::default()
        }
    }
}

#[async_trait]
impl WriterHarness for StoreHarness {
    fn first_part(&self) -> usize {
        MIN_PART_SIZE
    }

    async fn create(&self, name: &str) -> Box<dyn ObjectWriter> {
        self.store.writer(name, self.options()).await.unwrap()
    }

    async fn read_back(&self, name: &str) -> Option<Vec<u8>> {
        match self.store.get(name).await {
            Ok(b) => Some(b.to_vec()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading back {name}: {e}"),
        }
    }

    async fn leftovers(&self, name: &str) -> Vec<String> {
        (self.leftovers)(name.to_owned()).await
    }
}

/// Every store suite test, one after the other, each on its own keys (no key is also the
/// prefix of another: a directory cannot be a file too); then the writer suite through the
/// store's own writers.
pub async fn store_suite(h: &StoreHarness) {
    missing_objects(h).await;
    put_get_head_and_overwrite(h).await;
    listing(h).await;
    writer_metadata_at_creation_and_at_finish(h).await;
    sparse_writer_fills_gaps_with_zeros(h).await;
    writer_refuses_an_existing_object(h).await;
    unfinished_writes_are_not_listed(h).await;
    opened_objects_read_as_every_range_reader(h).await;
    writer_suite(h).await;
}

/// A missing object: not found (named) from head, open and get; `exists` is false, `delete`
/// succeeds, and a new object may be written there.
pub async fn missing_objects(h: &StoreHarness) {
    let key = "missing/object";
    let what = h.store.describe(key);
    let head = h.store.head(key).await.unwrap_err();
    let open = h.store.open(key).await.unwrap_err();
    let get = h.store.get(key).await.unwrap_err();
    for (op, err) in [("head", head), ("open", open), ("get", get)] {
        assert!(err.is_not_found(), "{what}: {op} gave {err:?}");
        assert!(err.to_string().contains(&what), "{op}: {err}");
    }
    assert!(!h.store.exists(key).await.unwrap(), "{what}: exists");
    h.store
        .delete(key)
        .await
        .expect("deleting a missing object");
    h.store.check_new(key, false).await.unwrap();
    h.store.check_new(key, true).await.unwrap();
}

/// A small object with metadata: stored, read back, described by head; refused without
/// overwrite, replaced with it; deleted.
pub async fn put_get_head_and_overwrite(h: &StoreHarness) {
    let key = "put/object.json";
    let what = h.store.describe(key);
    let metadata: HashMap<String, String> = [
        ("diskferry-format".to_owned(), "qcow2".to_owned()),
        ("diskferry-source".to_owned(), "rbd:p/img@s".to_owned()),
    ]
    .into();
    let put = PutOptions {
        metadata: metadata.clone(),
        content_type: Some("application/json".into()),
        overwrite: false,
    };
    let written = h
        .store
        .put(key, Bytes::from_static(b"{\"one\": 1}"), &put)
        .await
        .unwrap();
    assert_eq!(written.size, 10, "{what}: put size");
    assert_eq!(&h.store.get(key).await.unwrap()[..], b"{\"one\": 1}");
    let info = h.store.head(key).await.unwrap();
    assert_eq!(info.size, 10, "{what}: head size");
    assert_eq!(info.metadata, metadata, "{what}: head metadata");
    assert!(info.modified.is_some(), "{what}: no time of last change");
    assert!(h.store.exists(key).await.unwrap());

    let err = h.store.check_new(key, false).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(&what), "{err}");
    h.store.check_new(key, true).await.unwrap();
    let err = h
        .store
        .put(key, Bytes::from_static(b"two"), &put)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(&h.store.get(key).await.unwrap()[..], b"{\"one\": 1}");

    let replace = PutOptions {
        overwrite: true,
        ..PutOptions::default()
    };
    h.store
        .put(key, Bytes::from_static(b"two"), &replace)
        .await
        .unwrap();
    assert_eq!(&h.store.get(key).await.unwrap()[..], b"two");
    assert!(h.store.head(key).await.unwrap().metadata.is_empty());

    h.store.delete(key).await.unwrap();
    assert!(!h.store.exists(key).await.unwrap());
    h.store
        .delete(key)
        .await
        .expect("a second delete is harmless");
}

/// Flat listings at any depth and one-level listings with the deeper prefixes.
pub async fn listing(h: &StoreHarness) {
    let put = PutOptions::default();
    for key in [
        "list/a/1",
        "list/a/2",
        "list/a/sub/3",
        "list/b/4",
        "list/ab",
    ] {
        h.store
            .put(key, Bytes::from_static(b"x"), &put)
            .await
            .unwrap();
    }
    let keys = |objects: Vec<objstore::ListedObject>| {
        let mut keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(h.store.list("list/a/").await.unwrap()),
        ["list/a/1", "list/a/2", "list/a/sub/3"]
    );
    assert_eq!(
        keys(h.store.list("list/a").await.unwrap()),
        ["list/a/1", "list/a/2", "list/a/sub/3", "list/ab"]
    );
    assert_eq!(
        keys(h.store.list("list/a/s").await.unwrap()),
        ["list/a/sub/3"]
    );
    assert!(h.store.list("list/none/").await.unwrap().is_empty());
    let dir = h.store.list_dir("list/a/").await.unwrap();
    assert!(dir.objects.iter().all(|o| o.size == 1), "{dir:?}");
    assert_eq!(keys(dir.objects), ["list/a/1", "list/a/2"]);
    assert_eq!(dir.prefixes, ["list/a/sub/"]);
    let mut top = h.store.list_dir("list/").await.unwrap();
    top.prefixes.sort();
    assert_eq!(keys(top.objects), ["list/ab"]);
    assert_eq!(top.prefixes, ["list/a/", "list/b/"]);
}

/// Metadata given at creation and added before `finish` are both on the finished object,
/// whether it went up in parts or in one piece; a later value replaces an earlier one.
pub async fn writer_metadata_at_creation_and_at_finish(h: &StoreHarness) {
    let p = MIN_PART_SIZE;
    for (key, len) in [("meta/big", 2 * p + 10), ("meta/small", 1000)] {
        let data = pattern(len, 20);
        let mut options = h.options();
        options.put.metadata = [
            ("at-creation".to_owned(), "1".to_owned()),
            ("replaced".to_owned(), "old".to_owned()),
        ]
        .into();
        let mut w = h.store.writer(key, options).await.unwrap();
        w.write_at(0, Bytes::from(data.clone())).await.unwrap();
        w.set_metadata("at-finish", "sha256:abc");
        w.set_metadata("replaced", "new");
        let written = w.finish().await.unwrap();
        assert_eq!(written.size, len as u64, "{key}");
        let info = h.store.head(key).await.unwrap();
        let expected: HashMap<String, String> = [
            ("at-creation".to_owned(), "1".to_owned()),
            ("replaced".to_owned(), "new".to_owned()),
            ("at-finish".to_owned(), "sha256:abc".to_owned()),
        ]
        .into();
        assert_eq!(info.metadata, expected, "{key}: metadata");
        assert_eq!(info.size, len as u64, "{key}: size");
        assert!(
            h.store.get(key).await.unwrap()[..] == data[..],
            "{key}: bytes"
        );
    }
}

/// A sparse writer's object has its size, the bytes written, and zeros elsewhere.
pub async fn sparse_writer_fills_gaps_with_zeros(h: &StoreHarness) {
    let p = MIN_PART_SIZE;
    for (key, size) in [("sparse/big", 3 * p + 100), ("sparse/small", 5000)] {
        let mut expected = vec![0u8; size];
        let mut options = h.options();
        options.sparse_size = Some(size as u64);
        let mut w = h.store.writer(key, options).await.unwrap();
        let mut pieces = vec![(10usize, pattern(100, 21)), (3000, pattern(50, 22))];
        if size > p {
            pieces.push((p + 5, pattern(1000, 23)));
            pieces.push((2 * p + 7, pattern(p, 24)));
        }
        for (offset, data) in pieces {
            expected[offset..offset + data.len()].copy_from_slice(&data);
            w.write_at(offset as u64, Bytes::from(data)).await.unwrap();
        }
        let written = w.finish().await.unwrap();
        assert_eq!(written.size, size as u64, "{key}");
        let back = h.store.get(key).await.unwrap();
        assert_eq!(back.len(), size, "{key}: stored size");
        assert!(back[..] == expected[..], "{key}: stored bytes");
    }
}

/// Without overwrite, a writer refuses an existing object before anything is written.
pub async fn writer_refuses_an_existing_object(h: &StoreHarness) {
    let key = "exists/object";
    h.store
        .put(key, Bytes::from_static(b"old"), &PutOptions::default())
        .await
        .unwrap();
    let err = h.store.writer(key, h.options()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    let mut options = h.options();
    options.put.overwrite = true;
    let mut w = h.store.writer(key, options).await.unwrap();
    w.write_at(0, Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(
        &h.store.get(key).await.unwrap()[..],
        b"old",
        "replaced early"
    );
    w.finish().await.unwrap();
    assert_eq!(&h.store.get(key).await.unwrap()[..], b"new");
}

/// An object being written is neither listed nor readable before `finish`.
pub async fn unfinished_writes_are_not_listed(h: &StoreHarness) {
    let key = "unfinished/object";
    let mut w = h.store.writer(key, h.options()).await.unwrap();
    w.write_at(0, Bytes::from(pattern(2 * MIN_PART_SIZE + 1, 25)))
        .await
        .unwrap();
    assert!(h.store.list("unfinished/").await.unwrap().is_empty());
    assert!(!h.store.exists(key).await.unwrap());
    w.abort().await.unwrap();
    check_nothing(h, key).await;
}

/// What `open` returns passes the range-read suite, and carries the object's metadata.
pub async fn opened_objects_read_as_every_range_reader(h: &StoreHarness) {
    let key = "read/disk.raw";
    let data = pattern(READ_SIZE, 26);
    let put = PutOptions {
        metadata: [("diskferry-format".to_owned(), "raw".to_owned())].into(),
        ..PutOptions::default()
    };
    h.store
        .put(key, Bytes::from(data.clone()), &put)
        .await
        .unwrap();
    let reader = h.store.open(key).await.unwrap();
    assert_eq!(reader.describe(), h.store.describe(key));
    assert_eq!(reader.metadata("diskferry-format").as_deref(), Some("raw"));
    range_read(reader, &data).await;
}
