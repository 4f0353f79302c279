//! HTTP range reads against a test server on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use objstore::{Error, HttpClient, HttpObject, RangeRead, RetryPolicy};

use crate::conformance::{self, READ_SIZE};
use crate::support::{pattern, RangeMode, RangeServer};

#[tokio::test]
async fn http_range_read_conformance() {
    let server = RangeServer::start(RangeMode::Honour).await;
    let data = pattern(READ_SIZE, 20);
    server.put("disk.qcow2", Bytes::from(data.clone()));
    let obj = HttpObject::open(&server.url("disk.qcow2")).await.unwrap();
    assert_eq!(obj.etag(), Some("\"v1\""));
    conformance::range_read(Arc::new(obj), &data).await;
}

#[tokio::test]
async fn http_follows_redirects() {
    let server = RangeServer::start(RangeMode::Honour).await;
    let data = pattern(5000, 21);
    server.put("img", Bytes::from(data.clone()));
    let obj = HttpObject::open(&server.url("redirect/img")).await.unwrap();
    assert_eq!(obj.size(), 5000);
    assert!(obj.read_at(100, 200).await.unwrap()[..] == data[100..300]);
    assert!(
        obj.describe().contains("redirect/img"),
        "describe names the URL given"
    );
}

#[tokio::test]
async fn http_empty_object_has_size_zero() {
    let server = RangeServer::start(RangeMode::Honour).await;
    server.put("empty", Bytes::new());
    let obj = HttpObject::open(&server.url("empty")).await.unwrap();
    assert_eq!(obj.size(), 0);
    assert!(obj.read_at(0, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn http_404_is_not_found_naming_the_url() {
    let server = RangeServer::start(RangeMode::Honour).await;
    let url = server.url("missing.qcow2");
    let err = HttpObject::open(&url).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn http_server_ignoring_range_is_a_clear_error() {
    let server = RangeServer::start(RangeMode::Ignore).await;
    server.put("disk", Bytes::from(pattern(10_000, 22)));
    let url = server.url("disk");
    let err = HttpObject::open(&url).await.unwrap_err();
    assert!(matches!(err, Error::RangeNotSupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("200"), "{msg}");
}

#[tokio::test]
async fn http_object_replaced_after_open_is_detected() {
    let server = RangeServer::start(RangeMode::Honour).await;
    server.put("disk", Bytes::from(pattern(10_000, 23)));
    let obj = HttpObject::open(&server.url("disk")).await.unwrap();
    server.put("disk", Bytes::from(pattern(10_000, 24)));
    let err = obj.read_at(0, 100).await.unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err:?}");
}

/// The attempts these tests count on: fewer than the default's time budget allows.
const FIVE_ATTEMPTS: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff: objstore::DEFAULT_INITIAL_BACKOFF,
    max_backoff: objstore::DEFAULT_MAX_BACKOFF,
    budget: objstore::DEFAULT_RETRY_BUDGET,
};

#[tokio::test]
async fn http_dead_port_fails_fast_after_bounded_retries() {
    // Bind and drop to get a port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Five attempts (the default budget would retry for a minute).
    let client = HttpClient::with_settings(
        Duration::from_secs(2),
        Duration::from_secs(5),
        FIVE_ATTEMPTS,
    );
    let start = Instant::now();
    let err = client
        .open(&format!("http://127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn http_server_errors_are_retried() {
    let server = RangeServer::start(RangeMode::Honour).await;
    let data = pattern(4000, 25);
    server.put("img", Bytes::from(data.clone()));
    // Three 503s, then the file: within five attempts.
    let client = HttpClient::with_settings(
        Duration::from_secs(2),
        Duration::from_secs(5),
        FIVE_ATTEMPTS,
    );
    let obj = client.open(&server.url("flaky/3/img")).await.unwrap();
    assert_eq!(obj.size(), 4000);
    assert!(obj.read_at(10, 20).await.unwrap()[..] == data[10..30]);

    // Ten 503s: more than five attempts, so the error says so.
    let err = client.open(&server.url("flaky/10/img")).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("503"), "{err}");
}
