//! HTTP(S) range reads on hyper 1 + rustls (aws-lc-rs), the stack aws-sdk-s3 already uses.
//!
//! Opening probes with `GET` and `Range: bytes=0-0` rather than `HEAD`: one request learns
//! the size (from `Content-Range`), proves the server honours ranges (`206`), and works with
//! pre-signed S3 URLs, which are signed for GET only.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT};
use crate::error::{Error, Result};
use crate::read::{check_len, last_byte, metadata_entry, RangeRead};
use crate::retry::RetryPolicy;

/// Size of hyper's read buffer for a response head (status line and headers): hyper's own
/// default, named. A head that has not parsed once the buffer holds this much fails the
/// request ("message head is too large"); with the last read, at most twice this is held.
pub const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

/// Redirects followed when opening a URL.
pub const MAX_REDIRECTS: usize = 10;

/// A shared HTTP(S) client with timeouts and retries. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting the system's CA certificates, with the default timeouts (3 s to
    /// connect, 120 s per request) and [`RetryPolicy::default`].
    pub fn new() -> Self {
        Self::with_settings(
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_ATTEMPT_TIMEOUT,
            RetryPolicy::default(),
        )
    }

    /// A client with explicit timeouts and retry policy.
    pub fn with_settings(
        connect_timeout: Duration,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match builder.with_provider_and_native_roots(provider) {
            Ok(b) => b,
            Err(e) => {
                // No CA bundle: plain http still works, https fails with a certificate error.
                tracing::warn!(error = %e, "no system CA certificates; https will not verify");
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|c| {
                    c.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
                match config {
                    Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                    Err(e) => unreachable_tls(e),
                }
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new())
                .http1_max_buf_size(MAX_RESPONSE_HEAD)
                .build(connector),
            retry,
            request_timeout,
        }
    }

    /// The process-wide default client.
    pub fn shared() -> &'static HttpClient {
        static SHARED: OnceLock<HttpClient> = OnceLock::new();
        SHARED.get_or_init(HttpClient::new)
    }

    /// Opens `url` for range reads (see [`HttpObject::open_with`]).
    pub async fn open(&self, url: &str) -> Result<HttpObject> {
        HttpObject::open_with(self, url).await
    }

    /// One GET with a `Range` (and optional `If-Match`) header, with the request timeout.
    async fn get_range(
        &self,
        url: &str,
        what: &str,
        first: u64,
        last: u64,
        if_match: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::RANGE, format!("bytes={first}-{last}"))
            .header(
                header::USER_AGENT,
                concat!("diskferry-objstore/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(tag) = if_match {
            req = req.header(header::IF_MATCH, tag);
        }
        let req = req.body(Empty::new()).map_err(|e| Error::InvalidAddress {
            input: what.to_owned(),
            reason: e.to_string(),
        })?;
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_) => Err(transient(
                what,
                format!("no response within {:?}", self.request_timeout),
            )),
            Ok(Err(e)) => match Error::tls_failure(&e) {
                Some(reason) => Err(Error::Tls {
                    endpoint: None,
                    op: "GET",
                    what: what.to_owned(),
                    reason,
                }),
                None if e.is_connect() => {
                    Err(transient(what, format!("cannot connect: {}", chain(&e))))
                }
                None => Err(transient(what, chain(&e))),
            },
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn unreachable_tls(e: rustls::Error) -> ! {
    // aws-lc-rs supports the default protocol versions; this cannot fail.
    panic!("rustls rejected its own default protocol versions: {e}")
}

/// An HTTP(S) object opened for range reads.
#[derive(Debug, Clone)]
pub struct HttpObject {
    client: HttpClient,
    /// The URL after redirects.
    url: String,
    /// The URL as given, without its query (pre-signed URLs carry credentials there).
    shown: String,
    size: u64,
    /// Strong ETag to pin reads with `If-Match`.
    etag: Option<String>,
    /// The `x-amz-meta-*` headers of the first answer (a pre-signed S3 URL carries them),
    /// keyed without the prefix.
    metadata: HashMap<String, String>,
}

impl HttpObject {
    /// Opens `url` with the [shared](HttpClient::shared) client.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(HttpClient::shared(), url).await
    }

    /// Opens `url`: follows up to [`MAX_REDIRECTS`] redirects, then needs a `206` answer
    /// with `Content-Range` to a one-byte range request. `404` is [`Error::NotFound`]; a
    /// server that answers `200` (ignoring `Range`) is [`Error::RangeNotSupported`].
    pub async fn open_with(client: &HttpClient, url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::InvalidAddress {
            input: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidAddress {
                input: url.to_owned(),
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let shown = redact(&parsed);
        let mut current = parsed;
        // The HTTP stack never sends a URL's user and password (there is no Basic auth
        // here), but it would keep them in its connection pool's key, which its trace logs
        // print: they go before the URL reaches it.
        let _ = current.set_username("");
        let _ = current.set_password(None);
        for _ in 0..=MAX_REDIRECTS {
            let resp = client
                .retry
                .run(|| async {
                    let resp = client
                        .get_range(current.as_str(), &shown, 0, 0, None)
                        .await?;
                    check_status_transient(&resp, &shown)?;
                    Ok(resp)
                })
                .await?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| http_error(status, &shown, "redirect without a Location"))?;
                current = current.join(loc).map_err(|e| {
                    http_error(status, &shown, &format!("bad redirect {loc:?}: {e}"))
                })?;
                continue;
            }
            let (size, etag) = match status {
                StatusCode::PARTIAL_CONTENT => {
                    let (_, _, total) = content_range(&resp, &shown)?;
                    (total, strong_etag(&resp))
                }
                // An empty object has no byte 0.
                StatusCode::RANGE_NOT_SATISFIABLE => match unsatisfied_total(&resp) {
                    Some(total) => (total, strong_etag(&resp)),
                    None => {
                        return Err(http_error(
                            status,
                            &shown,
                            "range 0-0 not satisfiable and no Content-Range: */SIZE",
                        ))
                    }
                },
                StatusCode::OK => {
                    return Err(Error::RangeNotSupported {
                        what: shown,
                        detail: format!(
                        "answered 200 with the whole body to a Range request (Accept-Ranges: {})",
                        header_str(&resp, header::ACCEPT_RANGES).unwrap_or("absent")
                    ),
                    })
                }
                s => return Err(status_error(s, &shown)),
            };
            let metadata = amz_metadata(&resp);
            // Drop the one-byte body; the connection goes back to the pool.
            let _ = Limited::new(resp.into_body(), 1 << 16).collect().await;
            return Ok(Self {
                client: client.clone(),
                url: current.to_string(),
                shown,
                size,
                etag,
                metadata,
            });
        }
        Err(Error::Http {
            status: 310,
            what: shown,
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// The strong ETag reads are pinned to, if the server gave one.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }
}

#[async_trait]
impl RangeRead for HttpObject {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn metadata(&self, key: &str) -> Option<String> {
        metadata_entry(&self.metadata, key)
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let Some(last) = last_byte(self, offset, len)? else {
            return Ok(Bytes::new());
        };
        let bytes = self
            .client
            .retry
            .run(|| async {
                let resp = self
                    .client
                    .get_range(&self.url, &self.shown, offset, last, self.etag.as_deref())
                    .await?;
                check_status_transient(&resp, &self.shown)?;
                match resp.status() {
                    StatusCode::PARTIAL_CONTENT => {}
                    StatusCode::OK => {
                        return Err(Error::RangeNotSupported {
                            what: self.shown.clone(),
                            detail: format!("answered 200 to Range: bytes={offset}-{last}"),
                        })
                    }
                    StatusCode::PRECONDITION_FAILED => {
                        return Err(Error::Changed {
                            what: self.shown.clone(),
                            etag: self.etag.clone().unwrap_or_default(),
                        })
                    }
                    s => return Err(status_error(s, &self.shown)),
                }
                let (start, end, _) = content_range(&resp, &self.shown)?;
                if start != offset || end != last {
                    return Err(http_error(
                        resp.status(),
                        &self.shown,
                        &format!(
                            "asked for bytes {offset}-{last}, got Content-Range {start}-{end}"
                        ),
                    ));
                }
                let body = tokio::time::timeout(
                    self.client.request_timeout,
                    Limited::new(resp.into_body(), len.saturating_add(1)).collect(),
                )
                .await
                .map_err(|_| transient(&self.shown, "body not received in time".into()))?
                .map_err(|e| transient(&self.shown, format!("reading the body: {e}")))?;
                Ok(body.to_bytes())
            })
            .await?;
        check_len(self, offset, len, &bytes)?;
        Ok(bytes)
    }
}

/// 5xx, 408 and 429 are worth retrying.
fn check_status_transient(resp: &Response<Incoming>, what: &str) -> Result<()> {
    let s = resp.status();
    if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS
    {
        return Err(transient(what, format!("HTTP {s}")));
    }
    Ok(())
}

fn status_error(s: StatusCode, what: &str) -> Error {
    match s {
        StatusCode::NOT_FOUND | StatusCode::GONE => Error::NotFound {
            what: what.to_owned(),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::AccessDenied {
            what: what.to_owned(),
            detail: format!("HTTP {s}"),
        },
        s => http_error(s, what, "unexpected status"),
    }
}

fn http_error(s: StatusCode, what: &str, detail: &str) -> Error {
    Error::Http {
        status: s.as_u16(),
        what: what.to_owned(),
        detail: detail.to_owned(),
    }
}

fn transient(what: &str, detail: String) -> Error {
    Error::Transient {
        op: "GET",
        what: what.to_owned(),
        detail,
    }
}

fn header_str(resp: &Response<Incoming>, name: header::HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn content_range(resp: &Response<Incoming>, what: &str) -> Result<(u64, u64, u64)> {
    let bad = || {
        http_error(
            resp.status(),
            what,
            "206 without a valid Content-Range: bytes START-END/TOTAL",
        )
    };
    let v = header_str(resp, header::CONTENT_RANGE).ok_or_else(bad)?;
    parse_content_range(v).ok_or_else(bad)
}

fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < total).then_some((a, b, total))
}

/// `Content-Range: bytes */TOTAL` of a 416 answer.
fn unsatisfied_total(resp: &Response<Incoming>) -> Option<u64> {
    header_str(resp, header::CONTENT_RANGE)?
        .trim()
        .strip_prefix("bytes */")?
        .parse()
        .ok()
}

/// Prefix of S3 user-metadata headers.
const AMZ_META_PREFIX: &str = "x-amz-meta-";

/// The `x-amz-meta-*` headers of an answer, keyed without the prefix (lower case).
fn amz_metadata(resp: &Response<Incoming>) -> HashMap<String, String> {
    resp.headers()
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix(AMZ_META_PREFIX)?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The ETag if it is a strong one (weak ETags cannot be used with `If-Match`).
fn strong_etag(resp: &Response<Incoming>) -> Option<String> {
    header_str(resp, header::ETAG)
        .filter(|t| !t.starts_with("W/"))
        .map(str::to_owned)
}

/// `input` for messages and logs: an URL without its user, password and query (pre-signed URLs
/// carry their signature there); anything else as it is. The one redaction every output of
/// diskferry uses for addresses.
pub fn redact_url(input: &str) -> String {
    match url::Url::parse(input) {
        Ok(u) if u.has_host() => redact(&u),
        // Not a URL we can take apart: keep only what cannot be a secret.
        _ => match input.split_once('?') {
            Some((before, _)) => format!("{before}?…"),
            None => input.to_owned(),
        },
    }
}

/// The URL without its query and credentials, for messages.
fn redact(u: &url::Url) -> String {
    let mut shown = u.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(None);
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

/// An error with its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Answers one request on 127.0.0.1 with `response` (a whole HTTP answer, as bytes) and
    /// closes; returns the port. For the tests of what a misbehaving server can make us do.
    pub(crate) fn serve_once(response: Vec<u8>) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&response);
        });
        port
    }

    /// A server whose answer has a header line of `len` bytes; returns a URL on it.
    fn long_head_server(len: usize) -> String {
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nX-Padding: {}\r\n\
             Content-Range: bytes 0-0/1\r\nContent-Length: 1\r\n\r\nx",
            "p".repeat(len)
        );
        format!(
            "http://127.0.0.1:{}/disk.raw",
            serve_once(head.into_bytes())
        )
    }

    #[tokio::test]
    async fn a_response_head_over_its_cap_is_refused() {
        let client = HttpClient::with_settings(
            Duration::from_secs(3),
            Duration::from_secs(10),
            RetryPolicy::none(),
        );
        let fits = client.open(&long_head_server(1024)).await.unwrap();
        assert_eq!(fits.size(), 1);
        let err = client
            .open(&long_head_server(2 * MAX_RESPONSE_HEAD))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("message head is too large"), "{err}");
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-0/10"), Some((0, 0, 10)));
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, 10)));
        assert_eq!(parse_content_range("bytes 5-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn redact_url_hides_userinfo_and_query_of_any_url() {
        let shown = redact_url("http://alice:s3cret@h:8080/d.qcow2?X-Amz-Signature=ff&a=b");
        assert_eq!(shown, "http://h:8080/d.qcow2?…");
        assert_eq!(redact_url("https://h/x.img"), "https://h/x.img");
        assert_eq!(redact_url("not a url?token=1"), "not a url?…");
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let u = url::Url::parse("https://user:pw@h.example/b/k?X-Amz-Signature=abc").unwrap();
        let shown = redact(&u);
        assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
        assert!(shown.starts_with("https://h.example/b/k"), "{shown}");
    }
}
