//! S3 against the dev cluster's real RGW (no mocks): the conformance suite plus multipart,
//! error and metadata behaviour.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use objstore::{
    Error, MultipartUpload, ObjectWriter, PendingUpload, PutOptions, RangeRead, S3Bucket, S3Config,
    S3Store, S3WriterOptions, MIN_PART_SIZE,
};

use crate::conformance::{self, StoreHarness, READ_SIZE};
use crate::support::{pattern, s3_config, TestBucket};

/// A multipart upload of `key` into the test bucket, with default options.
async fn start_upload(b: &TestBucket, key: &str) -> MultipartUpload {
    b.store
        .create_multipart(&b.name, key, &PutOptions::default())
        .await
        .unwrap()
}

/// The multipart uploads pending in the test bucket.
async fn pending_uploads(b: &TestBucket) -> Vec<PendingUpload> {
    b.store.list_multipart_uploads(&b.name, "").await.unwrap()
}

#[tokio::test]
async fn s3_object_range_read_conformance() {
    let b = TestBucket::new("read").await;
    let data = pattern(READ_SIZE, 30);
    b.store
        .put_object(
            &b.name,
            "disk.raw",
            Bytes::from(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let obj = b.store.open(&b.name, "disk.raw").await.unwrap();
    assert!(obj.etag().is_some());
    conformance::range_read(Arc::new(obj), &data).await;
}

#[tokio::test]
async fn s3_bucket_store_conformance() {
    let b = TestBucket::new("store").await;
    let (store, bucket) = (b.store.clone(), b.name.clone());
    conformance::store_suite(&StoreHarness {
        store: Arc::new(S3Bucket::new(b.store.clone(), &b.name)),
        leftovers: Box::new(move |key| {
            let (store, bucket) = (store.clone(), bucket.clone());
            async move {
                let uploads = store.list_multipart_uploads(&bucket, &key).await.unwrap();
                uploads
                    .into_iter()
                    .map(|u| format!("upload {} of {}", u.upload_id, u.key))
                    .collect()
            }
            .boxed()
        }),
    })
    .await;
}

#[tokio::test]
async fn multipart_parts_uploaded_out_of_order_and_concurrently() {
    let b = TestBucket::new("mpu").await;
    let data = pattern(2 * MIN_PART_SIZE + 1234, 31);
    let up = start_upload(&b, "ooo").await;
    let part = |n: u32| {
        let start = (n as usize - 1) * MIN_PART_SIZE;
        let end = (start + MIN_PART_SIZE).min(data.len());
        Bytes::copy_from_slice(&data[start..end])
    };
    // Part 3 (the short last one) first, then 1 and 2 at the same time.
    let p3 = up.upload_part(3, part(3)).await.unwrap();
    let (p1, p2) = tokio::join!(up.upload_part(1, part(1)), up.upload_part(2, part(2)));
    let written = up
        .complete(vec![p2.unwrap(), p3, p1.unwrap()])
        .await
        .unwrap();
    assert_eq!(written.size, data.len() as u64);
    let etag = written.etag.expect("HeadObject ETag");
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "multipart ETag {etag}"
    );
    let back = b.store.get_object_bytes(&b.name, "ooo").await.unwrap();
    assert!(back[..] == data[..], "stored bytes differ");
    assert!(pending_uploads(&b).await.is_empty());
}

#[tokio::test]
async fn multipart_abort_leaves_no_object_and_no_pending_upload() {
    let b = TestBucket::new("abort").await;
    let up = start_upload(&b, "gone").await;
    up.upload_part(1, Bytes::from(pattern(MIN_PART_SIZE, 32)))
        .await
        .unwrap();
    let pending = pending_uploads(&b).await;
    assert_eq!(pending.len(), 1, "the upload should be listed before abort");
    assert_eq!(pending[0].upload_id, up.upload_id());
    up.abort().await.unwrap();
    assert!(pending_uploads(&b).await.is_empty());
    assert!(!b.store.exists(&b.name, "gone").await.unwrap());
    up.abort().await.expect("a second abort is harmless");
}

#[tokio::test]
async fn multipart_run_aborts_when_the_body_fails() {
    let b = TestBucket::new("run").await;
    let up = start_upload(&b, "failed").await;
    let err = up
        .run(|u| async move {
            u.upload_part(1, Bytes::from(pattern(MIN_PART_SIZE, 33)))
                .await?;
            Err(Error::Config {
                reason: "producer failed".into(),
            })
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("producer failed"), "{err}");
    assert!(pending_uploads(&b).await.is_empty());
    assert!(!b.store.exists(&b.name, "failed").await.unwrap());

    let up = start_upload(&b, "ok").await;
    let w = up
        .run(|u| async move { Ok(vec![u.upload_part(1, Bytes::from_static(b"tiny")).await?]) })
        .await
        .unwrap();
    assert_eq!(w.size, 4);
}

#[tokio::test]
async fn missing_bucket_and_key_are_specific_errors() {
    let b = TestBucket::new("missing").await;
    let no_bucket = format!("{}-absent", b.name);

    let err = b.store.open(&no_bucket, "k").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("bucket") && msg.contains(&no_bucket), "{msg}");

    let err = b.store.open(&b.name, "no/such/key").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("s3://{}/no/such/key", b.name)),
        "{err}"
    );

    let err = b.store.get_object_bytes(&no_bucket, "k").await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains(&no_bucket),
        "{err}"
    );

    let err = b
        .store
        .writer(&no_bucket, "k", S3WriterOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains(&no_bucket),
        "{err}"
    );

    assert!(!b.store.exists(&b.name, "nope").await.unwrap());
    assert!(
        b.store.exists(&no_bucket, "nope").await.is_err(),
        "a missing bucket is not 'false'"
    );
}

#[tokio::test]
async fn wrong_endpoint_fails_within_ten_seconds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = S3Config::default()
        .with_endpoint(Some(format!("http://127.0.0.1:{port}")))
        .with_keys(Some("k".into()), Some("s".into()));
    // Five attempts (the default budget would retry for a minute, as for a restarting RGW).
    config.retry.max_attempts = 5;
    let store = S3Store::from_config(&config).unwrap();
    let start = Instant::now();
    let err = store.head("bucket", "key").await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("s3://bucket/key"), "{err}");
}

#[tokio::test]
async fn wrong_secret_is_access_denied() {
    let config = s3_config().with_keys(None, Some("not-the-secret".into()));
    let store = S3Store::from_config(&config).unwrap();
    let err = store.list("anybucket", "").await.unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn object_metadata_round_trips() {
    let b = TestBucket::new("meta").await;
    let metadata: HashMap<String, String> = [
        ("diskferry-sha256".to_owned(), "ab".repeat(32)),
        ("virtual-size".to_owned(), "10737418240".to_owned()),
    ]
    .into();
    let put = PutOptions {
        metadata: metadata.clone(),
        content_type: Some("application/x-qemu-disk".into()),
        overwrite: false,
    };
    b.store
        .put_object(&b.name, "small", Bytes::from_static(b"hello"), &put)
        .await
        .unwrap();
    let info = b.store.head(&b.name, "small").await.unwrap();
    assert_eq!(info.metadata, metadata);
    assert_eq!(
        info.content_type.as_deref(),
        Some("application/x-qemu-disk")
    );
    assert_eq!(info.size, 5);

    // The same through the multipart writer.
    let opts = S3WriterOptions {
        part_size: MIN_PART_SIZE,
        put,
        ..Default::default()
    };
    let mut w = b.store.writer(&b.name, "big", opts).await.unwrap();
    w.write_at(0, Bytes::from(pattern(MIN_PART_SIZE + 10, 34)))
        .await
        .unwrap();
    let written = Box::new(w).finish().await.unwrap();
    let info = b.store.head(&b.name, "big").await.unwrap();
    assert_eq!(info.metadata, metadata);
    assert_eq!(
        info.content_type.as_deref(),
        Some("application/x-qemu-disk")
    );
    assert_eq!((info.size, info.etag), (written.size, written.etag));
}

#[tokio::test]
async fn put_refuses_to_overwrite_unless_asked() {
    let b = TestBucket::new("put").await;
    let opts = PutOptions::default();
    b.store
        .put_object(&b.name, "k", Bytes::from_static(b"one"), &opts)
        .await
        .unwrap();
    let err = b
        .store
        .put_object(&b.name, "k", Bytes::from_static(b"two"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("s3://{}/k", b.name)),
        "{err}"
    );
    let err = b
        .store
        .writer(&b.name, "k", S3WriterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");

    let force = PutOptions {
        overwrite: true,
        ..Default::default()
    };
    b.store
        .put_object(&b.name, "k", Bytes::from_static(b"two"), &force)
        .await
        .unwrap();
    assert_eq!(
        &b.store.get_object_bytes(&b.name, "k").await.unwrap()[..],
        b"two"
    );
}

#[tokio::test]
async fn object_replaced_after_open_is_detected() {
    let b = TestBucket::new("changed").await;
    let force = PutOptions {
        overwrite: true,
        ..Default::default()
    };
    b.store
        .put_object(&b.name, "k", Bytes::from(pattern(1000, 35)), &force)
        .await
        .unwrap();
    let obj = b.store.open(&b.name, "k").await.unwrap();
    obj.read_at(0, 10).await.unwrap();
    b.store
        .put_object(&b.name, "k", Bytes::from(pattern(1000, 36)), &force)
        .await
        .unwrap();
    let err = obj.read_at(0, 10).await.unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err:?}");
}

#[tokio::test]
async fn listing_with_and_without_delimiter() {
    let b = TestBucket::new("list").await;
    let opts = PutOptions::default();
    for key in ["a/1", "a/2", "a/sub/3", "b/4"] {
        b.store
            .put_object(&b.name, key, Bytes::from_static(b"x"), &opts)
            .await
            .unwrap();
    }
    let mut keys: Vec<_> = b
        .store
        .list(&b.name, "a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["a/1", "a/2", "a/sub/3"]);
    let (objects, dirs) = b.store.list_dir(&b.name, "a/").await.unwrap();
    let mut keys: Vec<_> = objects.into_iter().map(|o| (o.key, o.size)).collect();
    keys.sort();
    assert_eq!(keys, [("a/1".to_owned(), 1), ("a/2".to_owned(), 1)]);
    assert_eq!(dirs, ["a/sub/"]);
    b.store.delete(&b.name, "a/1").await.unwrap();
    b.store
        .delete(&b.name, "a/1")
        .await
        .expect("deleting a missing key succeeds");
    assert!(!b.store.exists(&b.name, "a/1").await.unwrap());
}

#[tokio::test]
async fn dropped_writer_aborts_its_upload_in_the_background() {
    let b = TestBucket::new("drop").await;
    let opts = S3WriterOptions {
        part_size: MIN_PART_SIZE,
        ..Default::default()
    };
    let mut w = b.store.writer(&b.name, "dropped", opts).await.unwrap();
    w.write_at(0, Bytes::from(pattern(2 * MIN_PART_SIZE + 1, 37)))
        .await
        .unwrap();
    assert!(
        w.upload_id().is_some(),
        "a streamed part should have started an upload"
    );
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if pending_uploads(&b).await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upload still pending 10 s after drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.store.exists(&b.name, "dropped").await.unwrap());
}

/// A caller cancelled while CreateMultipartUpload is in flight never learns the upload's id;
/// the upload must still be aborted. Cancelling after 0..60 ms covers "before the request
/// left" through "after RGW created the upload" on this machine.
#[tokio::test]
async fn a_create_cancelled_in_flight_leaves_no_upload() {
    let b = TestBucket::new("cancel-create").await;
    let mut created_anyway = 0;
    for delay_ms in [0, 1, 2, 3, 5, 8, 12, 20, 30, 60] {
        let cancelled = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            MultipartUpload::create(&b.store, &b.name, "cancelled", &PutOptions::default()),
        )
        .await;
        if let Ok(created) = cancelled {
            // It finished in time: ours to abort.
            created.unwrap().abort().await.unwrap();
            created_anyway += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pending_uploads(&b).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} uploads left 10 s after their creators were cancelled ({created_anyway} finished in time)",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `put_object`'s no-overwrite relies on RGW refusing `If-None-Match: *` PUTs onto an
/// existing key (it does on 16.2.15), beyond its own HeadObject check.
#[tokio::test]
async fn rgw_refuses_conditional_put_onto_an_existing_key() {
    let b = TestBucket::new("inm").await;
    // The SDK itself, bypassing the store's own HeadObject check.
    let c = s3_config().client().unwrap();
    let put = |body: &'static [u8]| {
        c.put_object()
            .bucket(&b.name)
            .key("k")
            .body(Bytes::from_static(body).into())
    };
    put(b"1").send().await.unwrap();
    let err = put(b"2").if_none_match("*").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert_eq!(
        &b.store.get_object_bytes(&b.name, "k").await.unwrap()[..],
        b"1"
    );
}

/// Prints write and read throughput of a 256 MiB object with the default writer options
/// and 8 MiB × 8 ranged reads. Run with `--ignored --nocapture`; in a debug build the SDK's
/// SHA-256 payload signing dominates the write figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput_report() {
    const SIZE: usize = 256 << 20;
    let b = TestBucket::new("speed").await;
    let data = Bytes::from(pattern(SIZE, 40));
    let t = Instant::now();
    let mut w = b
        .store
        .writer(&b.name, "big", S3WriterOptions::default())
        .await
        .unwrap();
    for off in (0..SIZE).step_by(4 << 20) {
        w.write_at(off as u64, data.slice(off..(off + (4 << 20)).min(SIZE)))
            .await
            .unwrap();
    }
    let written = Box::new(w).finish().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "write {} MiB: {:.2} s, {:.0} MiB/s",
        SIZE >> 20,
        secs,
        (SIZE >> 20) as f64 / secs
    );
    assert_eq!(written.size, SIZE as u64);
    let obj: Arc<dyn RangeRead> = Arc::new(b.store.open(&b.name, "big").await.unwrap());
    let t = Instant::now();
    let back = objstore::read_range_parallel(obj, 0, SIZE as u64, 8 << 20, 8)
        .await
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "read {} MiB: {:.2} s, {:.0} MiB/s",
        SIZE >> 20,
        secs,
        (SIZE >> 20) as f64 / secs
    );
    assert!(back == data);
}
