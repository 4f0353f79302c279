//! An open image's effective librbd configuration (`rbd config image list`), and the one
//! combination of it under which librbd never completes zero-copy writes.
//!
//! Why the combination hangs (Ceph Pacific, librbd 16.2): with zero-copy writes
//! (`rbd_disable_zero_copy_writes = false`, which `rados::Cluster::connect` sets by default)
//! librbd wraps the caller's buffer and holds each write's completion until its last reference
//! to that buffer is gone (`librbd/librbd.cc`, `UserBufferDeleter`). The object cacher
//! (`rbd_cache_policy` `writethrough`, or `writeback` with `rbd_cache_max_dirty = 0`) keeps
//! the written data as clean cache entries sharing that buffer until it evicts them
//! (`osdc/ObjectCacher.cc`, `writex`), and only with dirty data allowed does it turn zero-copy
//! off itself (`librbd/cache/ObjectCacherObjectDispatch.cc`, `init`). So a writer with a
//! bounded number of writes in flight waits forever. The write-around cache (Ceph's default
//! policy) either turns zero-copy off or passes writes through: safe. Read-only opens get no
//! cache at all (`librbd/image/OpenRequest.cc`, `send_init_cache`).

use std::collections::HashMap;
use std::fmt;

use rados::{grow_until_fits, owned_from_ptr, Error, ErrorKind, Fit, Result};

/// librbd's switch of zero-copy writes (copying is on when true, Ceph's default).
pub(crate) const RBD_DISABLE_ZERO_COPY_WRITES: &str = "rbd_disable_zero_copy_writes";
/// librbd's cache switch.
pub(crate) const RBD_CACHE: &str = "rbd_cache";
/// librbd's cache policy: `writearound`, `writethrough` or `writeback`.
pub(crate) const RBD_CACHE_POLICY: &str = "rbd_cache_policy";
/// The dirty bytes the writeback cache may hold; 0 makes it write through.
pub(crate) const RBD_CACHE_MAX_DIRTY: &str = "rbd_cache_max_dirty";
/// The policy whose object cacher holds every written buffer as clean data.
const POLICY_WRITETHROUGH: &str = "writethrough";
/// The policy that is write-through too when `rbd_cache_max_dirty` is 0.
const POLICY_WRITEBACK: &str = "writeback";
/// First guess of the number of options; librbd says how many it has when short (about 200
/// in Pacific).
const INITIAL_OPTION_COUNT: usize = 256;

/// Where an option's effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client's configuration: ceph.conf, `CEPH_ARGS`, the monitors' config database,
    /// or what diskferry set on its connection.
    Config,
    /// A pool override (`rbd config pool set`).
    Pool,
    /// An image override (`rbd config image set`, image metadata `conf_<option>`).
    Image,
}

impl Source {
    fn from_raw(raw: ceph_sys::rbd_config_source_t) -> Source {
        match raw {
            ceph_sys::RBD_CONFIG_SOURCE_POOL => Source::Pool,
            ceph_sys::RBD_CONFIG_SOURCE_IMAGE => Source::Image,
            _ => Source::Config,
        }
    }

    /// The command that removes an override of `option` at this level, for `image` (a
    /// `pool/name` spec); `None` for the client's config, which is no override.
    fn removal(self, option: &str, image: &str) -> Option<String> {
        match self {
            Source::Image => Some(format!("`rbd config image remove {image} {option}`")),
            Source::Pool => {
                let pool = image.split('/').next().unwrap_or(image);
                Some(format!("`rbd config pool remove {pool} {option}`"))
            }
            Source::Config => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Config => "client config",
            Source::Pool => "pool override",
            Source::Image => "image override",
        })
    }
}

/// Effective options by name: value and source.
pub(crate) type Settings = HashMap<String, (String, Source)>;

/// The image's effective librbd options (`rbd_config_image_list`): the client's values with
/// the pool's and then the image's overrides applied, as librbd applies them on open.
pub(crate) fn image_settings(image: ceph_sys::rbd_image_t, spec: &str) -> Result<Settings> {
    let op = "list configuration of";
    type Entry = ceph_sys::rbd_config_option_t;
    grow_until_fits::<Entry, _>(INITIAL_OPTION_COUNT, op, &spec, |len| {
        let mut entries: Vec<Entry> = Vec::with_capacity(len);
        let mut count = i32::try_from(len).unwrap_or(i32::MAX);
        // SAFETY: open image; `entries` has room for `count` entries; librbd fills at most
        // that many and sets `count` to the number filled, or to the number needed with
        // -ERANGE (then it fills none).
        let code = unsafe {
            ceph_sys::api().rbd_config_image_list(image, entries.as_mut_ptr(), &mut count)
        };
        let filled = usize::try_from(count).unwrap_or(0);
        if code == -libc::ERANGE {
            return Ok(Fit::Grow(filled));
        }
        Error::check(code, op, &spec)?;
        let filled = filled.min(len);
        // SAFETY: librbd initialised the first `filled` entries (filled <= capacity).
        unsafe { entries.set_len(filled) };
        let settings = entries
            .iter()
            .map(|e| {
                // SAFETY: name and value are NUL-terminated strings librbd allocated for the
                // entry; they stay valid until the cleanup below.
                let (name, value) = unsafe { (owned_from_ptr(e.name), owned_from_ptr(e.value)) };
                (name, (value, Source::from_raw(e.source)))
            })
            .collect();
        let filled = i32::try_from(entries.len()).unwrap_or(count);
        // SAFETY: frees the strings of exactly the entries librbd filled, once.
        unsafe { ceph_sys::api().rbd_config_image_list_cleanup(entries.as_mut_ptr(), filled) };
        Ok(Fit::Done(settings))
    })
}

/// Whether librbd writes from the callers' buffers in place (zero-copy) with these effective
/// `settings`: unless `rbd_disable_zero_copy_writes` reads as true (or is missing, or unreadable:
/// then the answer that keeps writes watched).
pub(crate) fn zero_copy_on(settings: &Settings) -> bool {
    settings
        .get(RBD_DISABLE_ZERO_COPY_WRITES)
        .is_none_or(|(value, _)| parse_bool(value) != Some(true))
}

/// Why writes to `image` (a `pool/name` spec) with these effective `settings` would never
/// complete, as the error a write then fails with; `None` when they are safe.
pub(crate) fn zero_copy_hang(settings: &Settings, image: &str) -> Option<Error> {
    let get = |name: &str| settings.get(name).map(|(v, s)| (v.as_str(), *s));
    let (copy, copy_source) = get(RBD_DISABLE_ZERO_COPY_WRITES)?;
    let (cache, cache_source) = get(RBD_CACHE)?;
    let (policy, policy_source) = get(RBD_CACHE_POLICY)?;
    if parse_bool(copy) != Some(false) || parse_bool(cache) != Some(true) {
        return None;
    }
    let mut culprits = vec![
        (RBD_DISABLE_ZERO_COPY_WRITES, copy, copy_source),
        (RBD_CACHE, cache, cache_source),
        (RBD_CACHE_POLICY, policy, policy_source),
    ];
    match policy {
        POLICY_WRITETHROUGH => {}
        POLICY_WRITEBACK => match get(RBD_CACHE_MAX_DIRTY) {
            Some((max_dirty, source)) if is_zero_size(max_dirty) => {
                culprits.push((RBD_CACHE_MAX_DIRTY, max_dirty, source))
            }
            _ => return None,
        },
        _ => return None,
    }
    let listed: Vec<String> = culprits
        .iter()
        .map(|(name, value, source)| format!("{name}={value} ({source})"))
        .collect();
    // The pool and image overrides that turned the cache on; with none, the client's own
    // config did (with zero-copy chosen explicitly, as diskferry turns the cache off).
    let removals: Vec<String> = culprits
        .iter()
        .filter(|(name, _, _)| *name != RBD_DISABLE_ZERO_COPY_WRITES)
        .filter_map(|(name, _, source)| source.removal(name, image))
        .collect();
    let remove = match removals.len() {
        0 => format!("set {RBD_CACHE}=false in the client config"),
        1 => format!("remove the override: {}", removals[0]),
        _ => format!("remove the overrides: {}", removals.join(", ")),
    };
    Some(
        Error::new(ErrorKind::Unsupported, "write to", image).with_reason(format!(
            "diskferry refuses to write instead of hanging: {} make librbd keep every written \
             buffer in its object cache with zero-copy writes on, so the writes would never \
             complete; run with CEPH_ARGS=\"--{RBD_DISABLE_ZERO_COPY_WRITES}=true\" or {remove}",
            listed.join(", ")
        )),
    )
}

/// A boolean option's value as Ceph reads it (`strict_strtob`): `true`/`false` in any case,
/// else an integer, true when not 0; `None` when it is neither (librbd then keeps the value
/// it had). Overrides are listed as they were set, not normalised.
fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        value.trim().parse::<i64>().ok().map(|n| n != 0)
    }
}

/// Whether a size option's value is 0, with or without a unit (`0`, `0B`, `0K`, `0Mi`):
/// overrides are listed as they were set.
fn is_zero_size(value: &str) -> bool {
    let value = value.trim();
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits_end);
    !number.is_empty()
        && unit.chars().all(|c| c.is_ascii_alphabetic())
        && number.parse::<u64>().is_ok_and(|n| n == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str, Source)]) -> Settings {
        let mut all: Settings = [
            (RBD_DISABLE_ZERO_COPY_WRITES, "false"),
            (RBD_CACHE, "false"),
            (RBD_CACHE_POLICY, "writearound"),
            (RBD_CACHE_MAX_DIRTY, "25165824"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), (v.to_string(), Source::Config)))
        .collect();
        for (name, value, source) in pairs {
            all.insert(name.to_string(), (value.to_string(), *source));
        }
        all
    }

    const IMG: &str = "rbd/disk";

    #[test]
    fn zero_copy_is_on_unless_the_copy_switch_reads_as_true() {
        assert!(zero_copy_on(&settings(&[])));
        assert!(zero_copy_on(&Settings::new()), "unknown: watched");
        for copying in ["true", "TRUE", "1"] {
            let copy = [(RBD_DISABLE_ZERO_COPY_WRITES, copying, Source::Image)];
            assert!(!zero_copy_on(&settings(&copy)), "{copying}");
        }
        let garbled = [(RBD_DISABLE_ZERO_COPY_WRITES, "maybe", Source::Pool)];
        assert!(zero_copy_on(&settings(&garbled)));
    }

    /// The refusal of writes to `IMG` with these settings over the defaults.
    fn refused(pairs: &[(&str, &str, Source)]) -> Error {
        zero_copy_hang(&settings(pairs), IMG).expect("refused")
    }

    #[test]
    fn write_through_over_zero_copy_is_refused_naming_settings_sources_and_fix() {
        let err = refused(&[
            (RBD_CACHE, "true", Source::Pool),
            (RBD_CACHE_POLICY, "writethrough", Source::Image),
        ]);
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let text = err.to_string();
        for part in [
            "write to rbd/disk: diskferry refuses to write instead of hanging",
            "rbd_disable_zero_copy_writes=false (client config)",
            "rbd_cache=true (pool override)",
            "rbd_cache_policy=writethrough (image override)",
            "CEPH_ARGS=\"--rbd_disable_zero_copy_writes=true\"",
            "`rbd config pool remove rbd rbd_cache`",
            "`rbd config image remove rbd/disk rbd_cache_policy`",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    #[test]
    fn write_back_without_dirty_data_over_zero_copy_is_refused() {
        let err = refused(&[
            (RBD_CACHE, "true", Source::Image),
            (RBD_CACHE_POLICY, "writeback", Source::Image),
            (RBD_CACHE_MAX_DIRTY, "0", Source::Pool),
        ]);
        assert!(err
            .to_string()
            .contains("rbd_cache_max_dirty=0 (pool override)"));
    }

    #[test]
    fn safe_combinations_are_not_refused() {
        let safe: [&[(&str, &str, Source)]; 6] = [
            // diskferry's defaults: zero-copy, cache off.
            &[],
            &[(RBD_CACHE_POLICY, "writethrough", Source::Image)],
            // librbd copies.
            &[
                (RBD_DISABLE_ZERO_COPY_WRITES, "true", Source::Config),
                (RBD_CACHE, "true", Source::Image),
                (RBD_CACHE_POLICY, "writethrough", Source::Image),
            ],
            // The object cacher with dirty data allowed turns zero-copy off itself.
            &[
                (RBD_CACHE, "true", Source::Image),
                (RBD_CACHE_POLICY, "writeback", Source::Image),
            ],
            // Write-around: zero-copy off when it may hold dirty data, else a pass-through.
            &[(RBD_CACHE, "true", Source::Image)],
            &[
                (RBD_CACHE, "true", Source::Image),
                (RBD_CACHE_MAX_DIRTY, "0", Source::Image),
            ],
        ];
        for case in safe {
            assert!(zero_copy_hang(&settings(case), IMG).is_none(), "{case:?}");
        }
    }

    #[test]
    fn overrides_are_read_as_ceph_parses_them() {
        refused(&[
            (RBD_DISABLE_ZERO_COPY_WRITES, "0", Source::Image),
            (RBD_CACHE, "TRUE", Source::Image),
            (RBD_CACHE_POLICY, "writeback", Source::Image),
            (RBD_CACHE_MAX_DIRTY, "0B", Source::Image),
        ]);
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        for zero in ["0", "0B", "0K", "00Mi"] {
            assert!(is_zero_size(zero), "{zero}");
        }
        for other in ["", "B", "8M", "10", "0.5M", "-0"] {
            assert!(!is_zero_size(other), "{other}");
        }
    }

    #[test]
    fn a_listing_without_the_options_is_not_refused() {
        assert!(zero_copy_hang(&Settings::new(), IMG).is_none());
    }
}
