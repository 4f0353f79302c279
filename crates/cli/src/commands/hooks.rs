//! `--pre`/`--post`: commands run right around the snapshot of `export-vm` and
//! `longhorn backup`, e.g. a guest file-system freeze and thaw (see `diskferry::ops::hooks`).

use std::time::Duration;

use diskferry::ops::hooks::{shell_hook, Hooks, DEFAULT_HOOK_TIMEOUT};

/// The hook flags, shared by the commands that take a snapshot.
#[derive(Debug, Clone, clap::Args)]
pub struct HookArgs {
    /// A command run by /bin/sh -c just before the snapshot; if it fails, no snapshot is taken
    /// and the command fails (e.g. a guest file-system freeze).
    #[arg(long, value_name = "COMMAND")]
    pre: Option<String>,
    /// A command run by /bin/sh -c just after the snapshot, also when the snapshot failed, once
    /// --pre succeeded (e.g. the thaw); if it fails, the snapshot is removed and the command fails.
    #[arg(long, value_name = "COMMAND")]
    post: Option<String>,
    /// Seconds each hook may run before it is killed and counts as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HOOK_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    hook_timeout: u64,
}

impl HookArgs {
    /// The hooks as the library takes them.
    pub fn hooks(&self) -> Hooks {
        let timeout = Duration::from_secs(self.hook_timeout);
        Hooks {
            pre: self.pre.as_deref().map(|c| shell_hook(c, timeout)),
            post: self.post.as_deref().map(|c| shell_hook(c, timeout)),
        }
    }
}
