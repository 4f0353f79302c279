//! Lock files: `{"Name":"lock-0123456789abcdef","Type":1,"Acquired":true}`, and, when
//! diskferry wrote one, its writer: `"DiskferryWriter":"HOST PID"` ([`WRITER_FIELD`]).
//! Longhorn's Go code reads lock files into a struct, which ignores a field it does not know.

use crate::error::{Error, Result};
use crate::gojson::{Fields, ObjectWriter};

/// Lock types; backup and restore share a value so they do not exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    /// Backup or restore (Longhorn's `BACKUP_LOCK` = `RESTORE_LOCK` = 1).
    BackupOrRestore,
    /// Deletion (`DELETION_LOCK` = 2).
    Deletion,
    /// Any other value (`UNTYPED_LOCK` = 0, or unknown).
    Other(u8),
}

/// Wire value of a backup or restore lock.
pub const BACKUP_LOCK: u8 = 1;
/// Wire value of a deletion lock.
pub const DELETION_LOCK: u8 = 2;

impl LockType {
    /// The wire value.
    pub fn value(self) -> u8 {
        match self {
            LockType::BackupOrRestore => BACKUP_LOCK,
            LockType::Deletion => DELETION_LOCK,
            LockType::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_value(v: u8) -> Self {
        match v {
            BACKUP_LOCK => LockType::BackupOrRestore,
            DELETION_LOCK => LockType::Deletion,
            v => LockType::Other(v),
        }
    }
}

/// The field that names the process holding a lock diskferry wrote (`HOST PID`), so that
/// the lock of a process that died holding it can be proven abandoned before it expires.
pub const WRITER_FIELD: &str = "DiskferryWriter";

/// The content of a lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFile {
    /// `lock-<16 hex>`, also the file name without `.lck`.
    pub name: String,
    /// The lock type.
    pub lock_type: LockType,
    /// Whether the owner has acquired it (after the 2 s check).
    pub acquired: bool,
    /// The process holding it (`HOST PID`), when diskferry wrote it ([`WRITER_FIELD`]).
    pub writer: Option<String>,
}

impl LockFile {
    /// Go's `json.Marshal` of the `FileLock` exported fields.
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("Name", &self.name);
        w.key("Type").push_str(&self.lock_type.value().to_string());
        w.key("Acquired")
            .push_str(if self.acquired { "true" } else { "false" });
        if let Some(writer) = &self.writer {
            w.string(WRITER_FIELD, writer);
        }
        w.finish()
    }

    /// Parses a lock file.
    pub fn from_json(data: &[u8], path: &str) -> Result<Self> {
        let f = Fields::parse(data, path)?;
        let t = match f.get("Type") {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| Error::InvalidConfig {
                    path: path.to_owned(),
                    field: "Type",
                    reason: format!("{v} is not a lock type"),
                })?,
        };
        Ok(Self {
            name: f.string("Name")?,
            lock_type: LockType::from_value(t),
            acquired: f.boolean("Acquired")?,
            // Ours, never Longhorn's: a value that is no string names no writer, and the lock
            // still counts (refusing the file would make a live lock invisible).
            writer: f
                .get(WRITER_FIELD)
                .and_then(|v| v.as_str())
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_bytes_match_go() {
        let l = LockFile {
            name: "lock-0123456789abcdef".into(),
            lock_type: LockType::BackupOrRestore,
            acquired: true,
            writer: None,
        };
        let s = l.to_json();
        assert_eq!(
            s,
            r#"{"Name":"lock-0123456789abcdef","Type":1,"Acquired":true}"#
        );
        assert_eq!(LockFile::from_json(s.as_bytes(), "l").unwrap(), l);
    }

    #[test]
    fn a_lock_diskferry_wrote_names_its_writer_and_reads_back() {
        let l = LockFile {
            name: "lock-0123456789abcdef".into(),
            lock_type: LockType::BackupOrRestore,
            acquired: false,
            writer: Some("node-1 4242".into()),
        };
        let s = l.to_json();
        assert_eq!(
            s,
            r#"{"Name":"lock-0123456789abcdef","Type":1,"Acquired":false,"DiskferryWriter":"node-1 4242"}"#
        );
        assert_eq!(LockFile::from_json(s.as_bytes(), "l").unwrap(), l);
        // A value that is no string names no writer; the lock itself still reads.
        let odd =
            r#"{"Name":"lock-0123456789abcdef","Type":1,"Acquired":true,"DiskferryWriter":7}"#;
        let read = LockFile::from_json(odd.as_bytes(), "l").unwrap();
        assert_eq!((read.acquired, read.writer), (true, None));
    }
}
