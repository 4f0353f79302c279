//! The library's error type.
//!
//! # Error policy
//! - Public functions return [`Result`]. Each [`Error`] variant says which side failed (the
//!   source, the destination, the cluster, the object store) and names the address concerned,
//!   so a message read on its own tells the user what to fix.
//! - Lower crates' errors (`rbd`, `qcow2`, `objstore`, `longhorn`) are kept as the `source`, never
//!   flattened into strings, so callers can still match on their kinds.
//! - Nothing is left behind silently: an operation that fails after creating an image or
//!   object removes it (unless asked to keep it) before returning the error; if that cleanup
//!   also fails, the error says so and names what is left.

use std::io;

/// Errors of diskferry operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address the user typed could not be understood.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as typed.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option value is out of range or inconsistent.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The source cannot be read as a disk image.
    #[error("cannot use {source_name} as a disk image: {reason}")]
    UnsupportedSource {
        /// The source's address.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The destination exists and `--force` was not given.
    #[error("{0} already exists (use --force to replace it)")]
    AlreadyExists(String),
    /// Images or objects the operation would create exist already, and it has no way to
    /// replace them; it created nothing.
    #[error("{} already exist{}; nothing was created", .0.join(", "), if .0.len() == 1 { "s" } else { "" })]
    ExistingTargets(Vec<String>),
    /// The destination or a needed object does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// `flatten` of an image that is no clone (named as `rbd:POOL/IMAGE`).
    #[error("{0} is not a clone; nothing to flatten")]
    NotAClone(String),
    /// A librados/librbd call failed.
    #[error(transparent)]
    Ceph(#[from] rados::Error),
    /// The qcow2 image is malformed or uses an unsupported feature.
    #[error("qcow2 image {address}: {source}")]
    Qcow2 {
        /// The image's address.
        address: String,
        /// The reader's error.
        #[source]
        source: qcow2::ReadError,
    },
    /// Writing the qcow2 image failed.
    #[error("{address}: {source}")]
    Qcow2Write {
        /// The destination's address.
        address: String,
        /// The writer's error.
        #[source]
        source: qcow2::WriteError,
    },
    /// An S3, HTTP or local-file object operation failed.
    #[error(transparent)]
    Object(#[from] objstore::Error),
    /// A Longhorn backup-store operation failed or was refused (a name, a target URL, a cfg,
    /// a block, a lock); its kind stays matchable.
    #[error("Longhorn backup store: {0}")]
    Longhorn(#[from] longhorn::Error),
    /// A local I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The source delivered data that breaks the pipeline's contract (a bug or a corrupt source).
    #[error("source {source_name}: {reason}")]
    SourceContract {
        /// The source's address.
        source_name: String,
        /// What it did wrong.
        reason: String,
    },
    /// The two sides' content differs.
    #[error("content differs: {0}")]
    Mismatch(String),
    /// A hook run around a snapshot (`--pre`/`--post`, a serve job's hooks) did not succeed.
    #[error("{0}")]
    Hook(String),
    /// The operation was cancelled (interrupt).
    #[error("interrupted")]
    Cancelled,
    /// The operation failed and cleaning up after it failed too.
    #[error("{error}; cleaning up also failed, {left_behind} is left behind: {cleanup}")]
    CleanupFailed {
        /// The original error.
        error: Box<Error>,
        /// The cleanup error.
        cleanup: Box<Error>,
        /// What remains.
        left_behind: String,
    },
}

impl Error {
    /// A hook that did not succeed, in words.
    pub fn hook(error: crate::serve::runner::HookError) -> Self {
        Error::Hook(error.to_string())
    }

    /// This error, or, when the `cleanup` that followed it failed too, both errors and what
    /// is left behind. The one way every job reports a failure whose cleanup also failed.
    pub fn after_cleanup(
        self,
        cleanup: std::result::Result<(), impl Into<Error>>,
        left_behind: impl Into<String>,
    ) -> Error {
        match cleanup {
            Ok(()) => self,
            Err(cleanup) => Error::CleanupFailed {
                error: Box::new(self),
                cleanup: Box::new(cleanup.into()),
                left_behind: left_behind.into(),
            },
        }
    }

    /// An address error of objstore (`s3://…` parsing) as this crate's
    /// [`Error::InvalidAddress`]. objstore's message already says "invalid address" and names
    /// the input: wrapping its text in another `InvalidAddress` said both twice.
    pub fn from_address_error(error: objstore::Error) -> Error {
        match error {
            objstore::Error::InvalidAddress { input, reason } => Error::InvalidAddress {
                address: input,
                reason,
            },
            other => Error::Object(other),
        }
    }

    /// Whether the error says the request itself cannot be used (an address or option value
    /// refused before anything was done), rather than that the job failed: a CLI's "bad
    /// arguments".
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::InvalidAddress { .. } | Error::InvalidOption(_))
    }

    /// Whether the error came from an interrupt.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Error::Cancelled => true,
            Error::CleanupFailed { error, .. } => error.is_cancelled(),
            _ => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of diskferry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_objstore_address_error_says_invalid_address_once() {
        for (input, reason) in [
            ("s3://", "no bucket name"),
            ("s3://bucket", "no object key after the bucket"),
        ] {
            let error = objstore::S3Address::parse(input).unwrap_err();
            assert_eq!(
                Error::from_address_error(error).to_string(),
                format!("invalid address {input:?}: {reason}")
            );
        }
    }
}
