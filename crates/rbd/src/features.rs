//! Image feature bits, named as the `rbd` command names them.

use std::fmt;

use rados::{Error, ErrorKind, Result};

/// A set of RBD image features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

/// Each feature's bit and the name `rbd --image-feature` uses.
const NAMES: &[(u64, &str)] = &[
    (ceph_sys::RBD_FEATURE_LAYERING as u64, "layering"),
    (ceph_sys::RBD_FEATURE_STRIPINGV2 as u64, "striping"),
    (
        ceph_sys::RBD_FEATURE_EXCLUSIVE_LOCK as u64,
        "exclusive-lock",
    ),
    (ceph_sys::RBD_FEATURE_OBJECT_MAP as u64, "object-map"),
    (ceph_sys::RBD_FEATURE_FAST_DIFF as u64, "fast-diff"),
    (ceph_sys::RBD_FEATURE_DEEP_FLATTEN as u64, "deep-flatten"),
    (ceph_sys::RBD_FEATURE_JOURNALING as u64, "journaling"),
    (ceph_sys::RBD_FEATURE_DATA_POOL as u64, "data-pool"),
    (ceph_sys::RBD_FEATURE_OPERATIONS as u64, "operations"),
    (ceph_sys::RBD_FEATURE_MIGRATING as u64, "migrating"),
    (ceph_sys::RBD_FEATURE_NON_PRIMARY as u64, "non-primary"),
];

impl Features {
    /// Copy-on-write clones of this image's snapshots.
    pub const LAYERING: Features = Features(ceph_sys::RBD_FEATURE_LAYERING as u64);
    /// One writer at a time; needed by object-map.
    pub const EXCLUSIVE_LOCK: Features = Features(ceph_sys::RBD_FEATURE_EXCLUSIVE_LOCK as u64);
    /// Tracks which objects exist: fast `diff_iterate`, `du`, export of sparse images.
    pub const OBJECT_MAP: Features = Features(ceph_sys::RBD_FEATURE_OBJECT_MAP as u64);
    /// Fast diffs between snapshots (needs object-map).
    pub const FAST_DIFF: Features = Features(ceph_sys::RBD_FEATURE_FAST_DIFF as u64);
    /// Flattening also detaches the clone's snapshots from the parent.
    pub const DEEP_FLATTEN: Features = Features(ceph_sys::RBD_FEATURE_DEEP_FLATTEN as u64);
    /// The set diskferry creates images with, the `rbd` command's default.
    pub const DEFAULT: Features = Features(
        Self::LAYERING.0
            | Self::EXCLUSIVE_LOCK.0
            | Self::OBJECT_MAP.0
            | Self::FAST_DIFF.0
            | Self::DEEP_FLATTEN.0,
    );

    /// From raw bits.
    pub const fn from_bits(bits: u64) -> Features {
        Features(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every feature of `other` is set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list of feature names (`layering,exclusive-lock`).
    pub fn parse(list: &str) -> Result<Features> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bit = NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(bit, _)| *bit)
                .ok_or_else(|| {
                    Error::new(ErrorKind::InvalidArgument, "parse image feature", name)
                })?;
            bits |= bit;
        }
        Ok(Features(bits))
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let features =
            Features::parse("layering, exclusive-lock,object-map,fast-diff,deep-flatten").unwrap();
        assert_eq!(features, Features::DEFAULT);
        assert_eq!(
            features.to_string(),
            "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
        );
        assert_eq!(
            Features::parse("layering,bogus").unwrap_err().target(),
            "bogus"
        );
    }
}
