//! Commands run right around a snapshot (`--pre`/`--post` of `export-vm` and `longhorn
//! backup`, the `[jobs.hooks]` of a serve job): e.g. freezing a guest's file systems before
//! the snapshot and thawing them after, so the snapshot is application-consistent while the
//! copy itself runs unfrozen.
//!
//! The rule, the same everywhere: `pre` runs first and, when it fails (non-zero exit, killed
//! at its timeout, cannot start), nothing is snapshotted; `post` runs once `pre` succeeded,
//! also when the snapshot failed; a failed `post` fails the job and its snapshot is removed,
//! since a guest that may still be frozen needs someone to look.

use std::future::Future;
use std::time::Duration;

pub use crate::serve::config::{Hook, Hooks};
use crate::serve::runner::run_hook;
use crate::{Error, Result};

/// How long a hook given on the command line may run by default.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The shell a command-line hook is run by, as `sh -c COMMAND`.
const SHELL: &str = "/bin/sh";

/// A hook given on the command line: `command` is run by `/bin/sh -c`, killed after `timeout`.
pub fn shell_hook(command: &str, timeout: Duration) -> Hook {
    Hook {
        command: vec![SHELL.into(), "-c".into(), command.into()],
        timeout,
    }
}

/// Something a hooked snapshot made that must go when the `post` hook fails.
pub trait Discard {
    /// Removes it.
    fn discard(self) -> impl Future<Output = Result<()>> + Send;
}

impl Discard for super::vm::VmSnapshot {
    fn discard(self) -> impl Future<Output = Result<()>> + Send {
        self.remove()
    }
}

impl Discard for super::export::TemporarySnapshot {
    fn discard(self) -> impl Future<Output = Result<()>> + Send {
        self.remove()
    }
}

/// Runs `take` (which makes the snapshot) between `hooks.pre` and `hooks.post`, by the rule in
/// the module's documentation. Without hooks it is just `take`.
pub async fn snapshot_with_hooks<S: Discard>(
    hooks: &Hooks,
    take: impl Future<Output = Result<S>>,
) -> Result<S> {
    if let Some(pre) = &hooks.pre {
        run_hook("pre", pre).await.map_err(Error::hook)?;
    }
    let taken = take.await;
    let Some(post) = &hooks.post else {
        return taken;
    };
    let thawed = run_hook("post", post).await.map_err(Error::hook);
    match (taken, thawed) {
        (Ok(snapshot), Ok(())) => Ok(snapshot),
        (Ok(snapshot), Err(e)) => {
            let removed = snapshot.discard().await;
            Err(e.after_cleanup(removed, "the snapshot taken between the hooks"))
        }
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(post)) => Err(Error::Hook(format!("{e}; and then {post}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A snapshot double that counts its removals.
    struct Counted(Arc<AtomicUsize>);

    impl Discard for Counted {
        fn discard(self) -> impl Future<Output = Result<()>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    fn hooks(pre: Option<&str>, post: Option<&str>) -> Hooks {
        Hooks {
            pre: pre.map(|c| shell_hook(c, Duration::from_secs(5))),
            post: post.map(|c| shell_hook(c, Duration::from_secs(5))),
        }
    }

    #[tokio::test]
    async fn order_is_pre_snapshot_post() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let log = log.display();
        let hooks = hooks(
            Some(&format!("echo pre >> {log}")),
            Some(&format!("echo post >> {log}")),
        );
        let path = dir.path().join("log");
        let removed = Arc::new(AtomicUsize::new(0));
        let taken = snapshot_with_hooks(&hooks, async {
            let before = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, format!("{before}snapshot\n")).unwrap();
            Ok(Counted(removed.clone()))
        })
        .await;
        assert!(taken.is_ok());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "pre\nsnapshot\npost\n"
        );
        assert_eq!(removed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_pre_takes_no_snapshot_and_runs_no_post() {
        let dir = tempfile::tempdir().unwrap();
        let post_ran = dir.path().join("post");
        let hooks = hooks(
            Some("exit 3"),
            Some(&format!("touch {}", post_ran.display())),
        );
        let taken = AtomicUsize::new(0);
        let result = snapshot_with_hooks(&hooks, async {
            taken.fetch_add(1, Ordering::SeqCst);
            Ok(Counted(Arc::new(AtomicUsize::new(0))))
        })
        .await;
        let error = result.err().expect("pre failed").to_string();
        assert!(error.contains("pre hook"), "{error}");
        assert_eq!(taken.load(Ordering::SeqCst), 0);
        assert!(!post_ran.exists());
    }

    #[tokio::test]
    async fn post_runs_after_a_failed_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let post_ran = dir.path().join("post");
        let hooks = hooks(Some("true"), Some(&format!("touch {}", post_ran.display())));
        let result: Result<Counted> = snapshot_with_hooks(&hooks, async {
            Err(Error::NotFound("image rbd/nothing".into()))
        })
        .await;
        assert!(matches!(result, Err(Error::NotFound(_))));
        assert!(post_ran.exists());
    }

    #[tokio::test]
    async fn a_failed_post_removes_the_snapshot() {
        let removed = Arc::new(AtomicUsize::new(0));
        let hooks = hooks(None, Some("exit 1"));
        let result = snapshot_with_hooks(&hooks, async { Ok(Counted(removed.clone())) }).await;
        let error = result.err().expect("post failed").to_string();
        assert!(error.contains("post hook"), "{error}");
        assert_eq!(removed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_and_fails() {
        let hooks = Hooks {
            pre: Some(shell_hook("sleep 30", Duration::from_millis(300))),
            post: None,
        };
        let started = std::time::Instant::now();
        let result =
            snapshot_with_hooks(&hooks, async { Ok(Counted(Arc::new(AtomicUsize::new(0)))) }).await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
