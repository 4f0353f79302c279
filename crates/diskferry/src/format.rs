//! Disk formats diskferry reads and writes, and how the format of a source was decided.
//!
//! The rule, the same for every command: a format the user gives (`--format`) wins; then what
//! diskferry recorded itself when it wrote the disk (a VM bundle's manifest, the
//! `diskferry-format` metadata every export writes on an S3 object or a local file's
//! `user.diskferry-format` attribute; an RBD image is always raw); only when nothing is known
//! are the magic bytes probed, and the result then says the format was guessed. Magic alone
//! is not proof: a raw disk whose guest wrote a qcow2 header at byte 0 looks like qcow2.

use serde::Serialize;

use crate::{Address, Error, Result};

/// How the format of a source was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatOrigin {
    /// Given by the caller: the user's `--format`, or the format a VM bundle's manifest
    /// records for a disk, which `import_vm` passes on.
    Given,
    /// Recorded by diskferry when it wrote the disk (object metadata, a manifest), or implied
    /// by the place (an RBD image is raw).
    Recorded,
    /// Guessed from the first bytes: nothing else was known.
    Guessed,
}

impl FormatOrigin {
    /// `given`, `recorded` or `guessed`.
    pub fn name(self) -> &'static str {
        match self {
            FormatOrigin::Given => "given",
            FormatOrigin::Recorded => "recorded",
            FormatOrigin::Guessed => "guessed",
        }
    }
}

impl std::fmt::Display for FormatOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a disk is stored in an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectFormat {
    /// qcow2 v3, written metadata-last.
    Qcow2,
    /// Raw bytes, zeros included.
    Raw,
    /// Raw bytes as one zstd stream (`raw.zst`).
    RawZstd,
}

impl ObjectFormat {
    /// The format's name: `qcow2`, `raw`, `raw.zst`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectFormat::Qcow2 => "qcow2",
            ObjectFormat::Raw => "raw",
            ObjectFormat::RawZstd => "raw.zst",
        }
    }

    /// The format a key or path names by its extension (`.qcow2`, `.raw`, `.img`, `.raw.zst`,
    /// `.zst`), if any.
    pub fn from_name(name: &str) -> Option<ObjectFormat> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".qcow2") || lower.ends_with(".qcow") {
            Some(ObjectFormat::Qcow2)
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Some(ObjectFormat::RawZstd)
        } else if lower.ends_with(".raw") || lower.ends_with(".img") {
            Some(ObjectFormat::Raw)
        } else {
            None
        }
    }

    /// The format for a destination: from its extension, else qcow2.
    pub fn for_destination(destination: &Address) -> ObjectFormat {
        let name = match destination {
            Address::S3(a) => a.key.clone(),
            other => other.to_string(),
        };
        ObjectFormat::from_name(&name).unwrap_or(ObjectFormat::Qcow2)
    }

    /// The `Content-Type` of such objects.
    pub fn content_type(self) -> &'static str {
        match self {
            ObjectFormat::RawZstd => "application/zstd",
            ObjectFormat::Qcow2 | ObjectFormat::Raw => "application/octet-stream",
        }
    }
}

impl std::fmt::Display for ObjectFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ObjectFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ObjectFormat> {
        match s {
            "qcow2" => Ok(ObjectFormat::Qcow2),
            "raw" => Ok(ObjectFormat::Raw),
            "raw.zst" | "raw.zstd" | "zst" => Ok(ObjectFormat::RawZstd),
            other => Err(Error::InvalidOption(format!(
                "unknown format {other:?}; expected qcow2, raw or raw.zst"
            ))),
        }
    }
}
