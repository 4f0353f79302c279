//! One error type for librados and librbd calls: the operation, the object it concerned
//! (pool, image, snapshot…) and a named kind derived from the errno.
//!
//! Error policy: every fallible call returns [`Error`] with `op` saying what was attempted and
//! `target` naming what it was attempted on, so that a message read out of context still tells
//! the user what to fix. Callers match on [`Error::kind`], never on the message.

use std::fmt;

/// What went wrong, independent of the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pool, image, snapshot or object does not exist (`ENOENT`).
    NotFound,
    /// It already exists (`EEXIST`).
    AlreadyExists,
    /// In use: a protected snapshot with children, an image with watchers, … (`EBUSY`).
    Busy,
    /// cephx refused the operation (`EPERM`, `EACCES`).
    PermissionDenied,
    /// A bad argument, or an operation the object's state does not allow (`EINVAL`).
    InvalidArgument,
    /// The cluster did not answer in time (`ETIMEDOUT`).
    TimedOut,
    /// The cluster is full (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// The object is read-only: a snapshot, or an image opened read-only (`EROFS`).
    ReadOnly,
    /// The feature or operation is not supported here (`EOPNOTSUPP`, `ENOSYS`).
    Unsupported,
    /// A name or string given by the caller cannot be passed to C (it contains a NUL byte).
    InvalidName,
    /// The Ceph client libraries (librbd, librados) are not installed or cannot be loaded.
    LibraryUnavailable,
    /// Any other errno.
    Other,
}

impl ErrorKind {
    /// Maps a (positive) errno to its kind.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOENT => ErrorKind::NotFound,
            libc::EEXIST => ErrorKind::AlreadyExists,
            libc::EBUSY | libc::ENOTEMPTY => ErrorKind::Busy,
            libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
            libc::EINVAL | libc::EDOM | libc::ERANGE => ErrorKind::InvalidArgument,
            libc::ETIMEDOUT => ErrorKind::TimedOut,
            libc::ENOSPC | libc::EDQUOT => ErrorKind::NoSpace,
            libc::EROFS => ErrorKind::ReadOnly,
            libc::EOPNOTSUPP | libc::ENOSYS => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Busy => "busy (in use)",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::NoSpace => "no space left in the cluster",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::InvalidName => "invalid name (contains a NUL byte)",
            ErrorKind::LibraryUnavailable => "Ceph client libraries unavailable",
            ErrorKind::Other => "failed",
        }
    }
}

/// A failed librados or librbd call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    errno: i32,
    op: String,
    target: String,
    reason: Option<String>,
}

impl Error {
    /// Builds an error from a librados/librbd return code (negative errno).
    pub fn from_code(code: i64, op: impl Into<String>, target: impl Into<String>) -> Self {
        let errno = i32::try_from(code.unsigned_abs()).unwrap_or(i32::MAX);
        Error {
            kind: ErrorKind::from_errno(errno),
            errno,
            op: op.into(),
            target: target.into(),
            reason: None,
        }
    }

    /// Builds an error of a given kind that did not come from C (no errno).
    pub fn new(kind: ErrorKind, op: impl Into<String>, target: impl Into<String>) -> Self {
        Error {
            kind,
            errno: 0,
            op: op.into(),
            target: target.into(),
            reason: None,
        }
    }

    /// The same error, with what went wrong said in words in place of the errno's generic
    /// text. For calls whose errno says little: librbd answers `EINVAL` both to a flatten of
    /// an image that is no clone and to a format-1 clone of an unprotected snapshot.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Maps a C return code: negative is an error, anything else is returned as is.
    pub fn check(code: i32, op: &str, target: &dyn fmt::Display) -> Result<i32> {
        if code < 0 {
            Err(Error::from_code(code.into(), op, target.to_string()))
        } else {
            Ok(code)
        }
    }

    /// The named kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The positive errno, or 0 when the error did not come from C.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// What was attempted, e.g. `"open image"`.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// What it was attempted on, e.g. `"rbd/vm-disk@golden"`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// What went wrong in words, when the caller found out more than the errno says.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(reason) = &self.reason {
            return write!(f, "{} {}: {}", self.op, self.target, reason);
        }
        write!(f, "{} {}: {}", self.op, self.target, self.kind.describe())?;
        if self.errno != 0 {
            let text = std::io::Error::from_raw_os_error(self.errno);
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        if err.errno != 0 {
            std::io::Error::new(
                std::io::Error::from_raw_os_error(err.errno).kind(),
                err.to_string(),
            )
        } else {
            std::io::Error::other(err.to_string())
        }
    }
}

/// Result of librados and librbd wrappers.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_named_kinds() {
        assert_eq!(ErrorKind::from_errno(libc::ENOENT), ErrorKind::NotFound);
        assert_eq!(
            ErrorKind::from_errno(libc::EEXIST),
            ErrorKind::AlreadyExists
        );
        assert_eq!(ErrorKind::from_errno(libc::EBUSY), ErrorKind::Busy);
        assert_eq!(
            ErrorKind::from_errno(libc::EACCES),
            ErrorKind::PermissionDenied
        );
        assert_eq!(ErrorKind::from_errno(libc::ETIMEDOUT), ErrorKind::TimedOut);
        assert_eq!(ErrorKind::from_errno(libc::EIO), ErrorKind::Other);
    }

    #[test]
    fn message_names_operation_target_and_cause() {
        let err = Error::from_code(-2, "open image", "rbd/missing");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let text = err.to_string();
        assert!(
            text.starts_with("open image rbd/missing: not found"),
            "{text}"
        );
        assert!(text.contains("No such file or directory"), "{text}");
    }

    #[test]
    fn a_reason_replaces_the_errno_text_and_keeps_the_kind() {
        let err = Error::from_code((-libc::EINVAL).into(), "flatten", "rbd/x")
            .with_reason("not a clone; nothing to flatten");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(err.errno(), libc::EINVAL);
        assert_eq!(
            err.to_string(),
            "flatten rbd/x: not a clone; nothing to flatten"
        );
    }
}
