//! qcow2 cluster compression as a user names it: `none`, `deflate` or `zstd`, with an
//! optional level (the command line's `-c`/`--compression` and `--level`).

use qcow2::codec::{Codec, DEFLATE_DEFAULT_LEVEL, DEFLATE_MAX_LEVEL, ZSTD_DEFAULT_LEVEL};

use crate::{Error, Result};

/// The name of uncompressed clusters.
const NONE_NAME: &str = "none";

/// qcow2 cluster compression: what [`Compression::codec`] gives the qcow2 writer.
///
/// Parsed from and displayed as its name (`none`, `deflate`, `zstd`), the name diskferry
/// records in object metadata and reports; a level is set with [`Compression::with_level`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Clusters stored as they are.
    #[default]
    None,
    /// Raw deflate, levels 0 to 9 (every qemu reads it).
    Deflate {
        /// The level; `None` is qemu's, [`DEFLATE_DEFAULT_LEVEL`].
        level: Option<u32>,
    },
    /// zstd, levels 1 to 22 and the negative fast levels (qemu 5.1 and later).
    Zstd {
        /// The level; `None` is qemu's, [`ZSTD_DEFAULT_LEVEL`].
        level: Option<i32>,
    },
}

impl Compression {
    /// Every name [`FromStr`](std::str::FromStr) accepts, each with what it means in a few
    /// words, for help texts.
    pub const NAMES: [(&'static str, &'static str); 3] = [
        (NONE_NAME, "Clusters stored as they are"),
        ("deflate", "Raw deflate (every qemu reads it)"),
        ("zstd", "zstd (qemu 5.1 and later)"),
    ];

    /// `none`, `deflate` or `zstd`.
    pub fn name(self) -> &'static str {
        match self.codec() {
            None => NONE_NAME,
            Some(codec) => codec.name(),
        }
    }

    /// This compression at `level` (`None` keeps it). The level of uncompressed clusters
    /// means nothing and is ignored (a command's `--level` may be for `raw.zst`); a deflate
    /// level above 9 or below 0 is refused.
    pub fn with_level(self, level: Option<i32>) -> Result<Compression> {
        let Some(level) = level else {
            return Ok(self);
        };
        Ok(match self {
            Compression::None => Compression::None,
            Compression::Deflate { .. } => Compression::Deflate {
                level: Some(
                    u32::try_from(level)
                        .ok()
                        .filter(|l| *l <= DEFLATE_MAX_LEVEL)
                        .ok_or_else(|| {
                            Error::InvalidOption(format!(
                                "deflate level {level} must be 0-{DEFLATE_MAX_LEVEL}"
                            ))
                        })?,
                ),
            },
            Compression::Zstd { .. } => Compression::Zstd {
                level: Some(check_zstd_level(level)?),
            },
        })
    }

    /// The qcow2 writer's codec, with qemu's default level where none is set; `None` for
    /// uncompressed clusters.
    pub fn codec(self) -> Option<Codec> {
        match self {
            Compression::None => None,
            Compression::Deflate { level } => Some(Codec::Deflate {
                level: level.unwrap_or(DEFLATE_DEFAULT_LEVEL),
            }),
            Compression::Zstd { level } => Some(Codec::Zstd {
                level: level.unwrap_or(ZSTD_DEFAULT_LEVEL),
            }),
        }
    }
}

/// The [name](Compression::name); the level is not part of it.
impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a [name](Compression::name), exactly as written in [`Compression::NAMES`]; the
/// level is left unset.
impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Compression> {
        if s == NONE_NAME {
            return Ok(Compression::None);
        }
        match s.parse::<Codec>() {
            Ok(Codec::Deflate { .. }) => Ok(Compression::Deflate { level: None }),
            Ok(Codec::Zstd { .. }) => Ok(Compression::Zstd { level: None }),
            Err(_) => Err(Error::InvalidOption(format!(
                "unknown compression {s:?}; expected none, deflate or zstd"
            ))),
        }
    }
}

/// `level` if zstd takes it (1-22, 0 for its default, and its fast negative levels), else an
/// option error that names the range.
pub fn check_zstd_level(level: i32) -> Result<i32> {
    use qcow2::writer::{ZSTD_MAX_LEVEL, ZSTD_MIN_LEVEL};
    if (ZSTD_MIN_LEVEL..=ZSTD_MAX_LEVEL).contains(&level) {
        Ok(level)
    } else {
        Err(Error::InvalidOption(format!(
            "zstd level {level} must be 1-{ZSTD_MAX_LEVEL} (0 is zstd's default; fast levels go \
             down to {ZSTD_MIN_LEVEL})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for (name, _) in Compression::NAMES {
            let compression: Compression = name.parse().unwrap();
            assert_eq!(compression.to_string(), name);
        }
        assert!("Zstd".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn levels_default_to_qemus_and_deflate_stops_at_nine() {
        let deflate: Compression = "deflate".parse().unwrap();
        assert_eq!(
            deflate.codec(),
            Some(Codec::Deflate {
                level: DEFLATE_DEFAULT_LEVEL
            })
        );
        assert_eq!(
            deflate.with_level(Some(9)).unwrap().codec(),
            Some(Codec::Deflate { level: 9 })
        );
        for bad in [10, -1] {
            let err = deflate.with_level(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("deflate level {bad} must be 0-9")),
                "{err}"
            );
        }
        let zstd: Compression = "zstd".parse().unwrap();
        assert_eq!(
            zstd.codec(),
            Some(Codec::Zstd {
                level: ZSTD_DEFAULT_LEVEL
            })
        );
        assert_eq!(
            zstd.with_level(Some(19)).unwrap().codec(),
            Some(Codec::Zstd { level: 19 })
        );
        // A level beside no compression is for raw.zst, not an error.
        assert_eq!(
            Compression::None.with_level(Some(19)).unwrap(),
            Compression::None
        );
        assert_eq!(Compression::None.codec(), None);
    }
}
