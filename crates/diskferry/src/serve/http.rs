//! The HTTP surface of `diskferry serve`: Prometheus scrapes, health checks, the jobs' state
//! and starting a run now.
//!
//! | route | token | answers |
//! |---|---|---|
//! | `GET /healthz` | no | 200 `ok`, or 503 with the runner's reason |
//! | `GET /metrics` | no | 200, the [`Metrics`] in the Prometheus text format ([`METRICS_CONTENT_TYPE`]) |
//! | `GET /jobs` | yes | 200, a [`JobsView`] as JSON |
//! | `POST /jobs/NAME/run` | yes | 202 started, 404 no such job, 409 already running, 503 stopping |
//!
//! Every other route needs the token too, so a client without it learns nothing but that the
//! service is up: 401 (with `WWW-Authenticate: Bearer`) comes before 404 or 405. The token is
//! `Authorization: Bearer TOKEN`, the contents of a file (see [`ApiToken::from_file`]), and is
//! compared in constant time. Wrong methods get 405 with `Allow`; a body larger than
//! [`HttpLimits::max_body_bytes`] gets 413, one not sent within
//! [`HttpLimits::body_read_timeout`] 408. Errors are JSON: `{"error": "what went wrong"}`.
//!
//! The server is HTTP/1.1 on hyper, bounded: at most [`HttpLimits::max_connections`] at once,
//! request heads of at most [`HttpLimits::max_header_bytes`] read within
//! [`HttpLimits::header_read_timeout`] (the same timeout closes idle keep-alive connections),
//! and a graceful shutdown on a [`CancellationToken`] that waits at most
//! [`HttpLimits::shutdown_grace`] for requests in progress. It listens on loopback unless
//! configured otherwise ([`DEFAULT_LISTEN_ADDR`]).
//!
//! # Slow clients
//!
//! A connection holds its slot only while it has a request in progress (from its head read
//! to its answer handed to the socket). When every slot is taken and a client connects, the
//! connection idle the longest (no request, or a head still coming) is closed to make room:
//! so clients that open connections and send their heads byte by byte ("slowloris") cannot
//! keep a Prometheus scrape or a health check out, however many they open, and the number of
//! connections still never exceeds the limit. Only when every connection has a request in
//! progress does a new one wait (none of the token-less routes keeps one in progress: they
//! answer at once without reading a body). A per-address limit would not help: behind a
//! Kubernetes Service or a proxy, and on loopback, every client has the same address.
//!
//! # `/jobs`
//!
//! ```json
//! {
//!   "jobs": [
//!     {
//!       "name": "nightly",
//!       "kind": "export",
//!       "schedule": "0 2 * * * (Europe/Berlin)",
//!       "next_run": "2026-12-07T01:00:00Z",
//!       "images": [
//!         {
//!           "image": "rbd/vm1-os",
//!           "last_run": {
//!             "started": "2026-12-06T01:00:00Z",
//!             "finished": "2026-12-06T01:04:10Z",
//!             "result": "success",
//!             "error": null
//!           },
//!           "last_success": "2026-12-06T01:04:10Z",
//!           "in_flight": null
//!         },
//!         {
//!           "image": "rbd/vm1-data",
//!           "last_run": null,
//!           "last_success": null,
//!           "in_flight": { "started": "2026-12-06T01:00:00Z", "progress": 0.42 }
//!         }
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! Times are RFC 3339 in UTC; absent values are `null`, never missing keys. `progress` is a
//! ratio from 0 to 1, as `diskferry_run_progress_ratio`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, RunResult, CONTENT_TYPE as METRICS_TEXT_FORMAT};

/// Where the HTTP API listens unless the configuration says otherwise: loopback only, so
/// exposing it is a decision (Prometheus' exporter port registry lists no diskferry port;
/// 9750 is unassigned there).
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9750));

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = METRICS_TEXT_FORMAT;

/// The `Content-Type` of `/jobs` and of error bodies.
const JSON_CONTENT_TYPE: &str = "application/json";

/// The `Content-Type` of `/healthz`.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The realm named in `WWW-Authenticate`.
const AUTH_REALM: &str = "diskferry";

/// The shortest token accepted: 16 characters; a random token of 32 bytes in base64 is 44.
pub const MIN_TOKEN_LEN: usize = 16;

/// The permission bits a token file must not have: any access by group or others, as ssh
/// requires of a private key (the token gives the power to start runs).
const TOKEN_FILE_FORBIDDEN_MODE: u32 = 0o077;

/// The same for a token file owned by root: its group may read it, so that a Kubernetes
/// Secret mounted with `fsGroup` and `defaultMode: 0440` (owner root, group the pod's) is
/// readable by the service's non-root user, PostgreSQL's rule for its key files.
const TOKEN_FILE_FORBIDDEN_MODE_ROOT_OWNED: u32 = 0o037;

/// The user id of root.
const ROOT_UID: u32 = 0;

/// The permission bits of a file mode.
const PERMISSION_BITS: u32 = 0o777;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors), so
/// the error does not turn into a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bounds the server keeps. [`Default`] is what `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once. A client connecting when all are open takes the place of
    /// the one idle the longest; it waits only while every one has a request in progress.
    pub max_connections: usize,
    /// Time a client has to send a request's head; also closes idle keep-alive connections.
    /// Slow clients do not hold others out for this long: see the module's "Slow clients".
    pub header_read_timeout: Duration,
    /// Size of a request head (request line and headers); hyper refuses less than 8 KiB.
    pub max_header_bytes: usize,
    /// Headers in one request.
    pub max_headers: usize,
    /// Size of a request body (no route needs one; clients may send a small one).
    pub max_body_bytes: usize,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// How long a shutdown waits for requests in progress before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024,
            body_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The state of every configured job, as `/jobs` shows it (shape: the module documentation).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobsView {
    /// Every configured job, in configuration order.
    pub jobs: Vec<JobView>,
}

/// One job in [`JobsView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job's name, as in the configuration and in metric labels.
    pub name: String,
    /// The job's kind: `snapshot`, `export` or `longhorn-backup`.
    pub kind: String,
    /// The schedule as configured, with its time zone.
    pub schedule: String,
    /// When the scheduler starts the job next; `null` if never (a schedule with no future
    /// time).
    pub next_run: Option<DateTime<Utc>>,
    /// The job's images (or VM disk groups), as last resolved.
    pub images: Vec<ImageView>,
}

/// One image (or VM disk group) of a job in [`JobsView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    /// The image, as named in metric labels (e.g. `rbd/vm1-os`).
    pub image: String,
    /// The last finished run over this image by this instance; `null` if none since start.
    pub last_run: Option<LastRun>,
    /// The last successful run on record (read back from storage at start); `null` if none.
    pub last_success: Option<DateTime<Utc>>,
    /// The run in progress in this instance, if any.
    pub in_flight: Option<InFlight>,
}

/// A finished run in [`ImageView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// How it ended.
    pub result: RunResult,
    /// Why it failed; `null` after a success.
    pub error: Option<String>,
}

/// A run in progress in [`ImageView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// When it started.
    pub started: DateTime<Utc>,
    /// The share of its work done, 0 to 1.
    pub progress: f64,
}

/// What [`JobControl::run_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNow {
    /// A run of the job started (in the background): 202.
    Started,
    /// No job has that name: 404.
    UnknownJob,
    /// The job is running already: 409.
    AlreadyRunning,
    /// The service is shutting down and starts no run: 503.
    Stopping,
}

/// What the runner offers the HTTP API. Calls come from request tasks: keep them quick
/// (snapshot state, spawn work; never wait for a run).
pub trait JobControl: Send + Sync + 'static {
    /// The state of every job now.
    fn jobs(&self) -> JobsView;

    /// Starts a run of the job named `job` now, outside its schedule.
    fn run_now(&self, job: &str) -> RunNow;

    /// `Err(reason)` when the service cannot do its work (e.g. its scheduler stopped); then
    /// `/healthz` answers 503 with the reason. Healthy by default.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Errors starting the HTTP API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The token file cannot be read.
    #[error("cannot read the API token file {}: {source}", path.display())]
    TokenRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The token file may be read or written by others than its owner.
    #[error(
        "the API token file {file} is open to group or others (mode {mode:04o}); like an ssh \
         private key it must be its owner's only: chmod 600 {file} (a file owned by root may \
         also be readable by its group: chmod 640)",
        file = .path.display()
    )]
    TokenTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file's contents are not a usable token.
    #[error("the API token file {}: {problem}", path.display())]
    TokenInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: TokenProblem,
    },
    /// The address cannot be listened on.
    #[error("cannot listen on {addr} for the HTTP API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why a token file's contents are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    /// Nothing but white space.
    #[error("is empty")]
    Empty,
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "holds a token shorter than {MIN_TOKEN_LEN} characters (make one with \
         `head -c 32 /dev/urandom | base64`)"
    )]
    TooShort,
    /// White space, control or non-ASCII characters inside the token, which no
    /// `Authorization` header can carry as sent.
    #[error("holds white space, control or non-ASCII characters inside the token")]
    BadCharacters,
}

/// The bearer token of the API, kept only as its SHA-256 (so comparing never depends on where
/// a wrong token first differs, nor on its length, and the secret is not kept in memory).
#[derive(Clone)]
pub struct ApiToken {
    /// `None`: no token is configured and none is accepted ([`ApiToken::none`]).
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// Reads the token from `path`: its whole contents without leading and trailing white
    /// space (a trailing newline is usual), at least [`MIN_TOKEN_LEN`] visible ASCII
    /// characters (a Kubernetes Secret mounted as a file fits).
    ///
    /// The file must be its owner's only (mode 0600 or 0400), or, owned by root, at most
    /// readable by its group (0640, 0440: a Kubernetes Secret mounted with `fsGroup`), as ssh
    /// and PostgreSQL require of private keys; else it is refused before it is read.
    pub fn from_file(path: &Path) -> Result<Self, HttpError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;

        let read_error = |source| HttpError::TokenRead {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        // The opened file's, so that what is checked is what is read.
        let meta = file.metadata().map_err(read_error)?;
        let forbidden = if meta.uid() == ROOT_UID {
            TOKEN_FILE_FORBIDDEN_MODE_ROOT_OWNED
        } else {
            TOKEN_FILE_FORBIDDEN_MODE
        };
        if meta.mode() & forbidden != 0 {
            return Err(HttpError::TokenTooOpen {
                path: path.to_owned(),
                mode: meta.mode() & PERMISSION_BITS,
            });
        }
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(read_error)?;
        Self::from_secret(&contents).map_err(|problem| HttpError::TokenInvalid {
            path: path.to_owned(),
            problem,
        })
    }

    fn from_secret(contents: &[u8]) -> Result<Self, TokenProblem> {
        let token = contents.trim_ascii();
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(TokenProblem::BadCharacters);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenProblem::TooShort);
        }
        Ok(Self {
            digest: Some(Sha256::digest(token).into()),
        })
    }

    /// No token: every route that needs one answers 401, so only `/healthz` and `/metrics`
    /// are served (a configuration without `http.token-file`).
    pub fn none() -> Self {
        Self { digest: None }
    }

    /// Whether `presented` is the token, in time independent of where it differs.
    fn matches(&self, presented: &[u8]) -> bool {
        let Some(digest) = &self.digest else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(digest).into()
    }
}

/// The HTTP API server, bound and ready to [`HttpServer::run`].
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    limits: HttpLimits,
    handler: Arc<Handler>,
}

/// What a request needs: shared by every connection.
struct Handler {
    metrics: Arc<Metrics>,
    control: Arc<dyn JobControl>,
    token: ApiToken,
    limits: HttpLimits,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Listens on `addr` (port 0 picks a free one: see [`HttpServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        control: Arc<dyn JobControl>,
        token: ApiToken,
        limits: HttpLimits,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(Self {
            listener,
            limits,
            handler: Arc::new(Handler {
                metrics,
                control,
                token,
                limits,
            }),
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then stops accepting, lets requests in progress finish
    /// for at most [`HttpLimits::shutdown_grace`], and returns.
    pub async fn run(self, cancel: CancellationToken) {
        let Self {
            listener,
            limits,
            handler,
        } = self;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let open = Arc::new(OpenConnections::default());
        let graceful = GracefulShutdown::new();
        loop {
            // Accepted before a slot is free, so that a new client can make room (at most
            // one connection beyond the limit, this one, waits here).
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP API: accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let Some(slot) = open.make_room(&slots, &cancel).await else {
                break;
            };
            let (id, evicted) = open.register();
            let handler = Arc::clone(&handler);
            let busy_open = Arc::clone(&open);
            let service = service_fn(move |request| {
                let handler = Arc::clone(&handler);
                let busy = busy_open.busy(id);
                async move {
                    let response = handler.handle(request).await;
                    // Idle again once hyper has taken the whole answer (it drops the body).
                    Ok::<_, Infallible>(response.map(|body| {
                        body.map_frame(move |frame| {
                            let _in_progress = &busy;
                            frame
                        })
                    }))
                }
            });
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                tokio::select! {
                    ended = connection => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "HTTP API: connection ended with an error");
                        }
                    }
                    // Dropping the connection closes it; it had no request in progress.
                    _ = evicted.cancelled() => {
                        tracing::debug!("HTTP API: closed an idle connection to make room");
                    }
                }
                open.remove(id);
                drop(slot);
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?limits.shutdown_grace,
                "HTTP API: requests still in progress at shutdown were dropped"
            );
        }
    }
}

/// The open connections, so that a new client can take the place of the one idle the longest.
#[derive(Default)]
struct OpenConnections {
    state: Mutex<OpenState>,
    /// Signalled when a connection becomes idle (it can then make room).
    became_idle: Notify,
}

#[derive(Default)]
struct OpenState {
    next_id: u64,
    connections: HashMap<u64, OpenConnection>,
}

struct OpenConnection {
    /// Requests in progress (hyper serves one at a time; a count needs no ordering of the
    /// end of one and the start of the next).
    busy: usize,
    /// Since when it has had no request in progress (or since it was accepted).
    idle_since: Instant,
    /// Cancelled to close it.
    evict: CancellationToken,
}

/// Marks a connection's request in progress until dropped (with the answer's body).
struct Busy {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.open.lock();
        if let Some(connection) = state.connections.get_mut(&self.id) {
            connection.busy = connection.busy.saturating_sub(1);
            if connection.busy == 0 {
                connection.idle_since = Instant::now();
                self.open.became_idle.notify_one();
            }
        }
    }
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenState> {
        // The state stays consistent at every step: a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection, idle; its id and the token that closes it.
    fn register(&self) -> (u64, CancellationToken) {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let evict = CancellationToken::new();
        state.connections.insert(
            id,
            OpenConnection {
                busy: 0,
                idle_since: Instant::now(),
                evict: evict.clone(),
            },
        );
        (id, evict)
    }

    fn remove(&self, id: u64) {
        self.lock().connections.remove(&id);
    }

    /// Marks a request of connection `id` in progress, until the guard is dropped.
    fn busy(self: &Arc<Self>, id: u64) -> Busy {
        if let Some(connection) = self.lock().connections.get_mut(&id) {
            connection.busy += 1;
        }
        Busy {
            open: Arc::clone(self),
            id,
        }
    }

    /// Closes the connection idle the longest, if one is and none is closing already (its
    /// slot is on its way); whether room is being made.
    fn evict_longest_idle(&self) -> bool {
        let state = self.lock();
        if state.connections.values().any(|c| c.evict.is_cancelled()) {
            return true;
        }
        let victim = state
            .connections
            .values()
            .filter(|c| c.busy == 0 && !c.evict.is_cancelled())
            .min_by_key(|c| c.idle_since);
        match victim {
            Some(connection) => {
                connection.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// A free slot: at once if there is one, else after closing the connection idle the
    /// longest, else when one frees or becomes idle. `None` when `cancel` fires first.
    async fn make_room(
        &self,
        slots: &Arc<Semaphore>,
        cancel: &CancellationToken,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
                return Some(slot);
            }
            self.evict_longest_idle();
            tokio::select! {
                _ = cancel.cancelled() => return None,
                // The semaphore is never closed.
                slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
                _ = self.became_idle.notified() => {}
            }
        }
    }
}

/// The routes, after the path is split.
enum Route<'a> {
    Healthz,
    Metrics,
    Jobs,
    RunJob(&'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        "/jobs" => Route::Jobs,
        _ => match path
            .strip_prefix("/jobs/")
            .and_then(|rest| rest.strip_suffix("/run"))
        {
            Some(name) if !name.is_empty() && !name.contains('/') => Route::RunJob(name),
            _ => Route::Unknown,
        },
    }
}

/// Why a request's credentials are refused.
enum AuthFailure {
    Missing,
    Invalid,
}

impl Handler {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let is_read = method == Method::GET || method == Method::HEAD;
        match route(request.uri().path()) {
            Route::Healthz if is_read => match self.control.health() {
                Ok(()) => text(StatusCode::OK, "ok\n"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            Route::Metrics if is_read => {
                respond(StatusCode::OK, METRICS_CONTENT_TYPE, self.metrics.render())
            }
            Route::Healthz | Route::Metrics => method_not_allowed("GET, HEAD"),
            protected => {
                if let Err(failure) = self.authorize(&request) {
                    return unauthorized(failure);
                }
                match protected {
                    Route::Jobs if is_read => json(StatusCode::OK, &self.control.jobs()),
                    Route::Jobs => method_not_allowed("GET, HEAD"),
                    Route::RunJob(name) if method == Method::POST => {
                        let name = name.to_owned();
                        if let Err(response) = self.read_body(request).await {
                            return response;
                        }
                        self.run_now(&name)
                    }
                    Route::RunJob(_) => method_not_allowed("POST"),
                    _ => error(StatusCode::NOT_FOUND, "no such resource"),
                }
            }
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), AuthFailure> {
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?;
        let (scheme, token) = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .ok_or(AuthFailure::Invalid)?;
        // The scheme is case-insensitive (RFC 9110, 11.1).
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Invalid);
        }
        if self.token.matches(token.trim().as_bytes()) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }

    /// Reads (and discards) the request body within the size and time limits.
    async fn read_body(&self, request: Request<Incoming>) -> Result<(), Response<Full<Bytes>>> {
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body larger than {} bytes",
                    self.limits.max_body_bytes
                ),
            )
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body_bytes as u64) {
            return Err(too_large());
        }
        let body = Limited::new(request.into_body(), self.limits.max_body_bytes);
        match tokio::time::timeout(self.limits.body_read_timeout, body.collect()).await {
            Err(_elapsed) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn run_now(&self, name: &str) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct Started<'a> {
            job: &'a str,
            status: &'static str,
        }
        match self.control.run_now(name) {
            RunNow::Started => json(
                StatusCode::ACCEPTED,
                &Started {
                    job: name,
                    status: "started",
                },
            ),
            RunNow::UnknownJob => error(StatusCode::NOT_FOUND, format!("no job named {name:?}")),
            RunNow::AlreadyRunning => error(
                StatusCode::CONFLICT,
                format!("job {name:?} is running already"),
            ),
            RunNow::Stopping => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down and starts no run",
            ),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, TEXT_CONTENT_TYPE, body)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, JSON_CONTENT_TYPE, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer as JSON: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct ErrorBody {
        error: String,
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: message.into(),
    })
    // A struct of one string always serialises.
    .unwrap_or_default();
    respond(status, JSON_CONTENT_TYPE, body)
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn unauthorized(failure: AuthFailure) -> Response<Full<Bytes>> {
    // RFC 6750, 3: no error code when no credentials came; invalid_token when they are wrong.
    let (challenge, message) = match failure {
        AuthFailure::Missing => (
            format!("Bearer realm=\"{AUTH_REALM}\""),
            "this resource needs an Authorization: Bearer token",
        ),
        AuthFailure::Invalid => (
            format!("Bearer realm=\"{AUTH_REALM}\", error=\"invalid_token\""),
            "the bearer token is not valid",
        ),
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::Instant;

    use chrono::TimeZone;
    use http::HeaderMap;
    use http_body_util::combinators::BoxBody;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;

    use crate::serve::metrics::ArtifactKind;

    const TOKEN: &str = "s3cr3t-token-0123456789abcdef";

    /// The runner's side, in memory: two jobs, one of them running.
    #[derive(Debug)]
    struct FakeControl {
        view: JobsView,
        running: Mutex<BTreeSet<String>>,
        started: Mutex<Vec<String>>,
        health: Mutex<Result<(), String>>,
    }

    impl JobControl for FakeControl {
        fn jobs(&self) -> JobsView {
            self.view.clone()
        }

        fn run_now(&self, job: &str) -> RunNow {
            if !self.view.jobs.iter().any(|j| j.name == job) {
                return RunNow::UnknownJob;
            }
            if !self.running.lock().unwrap().insert(job.to_owned()) {
                return RunNow::AlreadyRunning;
            }
            self.started.lock().unwrap().push(job.to_owned());
            RunNow::Started
        }

        fn health(&self) -> Result<(), String> {
            self.health.lock().unwrap().clone()
        }
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, s).unwrap()
    }

    fn sample_view() -> JobsView {
        JobsView {
            jobs: vec![
                JobView {
                    name: "nightly".into(),
                    kind: "export".into(),
                    schedule: "0 2 * * * (Europe/Berlin)".into(),
                    next_run: Some(Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap()),
                    images: vec![
                        ImageView {
                            image: "rbd/vm1-os".into(),
                            last_run: Some(LastRun {
                                started: at(1, 0, 0),
                                finished: at(1, 4, 10),
                                result: RunResult::Success,
                                error: None,
                            }),
                            last_success: Some(at(1, 4, 10)),
                            in_flight: None,
                        },
                        ImageView {
                            image: "rbd/vm1-data".into(),
                            last_run: None,
                            last_success: None,
                            in_flight: Some(InFlight {
                                started: at(1, 0, 0),
                                progress: 0.42,
                            }),
                        },
                    ],
                },
                JobView {
                    name: "hourly".into(),
                    kind: "snapshot".into(),
                    schedule: "@hourly (UTC)".into(),
                    next_run: None,
                    images: vec![],
                },
            ],
        }
    }

    struct TestServer {
        addr: SocketAddr,
        cancel: CancellationToken,
        task: JoinHandle<()>,
        control: Arc<FakeControl>,
        _dir: tempfile::TempDir,
    }

    /// Writes a file only its owner may read, as a token file must be.
    fn write_secret(path: &Path, contents: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    async fn start(limits: HttpLimits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        // As a Secret or `echo TOKEN > file` leaves it: with white space around.
        write_secret(&token_file, &format!("  {TOKEN}\n"));
        let token = ApiToken::from_file(&token_file).unwrap();
        let metrics = Arc::new(Metrics::new([("nightly", "rbd/vm1-os")]));
        metrics.created("nightly", ArtifactKind::Snapshot);
        let control = Arc::new(FakeControl {
            view: sample_view(),
            running: Mutex::new(BTreeSet::from(["hourly".to_owned()])),
            started: Mutex::new(Vec::new()),
            health: Mutex::new(Ok(())),
        });
        let server = HttpServer::bind(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            metrics,
            Arc::clone(&control) as Arc<dyn JobControl>,
            token,
            limits,
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(cancel.clone()));
        TestServer {
            addr,
            cancel,
            task,
            control,
            _dir: dir,
        }
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    impl Answer {
        fn header(&self, name: impl http::header::AsHeaderName) -> &str {
            self.headers
                .get(name)
                .map(|v| v.to_str().unwrap())
                .unwrap_or("")
        }

        fn error(&self) -> String {
            let value: serde_json::Value = serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("error body {:?} is no JSON: {e}", self.body));
            value["error"]
                .as_str()
                .expect("an error message")
                .to_owned()
        }
    }

    type Body = BoxBody<Bytes, Infallible>;

    /// Sends one request with hyper's client over a new connection.
    async fn send(addr: SocketAddr, request: Request<Body>) -> Answer {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    fn request(method: Method, path: &str, token: Option<&str>, body: Body) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost");
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(body).unwrap()
    }

    fn empty() -> Body {
        Full::new(Bytes::new()).boxed()
    }

    async fn call(server: &TestServer, method: Method, path: &str, token: Option<&str>) -> Answer {
        send(server.addr, request(method, path, token, empty())).await
    }

    #[tokio::test]
    async fn healthz_answers_without_a_token_and_reports_an_unhealthy_runner() {
        let server = start(HttpLimits::default()).await;
        let answer = call(&server, Method::GET, "/healthz", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "ok\n");

        *server.control.health.lock().unwrap() = Err("the scheduler stopped".into());
        let answer = call(&server, Method::GET, "/healthz", None).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body, "the scheduler stopped\n");
    }

    #[tokio::test]
    async fn metrics_answers_without_a_token_in_the_text_format() {
        let server = start(HttpLimits::default()).await;
        let answer = call(&server, Method::GET, "/metrics", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.header(CONTENT_TYPE),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            answer.body.contains(
                "diskferry_artifacts_created_total{job=\"nightly\",kind=\"snapshot\"} 1\n"
            ),
            "{}",
            answer.body
        );

        let answer = call(&server, Method::HEAD, "/metrics", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header(CONTENT_TYPE), METRICS_CONTENT_TYPE);
        assert!(
            answer.body.is_empty(),
            "HEAD has no body: {:?}",
            answer.body
        );
    }

    #[tokio::test]
    async fn jobs_needs_the_token() {
        let server = start(HttpLimits::default()).await;

        let answer = call(&server, Method::GET, "/jobs", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.header(http::header::WWW_AUTHENTICATE),
            "Bearer realm=\"diskferry\""
        );
        assert!(!answer.body.contains("nightly"), "{}", answer.body);

        let wrong = format!("{TOKEN}x");
        for token in [wrong.as_str(), &TOKEN[..TOKEN.len() - 1], ""] {
            let answer = call(&server, Method::GET, "/jobs", Some(token)).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "token {token:?}");
            assert_eq!(
                answer.header(http::header::WWW_AUTHENTICATE),
                "Bearer realm=\"diskferry\", error=\"invalid_token\""
            );
        }

        // Another scheme with the right secret is no bearer token.
        let basic = Request::builder()
            .uri("/jobs")
            .header(http::header::HOST, "localhost")
            .header(AUTHORIZATION, format!("Basic {TOKEN}"))
            .body(empty())
            .unwrap();
        assert_eq!(
            send(server.addr, basic).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn jobs_with_the_token_is_the_runners_view_as_json() {
        let server = start(HttpLimits::default()).await;
        let answer = call(&server, Method::GET, "/jobs", Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header(CONTENT_TYPE), "application/json");
        let view: JobsView = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(view, sample_view());

        // The scheme is case-insensitive.
        let lower = Request::builder()
            .uri("/jobs")
            .header(http::header::HOST, "localhost")
            .header(AUTHORIZATION, format!("bearer {TOKEN}"))
            .body(empty())
            .unwrap();
        assert_eq!(send(server.addr, lower).await.status, StatusCode::OK);
    }

    /// The JSON shape documented in the module doc, key for key.
    #[test]
    fn jobs_json_has_the_documented_shape() {
        let value = serde_json::to_value(sample_view()).unwrap();
        let expected = serde_json::json!({
            "jobs": [
                {
                    "name": "nightly",
                    "kind": "export",
                    "schedule": "0 2 * * * (Europe/Berlin)",
                    "next_run": "2026-12-07T01:00:00Z",
                    "images": [
                        {
                            "image": "rbd/vm1-os",
                            "last_run": {
                                "started": "2026-12-06T01:00:00Z",
                                "finished": "2026-12-06T01:04:10Z",
                                "result": "success",
                                "error": null
                            },
                            "last_success": "2026-12-06T01:04:10Z",
                            "in_flight": null
                        },
                        {
                            "image": "rbd/vm1-data",
                            "last_run": null,
                            "last_success": null,
                            "in_flight": { "started": "2026-12-06T01:00:00Z", "progress": 0.42 }
                        }
                    ]
                },
                {
                    "name": "hourly",
                    "kind": "snapshot",
                    "schedule": "@hourly (UTC)",
                    "next_run": null,
                    "images": []
                }
            ]
        });
        assert_eq!(value, expected);
    }

    #[tokio::test]
    async fn run_now_needs_the_token_and_starts_nothing_without_it() {
        let server = start(HttpLimits::default()).await;
        let answer = call(&server, Method::POST, "/jobs/nightly/run", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(answer.headers.contains_key(http::header::WWW_AUTHENTICATE));
        let answer = call(
            &server,
            Method::POST,
            "/jobs/nightly/run",
            Some("wrong-token-0123456789"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(server.control.started.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn run_now_starts_a_job_once_and_refuses_unknown_and_running_ones() {
        let server = start(HttpLimits::default()).await;

        let answer = call(&server, Method::POST, "/jobs/nightly/run", Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"job": "nightly", "status": "started"})
        );
        assert_eq!(*server.control.started.lock().unwrap(), ["nightly"]);

        // Now it runs: a second request is a conflict.
        let answer = call(&server, Method::POST, "/jobs/nightly/run", Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert_eq!(answer.error(), "job \"nightly\" is running already");

        let answer = call(&server, Method::POST, "/jobs/weekly/run", Some(TOKEN)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.error(), "no job named \"weekly\"");

        assert_eq!(*server.control.started.lock().unwrap(), ["nightly"]);
    }

    #[tokio::test]
    async fn wrong_methods_get_405_with_allow() {
        let server = start(HttpLimits::default()).await;
        for (method, path, token, allow) in [
            (Method::POST, "/metrics", None, "GET, HEAD"),
            (Method::DELETE, "/healthz", None, "GET, HEAD"),
            (Method::POST, "/jobs", Some(TOKEN), "GET, HEAD"),
            (Method::GET, "/jobs/nightly/run", Some(TOKEN), "POST"),
        ] {
            let answer = call(&server, method.clone(), path, token).await;
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(answer.header(ALLOW), allow, "{method} {path}");
        }
        assert!(server.control.started.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn other_paths_need_the_token_before_they_are_404() {
        let server = start(HttpLimits::default()).await;
        for path in [
            "/",
            "/jobs/",
            "/jobs/nightly",
            "/jobs//run",
            "/jobs/a/b/run",
            "/metrics/x",
        ] {
            let answer = call(&server, Method::GET, path, None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
            let answer = call(&server, Method::GET, path, Some(TOKEN)).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413_and_starts_nothing() {
        let limits = HttpLimits {
            max_body_bytes: 64,
            ..HttpLimits::default()
        };
        let server = start(limits).await;

        // Declared by Content-Length.
        let body = Full::new(Bytes::from(vec![b'x'; 65])).boxed();
        let answer = send(
            server.addr,
            request(Method::POST, "/jobs/nightly/run", Some(TOKEN), body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.error(), "request body larger than 64 bytes");

        // Chunked, no length declared: found while reading.
        let chunks = futures::stream::iter(
            [Bytes::from(vec![b'x'; 40]), Bytes::from(vec![b'y'; 40])]
                .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
        );
        let body = BodyExt::boxed(StreamBody::new(chunks));
        let answer = send(
            server.addr,
            request(Method::POST, "/jobs/nightly/run", Some(TOKEN), body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(server.control.started.lock().unwrap().is_empty());

        // Within the limit is fine.
        let body = Full::new(Bytes::from_static(b"{}")).boxed();
        let answer = send(
            server.addr,
            request(Method::POST, "/jobs/nightly/run", Some(TOKEN), body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }

    /// Sends `head` on a raw connection and reads until the server closes it (or 5 s pass).
    async fn raw_exchange(addr: SocketAddr, head: &str) -> (String, Duration) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let start = Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        (
            String::from_utf8_lossy(&answer).into_owned(),
            start.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_body_not_sent_in_time_gets_408() {
        let limits = HttpLimits {
            body_read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let server = start(limits).await;
        let head = format!(
            "POST /jobs/nightly/run HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 10\r\nConnection: close\r\n\r\n"
        );
        let (answer, waited) = raw_exchange(server.addr, &head).await;
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(server.control.started.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_head_not_sent_in_time_closes_the_connection() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let server = start(limits).await;
        let (answer, waited) =
            raw_exchange(server.addr, "GET /healthz HTTP/1.1\r\nHost: loc").await;
        // hyper answers 408 or just closes; it never serves the request.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
            "{answer}"
        );
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_is_refused() {
        let server = start(HttpLimits::default()).await;
        let big = "x".repeat(HttpLimits::default().max_header_bytes + 1);
        let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
        let (answer, _) = raw_exchange(server.addr, &head).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    /// The bound a scrape must be answered in while slow clients hold every connection:
    /// well under the header timeout they would otherwise hold their slots for (10 s, the
    /// default scrape timeout of Prometheus too).
    const SCRAPE_BOUND: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn slow_clients_holding_every_connection_do_not_keep_a_scrape_out() {
        let limits = HttpLimits::default();
        assert!(limits.header_read_timeout > 2 * SCRAPE_BOUND);
        let server = start(limits).await;
        // Twice as many clients as connections, each sending half a head and then nothing.
        let mut slow = Vec::new();
        for _ in 0..2 * limits.max_connections {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
                .await
                .unwrap();
            slow.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let started = Instant::now();
        let answer =
            tokio::time::timeout(SCRAPE_BOUND, call(&server, Method::GET, "/metrics", None))
                .await
                .unwrap_or_else(|_| panic!("no answer to a scrape within {SCRAPE_BOUND:?}"));
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("diskferry_"), "{}", answer.body);
        let healthz = tokio::time::timeout(SCRAPE_BOUND, call_owned(server.addr))
            .await
            .expect("an answer to /healthz");
        assert_eq!(healthz, StatusCode::OK);
        assert!(started.elapsed() < SCRAPE_BOUND, "{:?}", started.elapsed());

        // Still bounded: the slow clients that were closed made the room, the others are
        // at most the limit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut still_open = 0;
        let mut buf = [0u8; 64];
        for stream in &slow {
            match stream.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => still_open += 1,
                // End of stream, a reset, or the 408 hyper may send before closing.
                _ => {}
            }
        }
        assert!(
            still_open <= limits.max_connections,
            "{still_open} slow clients still open, more than {}",
            limits.max_connections
        );
        assert!(still_open > 0, "the newest slow clients were not closed");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_while_every_one_has_a_request_in_progress() {
        let limits = HttpLimits {
            max_connections: 1,
            body_read_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        };
        let server = start(limits).await;
        // The only connection has a request in progress: its body is awaited.
        let mut busy = TcpStream::connect(server.addr).await.unwrap();
        busy.write_all(
            format!(
                "POST /jobs/nightly/run HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {TOKEN}\r\nContent-Length: 10\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = tokio::spawn(call_owned(server.addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "served beyond max_connections");
        // The request in progress was not cut short to make room: it gets its 408.
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer))
            .await
            .expect("the busy connection is answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        let status = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served once the slot is free")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_idle_connection_makes_room_for_a_new_one() {
        let limits = HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        };
        let server = start(limits).await;
        // A keep-alive connection that was served, then idle: it gives its place up.
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let kept_alive = tokio::spawn(connection);
        let first = sender
            .send_request(request(Method::GET, "/healthz", None, empty()))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        first.into_body().collect().await.unwrap();
        let status = tokio::time::timeout(SCRAPE_BOUND, call_owned(server.addr))
            .await
            .expect("the new client is served at once");
        assert_eq!(status, StatusCode::OK);
        tokio::time::timeout(Duration::from_secs(5), kept_alive)
            .await
            .expect("the idle connection was closed")
            .unwrap()
            .unwrap();
    }

    async fn call_owned(addr: SocketAddr) -> StatusCode {
        send(addr, request(Method::GET, "/healthz", None, empty()))
            .await
            .status
    }

    #[tokio::test]
    async fn cancelling_stops_the_server_gracefully() {
        let limits = HttpLimits {
            shutdown_grace: Duration::from_secs(2),
            ..HttpLimits::default()
        };
        let server = start(limits).await;
        assert_eq!(call_owned(server.addr).await, StatusCode::OK);
        // An idle keep-alive connection does not hold the shutdown up.
        let _idle = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        server.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.task)
            .await
            .expect("run returns after cancel")
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let refused = TcpStream::connect(server.addr).await;
        assert!(refused.is_err(), "still listening after shutdown");
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let read = |contents: &str| {
            write_secret(&file, contents);
            ApiToken::from_file(&file)
        };
        let token = read(&format!("\n{TOKEN}\r\n")).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        assert!(!token.matches(format!("{TOKEN}\n").as_bytes()));
        assert!(!token.matches(b""));
        assert_eq!(
            format!("{token:?}"),
            "ApiToken(..)",
            "never prints the secret"
        );

        for (contents, problem) in [
            (" \n", TokenProblem::Empty),
            ("short-token\n", TokenProblem::TooShort),
            ("two words in one token", TokenProblem::BadCharacters),
            (
                "t\u{f6}ken-with-umlaut-0123456789",
                TokenProblem::BadCharacters,
            ),
        ] {
            let err = read(contents).unwrap_err();
            assert!(
                matches!(err, HttpError::TokenInvalid { problem: p, .. } if p == problem),
                "{contents:?}: {err}"
            );
            assert!(
                err.to_string().contains(&file.display().to_string()),
                "{err}"
            );
        }
        let missing = dir.path().join("missing");
        let err = ApiToken::from_file(&missing).unwrap_err();
        assert!(matches!(err, HttpError::TokenRead { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn token_files_open_to_others_are_refused_like_ssh_keys() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let chmod = |mode: u32| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        write_secret(&file, TOKEN);
        let owner = std::fs::metadata(&file).unwrap().uid();
        for mode in [0o600, 0o400] {
            chmod(mode);
            assert!(ApiToken::from_file(&file).is_ok(), "{mode:o}");
        }
        for mode in [0o644, 0o604, 0o620, 0o660, 0o666] {
            chmod(mode);
            let err = ApiToken::from_file(&file).unwrap_err();
            assert!(
                matches!(err, HttpError::TokenTooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("chmod 600 {}", file.display())),
                "{shown}"
            );
            assert!(shown.contains(&format!("mode 0{mode:o}")), "{shown}");
        }
        // Group-readable is for root's files only (a Secret mounted with fsGroup).
        chmod(0o640);
        assert_eq!(
            ApiToken::from_file(&file).is_ok(),
            owner == ROOT_UID,
            "0640 owned by uid {owner}"
        );
        if owner == ROOT_UID {
            // As root, the same file owned by another user is refused.
            std::os::unix::fs::chown(&file, Some(ROOT_UID + 1), None).unwrap();
            assert!(matches!(
                ApiToken::from_file(&file),
                Err(HttpError::TokenTooOpen { mode: 0o640, .. })
            ));
        }
    }

    #[test]
    fn no_token_configured_accepts_no_token() {
        let token = ApiToken::none();
        for presented in [TOKEN.as_bytes(), b"", &[0u8; 32]] {
            assert!(!token.matches(presented));
        }
    }

    #[tokio::test]
    async fn binding_a_used_address_names_it() {
        let server = start(HttpLimits::default()).await;
        let token = ApiToken::from_secret(TOKEN.as_bytes()).unwrap();
        let control = Arc::clone(&server.control) as Arc<dyn JobControl>;
        let err = HttpServer::bind(
            server.addr,
            Arc::new(Metrics::new::<&str, &str>([])),
            control,
            token,
            HttpLimits::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&server.addr.to_string()), "{err}");
    }

    #[test]
    fn the_default_address_is_loopback() {
        assert!(DEFAULT_LISTEN_ADDR.ip().is_loopback());
    }
}
