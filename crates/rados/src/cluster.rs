//! Connecting to a cluster the way the `rbd` and `ceph` commands do.

use std::collections::HashSet;
use std::ffi::c_char;
use std::fmt;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use crate::cstr::{c_string, split_nul_list};
use crate::grow::{grow_until_fits, Fit};
use crate::stderr_mode::StderrMode;
use crate::{Error, ErrorKind, IoCtx, Result};

/// The client id used when neither the caller nor `CEPH_ARGS` names one (`client.admin`).
pub const DEFAULT_CLIENT_ID: &str = "admin";
/// How long connecting (authenticating with the monitors) may take before it fails, so a
/// wrong address errors in seconds: Ceph's `client_mount_timeout` (Ceph's default: 300 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one monitor operation may take after connecting: `rados_mon_op_timeout`
/// (Ceph's default: none, wait forever).
pub const DEFAULT_MON_OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one OSD operation (a read, a write, every step of creating or removing an image)
/// may wait for its OSD: `rados_osd_op_timeout` (Ceph's default: none, wait forever, so a
/// stopped OSD or a full pool hangs a client until the OSD comes back). Long enough to ride
/// out an OSD restart or a peering on a loaded cluster (measured here: a 20 s SIGSTOP of the
/// OSD was ridden out), short enough that a copy to or from a dead OSD fails within minutes.
/// The operation then fails with "timed out".
pub const DEFAULT_OSD_OP_TIMEOUT: Duration = Duration::from_secs(120);
/// The timeouts diskferry sets, with Ceph's own default of each: a conf file or `CEPH_ARGS`
/// that sets another value wins (an operator's `rados_osd_op_timeout = 600` stays 600).
const TIMEOUT_OPTIONS: [(&str, &str); 3] = [
    ("client_mount_timeout", "300"),
    ("rados_mon_op_timeout", "0"),
    ("rados_osd_op_timeout", "0"),
];
/// librbd's zero-copy writes (issue 13), set when [`ClusterConfig::zero_copy_writes`] asks for
/// them (the default): each option with Ceph's default and the value set.
/// With both of diskferry's values librbd wraps the caller's write buffer instead of copying
/// it (10–13 % less client CPU for an import, measured). `rbd_disable_zero_copy_writes =
/// false` alone does nothing with Ceph's default cache
/// (`librbd/cache/WriteAroundObjectDispatch.cc`, `init`: the write-around cache turns
/// zero-copy back off whenever `rbd_cache_max_dirty` > 0), and
/// the object-cacher policies keep written data as clean cache entries that share the buffer
/// (`osdc/ObjectCacher.cc`, `writex`), so that a completion waits until the cache evicts the
/// data: with `writethrough` (`librbd/image/OpenRequest.cc`, `send_init_cache`, sets
/// `max_dirty = 0`, and `ObjectCacherObjectDispatch::init` then leaves zero-copy on) the last
/// writes of a copy never complete. So diskferry turns the cache off instead: for its large
/// sequential writes and reads the default write-around cache does nothing anyway (with
/// `rbd_cache_writethrough_until_flush` it passes writes through until the first flush, and
/// diskferry flushes only at the end; write-around caches no reads). Files and functions are
/// Ceph Pacific's (librbd 16.2).
///
/// Why the buffer is safe: librbd wraps it in a `buffer::raw` whose deleter holds the AIO
/// completion back until the last reference to it is dropped (`librbd/librbd.cc`,
/// `create_write_raw` and `UserBufferDeleter`; `librbd/io/AioCompletion.cc`, `block` and
/// `unblock`): whatever layer keeps the data (a cache, the journal, the messenger), the
/// completion callback runs only after it let go. The rbd crate keeps each write buffer alive
/// and unchanged until that callback (`rbd/src/aio.rs`, `Buffer::Write`).
///
/// Set only where neither `CEPH_ARGS`, [`ClusterConfig::options`] nor the conf file names
/// `rbd_disable_zero_copy_writes` (so `CEPH_ARGS="--rbd_disable_zero_copy_writes=true"` keeps
/// librbd's copy), where the monitors' config database left it at Ceph's default, and where
/// they either turned the cache off or left it untuned (`rbd_cache`, `rbd_cache_policy`,
/// `rbd_cache_max_dirty` at Ceph's defaults and named nowhere): a user who chose a cache keeps
/// it, and librbd's copy with it. A pool or image override
/// (`rbd config image set`) can still turn the cache back on with `writethrough`, or with
/// `writeback` and `rbd_cache_max_dirty = 0`: the rbd crate reads each image's effective
/// configuration when it opens it for writing and then refuses its writes at once instead of
/// hanging (`rbd/src/config.rs`). Tests: `tests/rbd.rs`, zero-copy section; the reading and
/// the figures: BENCHMARKS.md, issue 13.
const ZERO_COPY_OPTIONS: [(&str, &str, &str); 2] = [
    ("rbd_disable_zero_copy_writes", "true", "false"),
    (RBD_CACHE, "true", "false"),
];
/// The librbd cache switch.
const RBD_CACHE: &str = "rbd_cache";
/// With the cache on, each of these must be at Ceph's default for [`ZERO_COPY_OPTIONS`] to
/// be set.
const CACHE_DEFAULTS: [(&str, &str); 3] = [
    (RBD_CACHE, "true"),
    ("rbd_cache_policy", "writearound"),
    ("rbd_cache_max_dirty", "25165824"),
];
/// The cluster name librados uses for its default conf search (`/etc/ceph/ceph.conf`).
const CLUSTER_NAME: &str = "ceph";
/// First guess of the buffer `rados_pool_list` fills; it says how much it needs if short.
const POOL_LIST_INITIAL_BUF: usize = 4096;

/// Where and how to connect. Unset fields follow the `rbd` command's conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// A ceph.conf; `None` searches `$CEPH_CONF`, `/etc/ceph/ceph.conf`, `~/.ceph/config`,
    /// `./ceph.conf` as librados does.
    pub conf_file: Option<PathBuf>,
    /// A keyring; `None` takes the one the conf file or `CEPH_ARGS` names.
    pub keyring: Option<PathBuf>,
    /// The client id without `client.`; `None` takes `--id`/`--user`/`--name` from
    /// `CEPH_ARGS`, else [`DEFAULT_CLIENT_ID`].
    pub client_id: Option<String>,
    /// Whether `CEPH_ARGS` is applied (after the conf file, as the CLI does).
    pub use_ceph_args: bool,
    /// Connect (monitor authentication) timeout, `client_mount_timeout`
    /// ([`DEFAULT_CONNECT_TIMEOUT`]). Each of the three timeouts applies unless the conf file
    /// or `CEPH_ARGS` sets that option to something other than Ceph's default.
    pub connect_timeout: Duration,
    /// Monitor operation timeout, `rados_mon_op_timeout` ([`DEFAULT_MON_OP_TIMEOUT`]).
    pub mon_op_timeout: Duration,
    /// OSD operation timeout, `rados_osd_op_timeout` ([`DEFAULT_OSD_OP_TIMEOUT`]).
    pub osd_op_timeout: Duration,
    /// Further Ceph options (name, value) set on the handle after the conf file and
    /// `CEPH_ARGS`, so they win over both (`[("rbd_cache_policy", "writeback")]`). An option
    /// diskferry also sets (the timeouts; zero-copy writes when asked for) keeps the value given
    /// here unless that value is Ceph's own default.
    pub options: Vec<(String, String)>,
    /// Whether to let librbd send the caller's write buffers instead of copying them
    /// (`rbd_disable_zero_copy_writes=false` with `rbd_cache=false`, where nothing chose a
    /// cache). On by default: about 10 % of an import's client CPU. With it, librbd never
    /// completes a write it fails before splitting it into object requests (a write to a
    /// read-only open or a snapshot, past the image's end, by a blocklisted client, against
    /// another client's exclusive lock); the rbd crate refuses the first two before they are
    /// submitted and fails the others with the error librbd recorded (`rbd/src/stuck.rs`).
    pub zero_copy_writes: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            conf_file: None,
            keyring: None,
            client_id: None,
            use_ceph_args: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            mon_op_timeout: DEFAULT_MON_OP_TIMEOUT,
            osd_op_timeout: DEFAULT_OSD_OP_TIMEOUT,
            options: Vec::new(),
            zero_copy_writes: true,
        }
    }
}

impl ClusterConfig {
    /// The configuration a Ceph user already has: `CEPH_CONF`, `CEPH_ARGS` and the defaults.
    ///
    /// `CEPH_KEYRING`, set by the project's `scripts/dev-cluster env`, is honoured as a
    /// keyring path when present.
    pub fn from_env() -> Self {
        ClusterConfig {
            keyring: std::env::var_os("CEPH_KEYRING").map(PathBuf::from),
            ..ClusterConfig::default()
        }
    }

    /// The options [`ClusterConfig::options`], the `CEPH_ARGS` applied and the conf file read
    /// name (as [`option_key`]s): a value there is the user's choice even when it equals
    /// Ceph's default, which the handle cannot tell from an unset option. (The monitors'
    /// config database cannot be read this way.)
    fn named_options(&self) -> HashSet<String> {
        let mut named: HashSet<String> = self
            .options
            .iter()
            .map(|(name, _)| option_key(name))
            .collect();
        if self.use_ceph_args {
            if let Ok(args) = std::env::var("CEPH_ARGS") {
                named.extend(ceph_args_names(&args));
            }
        }
        if let Some(text) = self
            .conf_file_read()
            .and_then(|path| std::fs::read_to_string(path).ok())
        {
            named.extend(conf_text_names(&text));
        }
        named
    }

    /// The conf file librados reads for this configuration: the one given, else the first of
    /// its default search that exists (`$CEPH_CONF`, `/etc/ceph/ceph.conf`,
    /// `~/.ceph/ceph.conf`, `./ceph.conf`).
    fn conf_file_read(&self) -> Option<PathBuf> {
        if let Some(path) = &self.conf_file {
            return Some(path.clone());
        }
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ceph/ceph.conf"));
        std::env::var_os("CEPH_CONF")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("/etc/ceph/ceph.conf")])
            .chain(home)
            .chain([PathBuf::from("ceph.conf")])
            .find(|path| path.is_file())
    }

    /// The client id that will be used (resolving `CEPH_ARGS` and the default).
    pub fn resolved_client_id(&self) -> String {
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        if self.use_ceph_args {
            if let Ok(args) = std::env::var("CEPH_ARGS") {
                if let Some(id) = client_id_from_ceph_args(&args) {
                    return id;
                }
            }
        }
        DEFAULT_CLIENT_ID.to_string()
    }

    fn describe(&self) -> String {
        match &self.conf_file {
            Some(path) => format!("cluster (conf {})", path.display()),
            None => match std::env::var("CEPH_CONF") {
                Ok(path) => format!("cluster (CEPH_CONF={path})"),
                Err(_) => "cluster (default conf search)".to_string(),
            },
        }
    }
}

/// An option's name as Ceph compares them: `-` and spaces are `_`, case ignored.
fn option_key(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// The options a `CEPH_ARGS` value sets (`--opt value`, `--opt=value`, `-` or `_`).
fn ceph_args_names(args: &str) -> impl Iterator<Item = String> + '_ {
    args.split_whitespace().filter_map(|word| {
        let flag = word.split_once('=').map_or(word, |(flag, _)| flag);
        flag.strip_prefix("--").map(option_key)
    })
}

/// The options a conf file's text sets, in any section (`rbd cache = true`,
/// `rbd_disable_zero_copy_writes=1`); comment lines do not count.
fn conf_text_names(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim_start();
        if line.starts_with(['#', ';', '[']) {
            return None;
        }
        line.split_once('=').map(|(name, _)| option_key(name))
    })
}

/// Picks the client id out of `CEPH_ARGS` (`--id X`, `--user X`, `-i X`, `--name client.X`,
/// `-n client.X`, and the `--opt=value` forms).
fn client_id_from_ceph_args(args: &str) -> Option<String> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (word, None),
        };
        let value = || {
            inline
                .map(str::to_string)
                .or_else(|| words.get(i + 1).map(|s| s.to_string()))
        };
        match flag {
            "--id" | "--user" | "-i" => found = value(),
            "--name" | "-n" => {
                found =
                    value().map(|name| name.strip_prefix("client.").unwrap_or(&name).to_string())
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The librados handle, shut down when the last [`Cluster`] or [`IoCtx`] goes away.
pub(crate) struct ClusterHandle {
    raw: ceph_sys::rados_t,
    pub(crate) description: String,
}

// SAFETY: librados documents `rados_t` as safe to use from several threads at once after
// `rados_connect`; every handle we hand out has connected. Configuration setters, which are
// not thread-safe, are only called in `Cluster::connect` before the handle is shared.
unsafe impl Send for ClusterHandle {}
// SAFETY: see `Send`: all operations reachable through `&ClusterHandle` are thread-safe.
unsafe impl Sync for ClusterHandle {}

impl ClusterHandle {
    pub(crate) fn raw(&self) -> ceph_sys::rados_t {
        self.raw
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `rados_create2` and this is the last owner (Arc), so no
        // I/O context or call can use it after shutdown.
        unsafe { ceph_sys::api().rados_shutdown(self.raw) };
    }
}

/// A connected cluster. Cheap to clone; shut down when the last clone and every [`IoCtx`]
/// made from it are dropped.
#[derive(Clone)]
pub struct Cluster {
    handle: Arc<ClusterHandle>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("description", &self.handle.description)
            .finish()
    }
}

impl Cluster {
    /// Connects, blocking for at most about `config.connect_timeout`.
    ///
    /// The first call in a process loads the Ceph client libraries (`librbd.so.1`, which
    /// brings `librados.so.2`); when they are missing it fails with
    /// [`ErrorKind::LibraryUnavailable`], naming the Debian package to install. Every other
    /// Ceph call needs a handle made here, so it runs only once they are loaded.
    ///
    /// This blocks the calling thread: call it from `spawn_blocking` in async code.
    pub fn connect(config: &ClusterConfig) -> Result<Cluster> {
        let description = config.describe();
        ceph_sys::load().map_err(|err| {
            Error::new(ErrorKind::LibraryUnavailable, "connect to", &description)
                .with_reason(err.to_string())
        })?;
        let client_name = format!("client.{}", config.resolved_client_id());
        let c_cluster = c_string(CLUSTER_NAME, "cluster name")?;
        let c_name = c_string(&client_name, &client_name)?;
        let mut raw: ceph_sys::rados_t = ptr::null_mut();
        // librados makes stderr non-blocking when it is a pipe (see the module): undone right
        // after the context is made, and again when this function returns, however it does.
        let stderr_mode = StderrMode::save();
        // SAFETY: both strings are valid NUL-terminated and live across the call; `raw` is a
        // valid out-pointer.
        let code = unsafe {
            ceph_sys::api().rados_create2(&mut raw, c_cluster.as_ptr(), c_name.as_ptr(), 0)
        };
        stderr_mode.restore();
        Error::check(code, "create cluster handle for", &client_name)?;
        // From here the handle is owned, so every early return shuts it down.
        let handle = ClusterHandle { raw, description };

        let conf_path = match &config.conf_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        "read ceph conf",
                        path.display().to_string(),
                    ));
                }
                Some(c_string(&path.to_string_lossy(), "conf path")?)
            }
            None => None,
        };
        let conf_ptr = conf_path.as_ref().map_or(ptr::null(), |p| p.as_ptr());
        // SAFETY: `raw` is a fresh, unshared handle; the path is NUL-terminated or null
        // (null asks librados for its default search, which honours CEPH_CONF).
        let code = unsafe { ceph_sys::api().rados_conf_read_file(handle.raw, conf_ptr) };
        Error::check(code, "read ceph conf for", &handle.description)?;

        if config.use_ceph_args {
            // SAFETY: unshared handle; null selects the `CEPH_ARGS` variable.
            let code = unsafe { ceph_sys::api().rados_conf_parse_env(handle.raw, ptr::null()) };
            Error::check(code, "parse CEPH_ARGS for", &handle.description)?;
        }
        if let Some(keyring) = &config.keyring {
            if !keyring.is_file() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "read keyring",
                    keyring.display().to_string(),
                ));
            }
            set_option(&handle, "keyring", &keyring.to_string_lossy())?;
        }
        for (option, value) in &config.options {
            set_option(&handle, option, value)?;
        }
        let ours = [
            config.connect_timeout,
            config.mon_op_timeout,
            config.osd_op_timeout,
        ];
        for ((option, ceph_default), value) in TIMEOUT_OPTIONS.into_iter().zip(ours) {
            if conf_value(&handle, option)?.as_deref() == Some(ceph_default) {
                set_option(&handle, option, &value.as_secs().max(1).to_string())?;
            }
        }

        // SAFETY: configured, unshared handle.
        let code = unsafe { ceph_sys::api().rados_connect(handle.raw) };
        Error::check(
            code,
            &format!("connect as {client_name} to"),
            &handle.description,
        )?;
        // After connecting, so that the monitors' config database is seen too. librbd reads
        // these options when it opens an image, so setting them now still applies to every
        // image opened through this handle.
        if config.zero_copy_writes {
            let named = config.named_options();
            if !named.contains(ZERO_COPY_OPTIONS[0].0) {
                let cache_chosen = CACHE_DEFAULTS
                    .iter()
                    .any(|(option, _)| named.contains(*option));
                enable_zero_copy_writes(&handle, cache_chosen)?;
            }
        }
        Ok(Cluster {
            handle: Arc::new(handle),
        })
    }

    /// The names of all pools.
    pub fn pools(&self) -> Result<Vec<String>> {
        let description = &self.handle.description;
        grow_until_fits::<u8, _>(POOL_LIST_INITIAL_BUF, "list pools of", description, |len| {
            let mut buf = vec![0u8; len];
            // SAFETY: `buf` is writable for `len` bytes; librados writes at most that and
            // returns the length the whole list needs.
            let needed = unsafe {
                ceph_sys::api().rados_pool_list(
                    self.handle.raw,
                    buf.as_mut_ptr().cast::<c_char>(),
                    len,
                )
            };
            let needed = Error::check(needed, "list pools of", description)? as usize;
            Ok(if needed <= len {
                Fit::Done(split_nul_list(&buf[..needed]))
            } else {
                Fit::Grow(needed)
            })
        })
    }

    /// Opens an I/O context on a pool by name.
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx> {
        IoCtx::open(self.handle.clone(), pool)
    }

    /// Creates a pool (with the cluster's defaults). Mostly for tests and tools.
    pub fn create_pool(&self, pool: &str) -> Result<()> {
        let c_pool = c_string(pool, pool)?;
        // SAFETY: connected handle, NUL-terminated name.
        let code = unsafe { ceph_sys::api().rados_pool_create(self.handle.raw, c_pool.as_ptr()) };
        Error::check(code, "create pool", &pool).map(drop)
    }

    /// Deletes a pool. The cluster must allow it (`mon_allow_pool_delete`).
    pub fn delete_pool(&self, pool: &str) -> Result<()> {
        let c_pool = c_string(pool, pool)?;
        // SAFETY: connected handle, NUL-terminated name.
        let code = unsafe { ceph_sys::api().rados_pool_delete(self.handle.raw, c_pool.as_ptr()) };
        Error::check(code, "delete pool", &pool).map(drop)
    }

    /// The value of a configuration option as this connection sees it (its conf file,
    /// `CEPH_ARGS`, the monitors' config database), e.g. `rbd_default_pool`.
    pub fn conf_get(&self, option: &str) -> Result<String> {
        let c_option = c_string(option, option)?;
        let mut buf = vec![0u8; CONF_VALUE_MAX];
        // SAFETY: connected handle, NUL-terminated option name; `buf` is writable for
        // `buf.len()` bytes and librados writes a NUL-terminated value of at most that.
        let code = unsafe {
            ceph_sys::api().rados_conf_get(
                self.handle.raw,
                c_option.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        Error::check(code, "read configuration option", &option)?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Runs a monitor command, JSON as `ceph --format json` sends it (`{"prefix": "osd
    /// dump", "format": "json"}`), and returns its output. Bounded by the mon op timeout.
    pub fn mon_command(&self, command: &str) -> Result<Vec<u8>> {
        crate::pool::mon_command(&self.handle, command)
    }

    /// Fails with [`ErrorKind::NoSpace`] and the cause in words ("pool rbd is full: quota
    /// max_bytes 600 MiB reached …") when the monitors flag `pool` as full. Writes to a full
    /// pool do not fail, they wait: call this before writing and when writes stall.
    pub fn check_pool_not_full(&self, pool: &str) -> Result<()> {
        crate::pool::check_not_full(&self.handle, pool)
    }

    /// What this connection was made from, for messages.
    pub fn description(&self) -> &str {
        &self.handle.description
    }
}

/// Longest configuration value [`Cluster::conf_get`] reads (librados fails with
/// `ENAMETOOLONG` beyond it).
const CONF_VALUE_MAX: usize = 4096;

/// The value of `option` on a handle that is not connected yet (what the conf file and
/// `CEPH_ARGS` made of it); `None` when librados does not know the option.
fn conf_value(handle: &ClusterHandle, option: &str) -> Result<Option<String>> {
    let c_option = c_string(option, option)?;
    let mut buf = vec![0u8; CONF_VALUE_MAX];
    // SAFETY: the handle is not shared yet (only called from `connect`); the option name is
    // NUL-terminated; `buf` is writable for its length and librados writes a NUL-terminated
    // value of at most that.
    let code = unsafe {
        ceph_sys::api().rados_conf_get(
            handle.raw,
            c_option.as_ptr(),
            buf.as_mut_ptr().cast::<c_char>(),
            buf.len(),
        )
    };
    if code == -libc::ENOENT {
        return Ok(None);
    }
    Error::check(code, "read configuration option", &option)?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()))
}

/// Sets [`ZERO_COPY_OPTIONS`] where nothing chose otherwise (see there for why it is safe);
/// `cache_chosen`: the user named one of [`CACHE_DEFAULTS`]' options.
/// Only called from `connect`, before the handle is shared.
fn enable_zero_copy_writes(handle: &ClusterHandle, cache_chosen: bool) -> Result<()> {
    let (zero_copy, ceph_default, _) = ZERO_COPY_OPTIONS[0];
    if conf_value(handle, zero_copy)?.as_deref() != Some(ceph_default) {
        return Ok(());
    }
    // A cache the user turned off stays off; a cache left on must be Ceph's untuned one, and
    // not one the user named (`rbd_cache = true` is Ceph's default value, but a choice).
    if conf_value(handle, RBD_CACHE)?.as_deref() != Some("false") {
        if cache_chosen {
            return Ok(());
        }
        for (option, ceph_default) in CACHE_DEFAULTS {
            if conf_value(handle, option)?.as_deref() != Some(ceph_default) {
                return Ok(());
            }
        }
    }
    for (option, _, ours) in ZERO_COPY_OPTIONS {
        set_option(handle, option, ours)?;
    }
    Ok(())
}

fn set_option(handle: &ClusterHandle, option: &str, value: &str) -> Result<()> {
    let c_option = c_string(option, option)?;
    let c_value = c_string(value, value)?;
    // SAFETY: the handle is not shared yet (only called from `connect`); both strings are
    // NUL-terminated and outlive the call.
    let code =
        unsafe { ceph_sys::api().rados_conf_set(handle.raw, c_option.as_ptr(), c_value.as_ptr()) };
    Error::check(
        code,
        &format!("set option {option}={value} for"),
        &handle.description,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_option_named_in_ceph_args_or_options_is_the_users_choice() {
        const OPTION: &str = "rbd_disable_zero_copy_writes";
        for args in [
            "--rbd_disable_zero_copy_writes=true",
            "--id x --rbd-disable-zero-copy-writes true",
            "--rbd_disable-zero_copy-writes=1 --debug_rbd 0",
        ] {
            assert!(ceph_args_names(args).any(|n| n == OPTION), "{args}");
        }
        for args in [
            "",
            "--rbd_cache=false",
            "rbd_disable_zero_copy_writes=true",
            "--rbd",
        ] {
            assert!(!ceph_args_names(args).any(|n| n == OPTION), "{args}");
        }
        let names = |text: &str, option: &str| conf_text_names(text).any(|n| n == option);
        let conf = "[global]\n# rbd_disable_zero_copy_writes = false\nmon_host = x\n\
                    [client]\n  rbd disable zero copy writes = true\n";
        assert!(names(conf, OPTION));
        assert!(!names(
            &conf.replace("  rbd disable", "#rbd disable"),
            OPTION
        ));
        assert!(names("rbd-cache=true", "rbd_cache"));
        assert!(!names(
            "; rbd_cache = true\nrbd_cache_policy = x",
            "rbd_cache"
        ));
        let config = ClusterConfig {
            options: vec![("rbd-disable-zero-copy-writes".into(), "true".into())],
            use_ceph_args: false,
            ..ClusterConfig::default()
        };
        assert!(config.named_options().contains(OPTION));
        assert!(!ClusterConfig {
            use_ceph_args: false,
            ..ClusterConfig::default()
        }
        .named_options()
        .contains(OPTION));
    }

    #[test]
    fn client_id_is_read_from_ceph_args_forms() {
        assert_eq!(client_id_from_ceph_args("--id foo"), Some("foo".into()));
        assert_eq!(
            client_id_from_ceph_args("--user=bar --keyring /k"),
            Some("bar".into())
        );
        assert_eq!(
            client_id_from_ceph_args("-n client.baz"),
            Some("baz".into())
        );
        assert_eq!(
            client_id_from_ceph_args("--name=client.qux"),
            Some("qux".into())
        );
        assert_eq!(client_id_from_ceph_args("--keyring /k"), None);
    }

    #[test]
    fn missing_conf_file_is_named_in_the_error() {
        let config = ClusterConfig {
            conf_file: Some("/nonexistent/ceph.conf".into()),
            ..ClusterConfig::default()
        };
        let err = Cluster::connect(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/ceph.conf"), "{err}");
    }
}
