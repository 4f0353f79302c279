//! Test support: deterministic data, the dev cluster's S3 settings, throw-away buckets and a
//! small HTTP/1.1 server with Range support.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use objstore::{S3Config, S3Store};

/// Deterministic, non-repeating test bytes (so misplaced chunks are detected).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A name unique to this process and moment.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{prefix}-{}-{}-{n}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// The S3 settings: from the environment if complete, else from `scripts/dev-cluster env`.
/// Panics (never skips) with instructions when neither works.
pub fn s3_config() -> S3Config {
    let env = S3Config::from_env();
    if env.endpoint.is_some() && env.access_key_id.is_some() && env.secret_access_key.is_some() {
        return env;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev-cluster");
    let vars: HashMap<String, String> = match Command::new(&script).arg("env").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches(|c| c == '\'' || c == '"').to_owned(),
                )
            })
            .collect(),
        _ => HashMap::new(),
    };
    let c = S3Config::from_lookup(|name| vars.get(name).cloned());
    assert!(
        c.endpoint.is_some() && c.access_key_id.is_some() && c.secret_access_key.is_some(),
        "no S3 endpoint: set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         or run `scripts/dev-cluster up` ({} env gave nothing usable)",
        script.display()
    );
    c
}

/// The S3 store of the test cluster.
pub fn s3_store() -> S3Store {
    S3Store::from_config(&s3_config()).expect("S3 client")
}

/// A bucket created for one test and deleted (with its objects and uploads) on drop, even
/// when the test panics.
pub struct TestBucket {
    pub store: S3Store,
    pub name: String,
}

impl TestBucket {
    pub async fn new(tag: &str) -> Self {
        let store = s3_store();
        let name = unique(&format!("objstore-{tag}"));
        store.create_bucket(&name).await.unwrap_or_else(|e| {
            panic!("create bucket {name} (is `scripts/dev-cluster up` running?): {e}")
        });
        Self { store, name }
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async cleanup from Drop: on a thread with its own runtime and its own client. (The
        // test's client pools connections driven by the test's runtime, which is blocked
        // here; reusing them would stall until the read timeout.)
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(s3_store().empty_and_delete_bucket(&name))
        })
        .join();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of bucket {} failed: {e}", self.name),
            Err(_) => eprintln!("cleanup of bucket {} panicked", self.name),
        }
    }
}

/// How the test server treats `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMode {
    /// Honour it (206), like any static file server.
    Honour,
    /// Ignore it and send the whole body with 200, like some dynamic servers.
    Ignore,
}

/// A tiny HTTP/1.1 file server on 127.0.0.1 with `Range`, `If-Match`, ETags, `HEAD` and a
/// redirect route (`/redirect/NAME` → `/NAME`). Lives as long as the test's runtime.
#[derive(Clone)]
pub struct RangeServer {
    pub addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, (Bytes, u64)>>>,
}

impl RangeServer {
    pub async fn start(mode: RangeMode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, (Bytes, u64)>>> = Arc::default();
        let shared = Arc::clone(&files);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let files = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let files = Arc::clone(&files);
                        async move { Ok::<_, Infallible>(respond(req, &files, mode)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, files }
    }

    /// Publishes (or replaces, with a new ETag) `/name`.
    pub fn put(&self, name: &str, data: Bytes) {
        let mut files = self.files.lock().unwrap();
        let version = files.get(name).map_or(1, |(_, v)| v + 1);
        files.insert(name.to_owned(), (data, version));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

/// Requests seen per flaky route, per server.
static FLAKY: std::sync::LazyLock<Mutex<HashMap<String, u64>>> =
    std::sync::LazyLock::new(Default::default);

fn respond(
    req: Request<Incoming>,
    files: &Mutex<HashMap<String, (Bytes, u64)>>,
    mode: RangeMode,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let reply = |status: StatusCode| Response::builder().status(status);
    // `/flaky/N/name`: 503 for the first N requests, then `name`.
    if let Some(rest) = path.strip_prefix("flaky/") {
        let (n, target) = rest.split_once('/').unwrap();
        let n: u64 = n.parse().unwrap();
        let seen = {
            let mut counts = FLAKY.lock().unwrap();
            let c = counts.entry(format!("{:p}/{rest}", files)).or_insert(0);
            *c += 1;
            *c
        };
        if seen <= n {
            return reply(StatusCode::SERVICE_UNAVAILABLE)
                .body(Full::default())
                .unwrap();
        }
        let mut inner = Request::builder()
            .method(req.method())
            .uri(format!("/{target}"));
        for (k, v) in req.headers() {
            inner = inner.header(k, v);
        }
        let (_, body) = req.into_parts();
        return respond(inner.body(body).unwrap(), files, mode);
    }
    if let Some(target) = path.strip_prefix("redirect/") {
        return reply(StatusCode::FOUND)
            .header(header::LOCATION, format!("/{target}"))
            .body(Full::default())
            .unwrap();
    }
    let Some((data, version)) = files.lock().unwrap().get(&path).cloned() else {
        return reply(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"no such file")))
            .unwrap();
    };
    let etag = format!("\"v{version}\"");
    if let Some(want) = req.headers().get(header::IF_MATCH) {
        if want.to_str().unwrap_or("") != etag {
            return reply(StatusCode::PRECONDITION_FAILED)
                .body(Full::default())
                .unwrap();
        }
    }
    let len = data.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
    let head = req.method() == Method::HEAD;
    let body = |b: Bytes| if head { Full::default() } else { Full::new(b) };
    match (range, mode) {
        (Some((a, b)), RangeMode::Honour) => {
            if a >= len {
                return reply(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Full::default())
                    .unwrap();
            }
            let b = b.min(len - 1);
            reply(StatusCode::PARTIAL_CONTENT)
                .header(header::ETAG, &etag)
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
                .body(body(data.slice(a as usize..=b as usize)))
                .unwrap()
        }
        _ => reply(StatusCode::OK)
            .header(header::ETAG, &etag)
            .body(body(data))
            .unwrap(),
    }
}
