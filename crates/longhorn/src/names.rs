//! Volume and backup names: Longhorn's rule plus explicit path-safety checks.

use std::fmt;

use crate::error::{Error, Result};

/// Longest volume name the Longhorn engine accepts.
pub const MAX_VOLUME_NAME_LEN: usize = 64;
/// Longest backup name we accept (a Kubernetes object name, since the manager imports backups as CRs).
pub const MAX_BACKUP_NAME_LEN: usize = 253;
/// Shortest name `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` accepts.
pub const MIN_NAME_LEN: usize = 2;
/// The pseudo-volume under which backing-image operations lock; listings skip it.
pub const BACKING_IMAGE_PSEUDO_VOLUME: &str = "BACKINGIMAGE";

/// Checks `name` against Longhorn's `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, a length limit, and refuses
/// anything that could leave its directory (`/`, `\`, `..`).
pub fn validate_name(kind: &'static str, name: &str, max_len: usize) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() < MIN_NAME_LEN {
        return refuse("shorter than 2 characters");
    }
    if name.len() > max_len {
        return refuse("too long");
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("contains a path separator");
    }
    if name.contains("..") {
        return refuse("contains \"..\"");
    }
    let mut bytes = name.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return refuse("must start with an ASCII letter or digit");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return refuse("may contain only ASCII letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// A validated backup-volume name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// Validates and wraps a volume name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name("volume", &name, MAX_VOLUME_NAME_LEN)?;
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated backup name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupName(String);

impl BackupName {
    /// Validates and wraps a backup name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name("backup", &name, MAX_BACKUP_NAME_LEN)?;
        Ok(Self(name))
    }

    /// A fresh name in the engine's form `backup-<16 hex>`.
    pub fn generate() -> Self {
        Self(format!("backup-{}", random_hex16()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 16 random lowercase hex characters, as Longhorn's `util.GenerateName` produces.
pub(crate) fn random_hex16() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_longhorn_names() {
        for n in [
            "vol",
            "pvc-0123abcd-test",
            "a1",
            "backup-854f6ced7b4942d4",
            "x_y.z-1",
        ] {
            VolumeName::new(n).unwrap();
            BackupName::new(n).unwrap();
        }
    }

    #[test]
    fn refuses_traversal_and_separators() {
        for n in [
            "../x", "..", "a/b", "/abs", "a\\b", "a..b", ".hidden", "-x", "a", "", "vol/", "é1",
        ] {
            assert!(VolumeName::new(n).is_err(), "{n:?} accepted");
            assert!(BackupName::new(n).is_err(), "{n:?} accepted");
        }
        assert!(VolumeName::new("a".repeat(MAX_VOLUME_NAME_LEN + 1)).is_err());
        VolumeName::new("a".repeat(MAX_VOLUME_NAME_LEN)).unwrap();
    }

    #[test]
    fn generated_names_are_valid() {
        let n = BackupName::generate();
        assert_eq!(n.as_str().len(), "backup-".len() + 16);
        BackupName::new(n.as_str()).unwrap();
    }
}
