//! Keeps librados from leaving the process's stderr non-blocking.
//!
//! Ceph 16's logger (`ceph::logging::Log::_configure_stderr`, run when `rados_create2` makes a
//! context) sets `O_NONBLOCK` on stderr when stderr is a pipe, so that its own log lines are
//! written whole or not at all. The flag belongs to the pipe's open file description: every
//! other writer in the process (and the parent that shares the pipe) then sees `EAGAIN` as soon
//! as the reader falls behind by a pipe's buffer. Rust's `eprintln!` panics on that error, and
//! a panic whose message cannot be written either ends the process with status 101 and no word
//! (seen with a trace log piped to a test harness). [`StderrMode`] puts the flag back as it was.

/// The standard error stream's descriptor.
const STDERR_FD: libc::c_int = libc::STDERR_FILENO;

/// Whether stderr was blocking when a context was made, restored on [`StderrMode::restore`]
/// and on drop (an early return from a connect restores it too).
#[derive(Debug)]
pub(crate) struct StderrMode {
    /// stderr's status flags before librados ran, or `None` when they could not be read (no
    /// stderr): then nothing is restored.
    before: Option<libc::c_int>,
}

impl StderrMode {
    /// Records stderr's blocking mode now.
    pub(crate) fn save() -> Self {
        Self {
            before: status_flags(),
        }
    }

    /// Clears `O_NONBLOCK` on stderr if it was clear when saved and something set it since.
    /// Other flags, and a non-blocking mode the caller chose, are left alone.
    pub(crate) fn restore(&self) {
        let Some(before) = self.before else { return };
        if before & libc::O_NONBLOCK != 0 {
            return;
        }
        if let Some(now) = status_flags() {
            if now & libc::O_NONBLOCK != 0 {
                // SAFETY: F_SETFL takes an integer argument and touches no memory of ours; on
                // a descriptor that is not open it fails with EBADF, which changes nothing.
                unsafe { libc::fcntl(STDERR_FD, libc::F_SETFL, now & !libc::O_NONBLOCK) };
            }
        }
    }
}

impl Drop for StderrMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// stderr's file status flags, or `None` when it is not open.
fn status_flags() -> Option<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and touches no memory of ours; a descriptor that is not
    // open gives -1 (EBADF).
    let flags = unsafe { libc::fcntl(STDERR_FD, libc::F_GETFL) };
    (flags >= 0).then_some(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with stderr replaced by the write end of a fresh pipe, then puts stderr back.
    /// Returns the pipe's write-end flags after `f`.
    fn with_piped_stderr(f: impl FnOnce()) -> libc::c_int {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is writable for two descriptors, as pipe() requires.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: dup/dup2/close take and return plain descriptors; the saved copy of stderr
        // is put back below before anything else can print.
        let saved = unsafe { libc::dup(STDERR_FD) };
        assert!(saved >= 0);
        // SAFETY: as above.
        assert!(unsafe { libc::dup2(fds[1], STDERR_FD) } >= 0);
        f();
        let flags = status_flags().unwrap();
        // SAFETY: as above; every descriptor closed here was opened in this function.
        unsafe {
            libc::dup2(saved, STDERR_FD);
            libc::close(saved);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        flags
    }

    fn set_nonblocking() {
        let flags = status_flags().unwrap();
        // SAFETY: as in `restore`.
        unsafe { libc::fcntl(STDERR_FD, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }

    /// One test, not three: each case swaps the process's stderr, which parallel tests share.
    #[test]
    fn restore_clears_only_the_non_blocking_flag_librados_set() {
        let flags = with_piped_stderr(|| {
            let mode = StderrMode::save();
            set_nonblocking();
            mode.restore();
        });
        assert_eq!(flags & libc::O_NONBLOCK, 0, "restore");

        let flags = with_piped_stderr(|| {
            let _mode = StderrMode::save();
            set_nonblocking();
        });
        assert_eq!(flags & libc::O_NONBLOCK, 0, "drop");

        let flags = with_piped_stderr(|| {
            set_nonblocking();
            StderrMode::save().restore();
        });
        assert_ne!(flags & libc::O_NONBLOCK, 0, "the caller's own choice");
        assert_ne!(flags & libc::O_WRONLY, 0, "other flags are kept");
    }
}
