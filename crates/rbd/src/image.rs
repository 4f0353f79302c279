//! Creating, listing, removing images, and the open [`Image`] handle.

use std::ffi::c_char;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rados::{
    c_string, grow_until_fits, owned_from_ptr, split_nul_list, string_from_c_buf, Error, ErrorKind,
    Fit, IoCtx, Result,
};

use crate::config;
use crate::options::ImageOptions;
use crate::{Features, DEFAULT_OBJECT_ORDER, MAX_OBJECT_ORDER, MIN_OBJECT_ORDER};

/// First guess of list sizes; librbd says how many it needs when the guess is short.
const INITIAL_LIST_LEN: usize = 64;
/// First guess of a metadata value's length.
const INITIAL_METADATA_BUF: usize = 1024;
/// How long closing an image waits for asynchronous operations librbd still owns. Each of
/// them ends within the OSD op timeout (`rados_osd_op_timeout`) on a working cluster, but an
/// operation queued inside librbd behind a stalled OSD was seen never to complete (a cleanup
/// waited 450 s until it was killed). Past this wait the image is left open and its
/// operations' buffers are leaked, never freed under librbd (see `ImageHandle::drop`).
pub const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// How to create an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Image features; [`Features::DEFAULT`] unless set.
    pub features: Features,
    /// log2 of the object size (12..=25); 22 (4 MiB) unless set.
    pub object_order: u8,
    /// A separate pool for the data objects (erasure-coded pools need one).
    pub data_pool: Option<String>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            features: Features::DEFAULT,
            object_order: DEFAULT_OBJECT_ORDER,
            data_pool: None,
        }
    }
}

impl CreateOptions {
    /// Sets the object size in bytes; it must be a power of two from 4 KiB to 32 MiB.
    pub fn with_object_size(mut self, bytes: u64) -> Result<Self> {
        let order = bytes.trailing_zeros();
        if !bytes.is_power_of_two()
            || order < u32::from(MIN_OBJECT_ORDER)
            || order > u32::from(MAX_OBJECT_ORDER)
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "use object size",
                format!("{bytes} (a power of two from 4 KiB to 32 MiB)"),
            ));
        }
        self.object_order = order as u8;
        Ok(self)
    }
}

fn spec(ioctx: &IoCtx, name: &str) -> String {
    format!("{}/{}", ioctx.pool(), name)
}

/// Creates an image of `size` bytes. Fails with [`ErrorKind::AlreadyExists`] if it exists.
pub fn create(ioctx: &IoCtx, name: &str, size: u64, options: &CreateOptions) -> Result<()> {
    let target = spec(ioctx, name);
    let c_name = c_string(name, &target)?;
    let mut opts = ImageOptions::with_features(options.features)?;
    opts.set_u64(
        ceph_sys::RBD_IMAGE_OPTION_ORDER,
        options.object_order.into(),
        "order",
    )?;
    if let Some(pool) = &options.data_pool {
        opts.set_str(ceph_sys::RBD_IMAGE_OPTION_DATA_POOL, pool, "data pool")?;
    }
    // SAFETY: the I/O context lives for the call; name is NUL-terminated; the option bag is
    // live and only read by librbd.
    let code =
        unsafe { ceph_sys::api().rbd_create4(ioctx.as_raw(), c_name.as_ptr(), size, opts.raw()) };
    Error::check(code, "create image", &target).map(drop)
}

/// Removes an image (it must have no snapshots and no watchers).
pub fn remove(ioctx: &IoCtx, name: &str) -> Result<()> {
    let target = spec(ioctx, name);
    let c_name = c_string(name, &target)?;
    // SAFETY: live I/O context, NUL-terminated name.
    let code = unsafe { ceph_sys::api().rbd_remove(ioctx.as_raw(), c_name.as_ptr()) };
    Error::check(code, "remove image", &target).map(drop)
}

/// Renames an image within its pool.
pub fn rename(ioctx: &IoCtx, from: &str, to: &str) -> Result<()> {
    let target = format!("{} to {}", spec(ioctx, from), to);
    let c_from = c_string(from, &target)?;
    let c_to = c_string(to, &target)?;
    // SAFETY: live I/O context, NUL-terminated names.
    let code =
        unsafe { ceph_sys::api().rbd_rename(ioctx.as_raw(), c_from.as_ptr(), c_to.as_ptr()) };
    Error::check(code, "rename image", &target).map(drop)
}

/// The names of the images in the pool, sorted.
pub fn list(ioctx: &IoCtx) -> Result<Vec<String>> {
    let op = "list images in pool";
    type Entry = ceph_sys::rbd_image_spec_t;
    grow_until_fits::<Entry, _>(INITIAL_LIST_LEN, op, &ioctx.pool(), |len| {
        let mut specs: Vec<Entry> = Vec::with_capacity(len);
        let mut count = len;
        // SAFETY: `specs` has room for `count` entries; librbd fills at most that many and
        // sets `count` to the number filled, or to the number needed with -ERANGE.
        let code =
            unsafe { ceph_sys::api().rbd_list2(ioctx.as_raw(), specs.as_mut_ptr(), &mut count) };
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(count));
        }
        Error::check(code, op, &ioctx.pool())?;
        // SAFETY: librbd initialised the first `count` entries (count <= capacity).
        unsafe { specs.set_len(count) };
        let mut names: Vec<String> = specs
            .iter()
            // SAFETY: names are NUL-terminated strings owned by the list until cleanup below.
            .map(|s| unsafe { owned_from_ptr(s.name) })
            .collect();
        // SAFETY: frees the strings of exactly the entries librbd filled, once.
        unsafe { ceph_sys::api().rbd_image_spec_list_cleanup(specs.as_mut_ptr(), count) };
        names.sort();
        Ok(Fit::Done(names))
    })
}

/// Which of `name` and `name@snap` is missing, after librbd answered `ENOENT` (which does not
/// say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The image does not exist.
    Image,
    /// The image exists, without that snapshot.
    Snapshot,
    /// Both exist (the snapshot came in the meantime?) or the check itself failed.
    Unknown,
}

/// Finds out which of `name` and `name@snap` is missing.
pub(crate) fn which_is_missing(ioctx: &IoCtx, name: &str, snap: &str) -> Missing {
    match Image::open(ioctx, name, OpenMode::ReadOnly) {
        Err(e) if e.kind() == ErrorKind::NotFound => Missing::Image,
        Ok(image) if matches!(image.snap_exists(snap), Ok(false)) => Missing::Snapshot,
        _ => Missing::Unknown,
    }
}

/// How to open an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenMode {
    /// The head, for reading and writing.
    ReadWrite,
    /// The head, read-only (takes no exclusive lock).
    ReadOnly,
    /// A snapshot by name (read-only).
    Snapshot(String),
    /// A snapshot by id (read-only): the way to read group snapshots, which have no user name.
    SnapshotId(u64),
}

/// Basic facts about an image, as `rbd info` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes (of the snapshot when opened at one).
    pub size: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// Number of objects the size spans.
    pub num_objects: u64,
    /// The object name prefix (`rbd_data.<id>`).
    pub block_name_prefix: String,
    /// Enabled features.
    pub features: Features,
}

/// The asynchronous operations still owned by librbd, so closing waits for them.
#[derive(Default)]
pub(crate) struct InFlight {
    live: Mutex<Vec<Ticket>>,
    idle: Condvar,
}

/// One operation in flight: its librbd completion until the callback takes it back.
pub(crate) type Ticket = Arc<TicketState>;

#[derive(Default)]
pub(crate) struct TicketState {
    completion: Mutex<Option<Completion>>,
}

/// A librbd completion pointer, released once by the completion callback.
struct Completion(ceph_sys::rbd_completion_t);

// SAFETY: a completion may be queried and released from any thread (librbd guards it with its
// own lock); the pointer is only used under the ticket's mutex.
unsafe impl Send for Completion {}

impl TicketState {
    fn completion(&self) -> std::sync::MutexGuard<'_, Option<Completion>> {
        self.completion.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the operation's completion, right after it is created.
    pub(crate) fn arm(&self, completion: ceph_sys::rbd_completion_t) {
        *self.completion() = Some(Completion(completion));
    }

    /// Takes the completion back (the callback runs, or the operation was never started); no
    /// [`TicketState::failed_with`] can read it any more.
    pub(crate) fn disarm(&self) {
        self.completion().take();
    }

    /// The error librbd has already recorded for the operation while its callback has not run
    /// (a negative errno), or `None`. With zero-copy writes that state can be final: librbd
    /// holds the completion of a write it failed early for as long as its failed request keeps
    /// the caller's buffer, which is forever (`stuck.rs`).
    pub(crate) fn failed_with(&self) -> Option<i64> {
        let completion = self.completion();
        let raw = completion.as_ref()?.0;
        // SAFETY: the completion is live: the callback disarms the ticket, under this lock,
        // before it releases it. librbd's `AioCompletion::fail` records the error before it
        // finds the completion blocked, and `get_return_value` reads that field.
        let code = unsafe { ceph_sys::api().rbd_aio_get_return_value(raw) };
        (code < 0).then_some(code as i64)
    }
}

/// How long closing waits before it takes operations that librbd has failed, without
/// running their callback, as never to complete. A failed write whose other object requests
/// are still in flight completes within this time on a working cluster.
const FAILED_GRACE: Duration = Duration::from_secs(1);
/// How often closing looks again while operations are in flight.
const CLOSE_POLL: Duration = Duration::from_millis(100);

impl InFlight {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Ticket>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin(&self) -> Ticket {
        let ticket = Ticket::default();
        self.live().push(ticket.clone());
        ticket
    }

    /// The operation's completion ran (or it was never started).
    pub(crate) fn end(&self, ticket: &Ticket) {
        let mut live = self.live();
        if let Some(at) = live.iter().position(|t| Arc::ptr_eq(t, ticket)) {
            live.swap_remove(at);
        }
        if live.is_empty() {
            self.idle.notify_all();
        }
    }

    /// Waits until no operation is in flight, for at most `limit`; false when some still are,
    /// or sooner when every one left has failed in librbd without completing (after
    /// [`FAILED_GRACE`]): waiting for those would be waiting forever.
    fn wait_idle(&self, limit: Duration) -> bool {
        let started = Instant::now();
        let deadline = started + limit;
        let mut live = self.live();
        while !live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if started.elapsed() >= FAILED_GRACE && live.iter().all(|t| t.failed_with().is_some()) {
                return false;
            }
            live = self
                .idle
                .wait_timeout(live, left.min(CLOSE_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Operations in flight now.
    fn count(&self) -> usize {
        self.live().len()
    }
}

pub(crate) struct ImageHandle {
    pub(crate) raw: ceph_sys::rbd_image_t,
    pub(crate) spec: String,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) ioctx: IoCtx,
    /// Set when writes to this image cannot succeed or librbd would never complete them: a
    /// read-only open (librbd fails such writes, and with zero-copy writes never completes
    /// them: `stuck.rs`), or an object-cacher cache over zero-copy writes (`config.rs`). Every
    /// [`Image::write`] fails with it at once instead.
    pub(crate) write_refusal: Option<Error>,
    /// Whether librbd wraps the callers' buffers in place (`rbd_disable_zero_copy_writes` is
    /// false for this image): a write it fails early then never completes, so writes are
    /// watched for that (`stuck.rs`).
    pub(crate) zero_copy: bool,
}

// SAFETY: librbd's image context guards its state with internal locks and accepts calls on one
// `rbd_image_t` from several threads; QEMU and go-ceph use it that way. The one call that is
// not safe under concurrent I/O, `rbd_snap_set`, is only made in `Image::open` before the
// handle is shared.
unsafe impl Send for ImageHandle {}
// SAFETY: see `Send`.
unsafe impl Sync for ImageHandle {}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        // A dropped future does not cancel its librbd operation: wait until every completion
        // has fired, but not forever (a close that hung for the OSD made a whole job hang).
        if self.in_flight.wait_idle(CLOSE_WAIT) {
            // SAFETY: `raw` came from `rbd_open*`, no operation is in flight, and this is the
            // last owner, so it is closed exactly once.
            unsafe { ceph_sys::api().rbd_close(self.raw) };
            return;
        }
        // Operations are still in flight. rbd_close would wait for them too (librbd drains its
        // queues before it closes), so the image is left open instead, for the rest of the
        // process.
        // SAFETY (memory): nothing is freed under librbd. Each operation's buffer and result
        // channel live in its own boxed request, owned by the completion callback (aio.rs),
        // not by this handle: whenever librbd completes it, the callback frees that box, and
        // if it never does, the box is leaked. The image context stays open, and it uses the
        // I/O context and the cluster connection: one reference to the I/O context (which
        // holds the cluster's) is forgotten here, so neither `rados_ioctx_destroy` nor
        // `rados_shutdown` ever runs under it. The leak is one image context and the
        // buffers of its stuck operations (at most the writes in flight), once per stuck image.
        std::mem::forget(self.ioctx.clone());
        tracing::warn!(
            image = %self.spec,
            in_flight = self.in_flight.count(),
            wait_s = CLOSE_WAIT.as_secs(),
            "operations still in flight after the close wait; leaving the image open"
        );
    }
}

/// An open image. Cheap to clone (shared handle); closed when the last clone is dropped,
/// after every asynchronous operation has completed.
#[derive(Clone)]
pub struct Image {
    pub(crate) handle: Arc<ImageHandle>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("spec", &self.handle.spec)
            .finish()
    }
}

impl Image {
    /// Opens an image.
    pub fn open(ioctx: &IoCtx, name: &str, mode: OpenMode) -> Result<Image> {
        let (spec, snap_name, read_only) = match &mode {
            OpenMode::ReadWrite => (spec(ioctx, name), None, false),
            OpenMode::ReadOnly => (spec(ioctx, name), None, true),
            OpenMode::Snapshot(snap) => (
                format!("{}@{}", spec(ioctx, name), snap),
                Some(snap.as_str()),
                true,
            ),
            OpenMode::SnapshotId(id) => (
                format!("{}@<snap id {}>", spec(ioctx, name), id),
                None,
                true,
            ),
        };
        let c_name = c_string(name, &spec)?;
        let c_snap = snap_name.map(|s| c_string(s, &spec)).transpose()?;
        let mut raw: ceph_sys::rbd_image_t = std::ptr::null_mut();
        // The head is opened, then the snapshot selected (below), never a snapshot by name
        // at open: librbd 16.2.15 frees the image context of an open at a snapshot that fails
        // part-way (the snapshot removed meanwhile) while one of the open's requests is still
        // in flight, and that request's completion later locks freed memory: a hang or a
        // crash of the whole process (RELIABILITY.md, session 10). A failed selection leaves
        // the head open and is closed as usual.
        // SAFETY: live I/O context; name NUL-terminated; null snapshot (the head); valid
        // out-pointer.
        let code = unsafe {
            if read_only {
                ceph_sys::api().rbd_open_read_only(
                    ioctx.as_raw(),
                    c_name.as_ptr(),
                    &mut raw,
                    std::ptr::null(),
                )
            } else {
                ceph_sys::api().rbd_open(
                    ioctx.as_raw(),
                    c_name.as_ptr(),
                    &mut raw,
                    std::ptr::null(),
                )
            }
        };
        if code == -libc::ENOENT {
            return Err(match snap_name {
                Some(_) => Error::from_code(code.into(), "open image", self::spec(ioctx, name))
                    .with_reason("no such image"),
                None => Error::from_code(code.into(), "open image", &spec),
            });
        }
        Error::check(code, "open image", &spec)?;
        let (write_refusal, zero_copy) = if read_only {
            let reason = match mode {
                OpenMode::ReadOnly => "the image was opened read-only",
                _ => "a snapshot is read-only",
            };
            let refusal = Error::from_code((-libc::EROFS).into(), "write to", &spec);
            (Some(refusal.with_reason(reason)), false)
        } else {
            write_settings(raw, &spec)
        };
        let image = Image {
            handle: Arc::new(ImageHandle {
                raw,
                spec,
                in_flight: Arc::default(),
                ioctx: ioctx.clone(),
                write_refusal,
                zero_copy,
            }),
        };
        if let Some(c_snap) = c_snap.as_ref() {
            // SAFETY: the handle is not shared yet, so no I/O runs concurrently with the
            // change of the read snapshot; NUL-terminated name.
            let code = unsafe { ceph_sys::api().rbd_snap_set(image.handle.raw, c_snap.as_ptr()) };
            if code == -libc::ENOENT {
                let image_spec = self::spec(ioctx, name);
                return Err(
                    Error::from_code(code.into(), "open snapshot", &image.handle.spec)
                        .with_reason(format!("no such snapshot (image {image_spec} exists)")),
                );
            }
            Error::check(code, "open snapshot", &image.handle.spec)?;
        }
        if let OpenMode::SnapshotId(id) = mode {
            // SAFETY: the handle is not shared yet, so no I/O runs concurrently with the
            // change of the read snapshot.
            let code = unsafe { ceph_sys::api().rbd_snap_set_by_id(image.handle.raw, id) };
            Error::check(code, "select snapshot of", &image.handle.spec)?;
        }
        Ok(image)
    }

    /// `pool/name[@snap]`, for messages.
    pub fn spec(&self) -> &str {
        &self.handle.spec
    }

    /// The pool the image was opened in.
    pub fn ioctx(&self) -> &IoCtx {
        &self.handle.ioctx
    }

    pub(crate) fn raw(&self) -> ceph_sys::rbd_image_t {
        self.handle.raw
    }

    /// Size, object size, features.
    pub fn stat(&self) -> Result<ImageInfo> {
        let mut info = ceph_sys::rbd_image_info_t::default();
        // SAFETY: open image; `info` is a correctly sized out-struct.
        let code = unsafe {
            ceph_sys::api().rbd_stat(self.raw(), &mut info, std::mem::size_of_val(&info))
        };
        Error::check(code, "stat image", &self.handle.spec)?;
        let mut features = 0u64;
        // SAFETY: open image, valid out-pointer.
        let code = unsafe { ceph_sys::api().rbd_get_features(self.raw(), &mut features) };
        Error::check(code, "get features of", &self.handle.spec)?;
        Ok(ImageInfo {
            size: info.size,
            object_size: info.obj_size,
            num_objects: info.num_objs,
            block_name_prefix: string_from_c_buf(&info.block_name_prefix),
            features: Features::from_bits(features),
        })
    }

    /// Takes the image's exclusive lock and keeps it until the image is closed, refusing to
    /// hand it over: other clients' writes and maintenance operations (resize, snapshots)
    /// fail meanwhile (`rbd_lock_acquire` in exclusive mode, as `rbd device map --exclusive`
    /// does). Needs the exclusive-lock feature.
    pub fn lock_exclusive(&self) -> Result<()> {
        // SAFETY: open image.
        let code = unsafe {
            ceph_sys::api().rbd_lock_acquire(self.raw(), ceph_sys::RBD_LOCK_MODE_EXCLUSIVE)
        };
        Error::check(code, "take the exclusive lock of", &self.handle.spec).map(drop)
    }

    /// The size in bytes (of the snapshot when opened at one).
    pub fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: open image, valid out-pointer.
        let code = unsafe { ceph_sys::api().rbd_get_size(self.raw(), &mut size) };
        Error::check(code, "get size of", &self.handle.spec)?;
        Ok(size)
    }

    /// Grows or shrinks the image.
    pub fn resize(&self, size: u64) -> Result<()> {
        // SAFETY: open image.
        let code = unsafe { ceph_sys::api().rbd_resize(self.raw(), size) };
        Error::check(code, "resize image", &self.handle.spec).map(drop)
    }

    /// Reads a metadata value; `None` when the key is not set.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>> {
        let c_key = c_string(key, key)?;
        let op = format!("get metadata {key} of");
        grow_until_fits::<u8, _>(INITIAL_METADATA_BUF, &op, &self.handle.spec, |capacity| {
            let mut buf = vec![0u8; capacity];
            let mut len = capacity;
            // SAFETY: open image; `buf` is writable for `len` bytes; librbd sets `len` to the
            // needed size on -ERANGE.
            let code = unsafe {
                ceph_sys::api().rbd_metadata_get(
                    self.raw(),
                    c_key.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    &mut len,
                )
            };
            match code {
                c if c == -libc::ERANGE => Ok(Fit::Grow(len)),
                c if c == -libc::ENOENT => Ok(Fit::Done(None)),
                c => {
                    Error::check(c, &op, &self.handle.spec)?;
                    let value = buf[..len.min(capacity)]
                        .split(|&b| b == 0)
                        .next()
                        .unwrap_or(&[]);
                    Ok(Fit::Done(Some(String::from_utf8_lossy(value).into_owned())))
                }
            }
        })
    }

    /// Sets a metadata value.
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let c_key = c_string(key, key)?;
        let c_value = c_string(value, key)?;
        // SAFETY: open image, NUL-terminated strings.
        let code = unsafe {
            ceph_sys::api().rbd_metadata_set(self.raw(), c_key.as_ptr(), c_value.as_ptr())
        };
        Error::check(code, &format!("set metadata {key} of"), &self.handle.spec).map(drop)
    }

    /// Removes a metadata key.
    pub fn metadata_remove(&self, key: &str) -> Result<()> {
        let c_key = c_string(key, key)?;
        // SAFETY: open image, NUL-terminated key.
        let code = unsafe { ceph_sys::api().rbd_metadata_remove(self.raw(), c_key.as_ptr()) };
        Error::check(
            code,
            &format!("remove metadata {key} of"),
            &self.handle.spec,
        )
        .map(drop)
    }

    /// All metadata, sorted by key.
    pub fn metadata_list(&self) -> Result<Vec<(String, String)>> {
        let start = c_string("", "metadata start")?;
        let op = "list metadata of";
        // One length for both buffers: the larger of the two librbd asks for.
        grow_until_fits::<u8, _>(INITIAL_METADATA_BUF, op, &self.handle.spec, |capacity| {
            let (mut key_len, mut val_len) = (capacity, capacity);
            let mut keys = vec![0u8; key_len];
            let mut vals = vec![0u8; val_len];
            // SAFETY: open image; both buffers are writable for the lengths passed; librbd
            // sets both lengths to what it needs on -ERANGE. `max` 0 means no limit.
            let code = unsafe {
                ceph_sys::api().rbd_metadata_list(
                    self.raw(),
                    start.as_ptr(),
                    0,
                    keys.as_mut_ptr().cast::<c_char>(),
                    &mut key_len,
                    vals.as_mut_ptr().cast::<c_char>(),
                    &mut val_len,
                )
            };
            if code == -libc::ERANGE {
                return Ok(Fit::Grow(key_len.max(val_len)));
            }
            Error::check(code, op, &self.handle.spec)?;
            let keys = split_nul_list(&keys[..key_len.min(capacity)]);
            let vals = split_nul_list_keep_empty(&vals[..val_len.min(capacity)], keys.len());
            Ok(Fit::Done(keys.into_iter().zip(vals).collect()))
        })
    }
}

/// For the image opened read-write as `raw`: the error its writes must fail with because
/// librbd would never complete them (a pool or image override turned an object-cacher cache on
/// over zero-copy writes: `config.rs`), or `None`; and whether librbd writes from the callers'
/// buffers in place. Only writes are refused: every other operation on such an image
/// (snapshots, metadata, cleanup) completes as before. When the configuration cannot be
/// listed, writes go ahead as they did before this check, watched as zero-copy ones (the
/// watch costs nothing when they complete), with a warning.
fn write_settings(raw: ceph_sys::rbd_image_t, spec: &str) -> (Option<Error>, bool) {
    match config::image_settings(raw, spec) {
        Ok(settings) => (
            config::zero_copy_hang(&settings, spec),
            config::zero_copy_on(&settings),
        ),
        Err(e) => {
            tracing::warn!(image = %spec, error = %e, "cannot check librbd's cache settings");
            (None, true)
        }
    }
}

/// Values may be empty strings, so split by count rather than stopping at the first empty.
fn split_nul_list_keep_empty(buf: &[u8], count: usize) -> Vec<String> {
    buf.split(|&b| b == 0)
        .take(count)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_size_must_be_a_power_of_two_in_range() {
        assert_eq!(
            CreateOptions::default()
                .with_object_size(1 << 20)
                .unwrap()
                .object_order,
            20
        );
        for bad in [0, 3 << 20, 1 << 11, 1 << 26] {
            assert_eq!(
                CreateOptions::default()
                    .with_object_size(bad)
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn waiting_for_operations_that_never_complete_ends_at_the_limit() {
        let in_flight = InFlight::default();
        let ticket = in_flight.begin();
        let started = Instant::now();
        assert!(!in_flight.wait_idle(Duration::from_millis(50)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        in_flight.end(&ticket);
        assert!(in_flight.wait_idle(Duration::ZERO));
    }

    #[test]
    fn operations_end_in_any_order() {
        let in_flight = InFlight::default();
        let tickets: Vec<Ticket> = (0..3).map(|_| in_flight.begin()).collect();
        in_flight.end(&tickets[1]);
        in_flight.end(&tickets[1]);
        assert_eq!(in_flight.count(), 2);
        in_flight.end(&tickets[2]);
        in_flight.end(&tickets[0]);
        assert!(in_flight.wait_idle(Duration::ZERO));
    }

    #[test]
    fn waiting_ends_when_the_last_operation_completes() {
        let in_flight = Arc::new(InFlight::default());
        let ticket = in_flight.begin();
        let other = in_flight.clone();
        let completer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.end(&ticket);
        });
        assert!(in_flight.wait_idle(Duration::from_secs(30)));
        completer.join().unwrap();
    }

    #[test]
    fn metadata_values_may_be_empty() {
        assert_eq!(
            split_nul_list_keep_empty(b"a\0\0c\0", 3),
            vec!["a", "", "c"]
        );
    }
}
