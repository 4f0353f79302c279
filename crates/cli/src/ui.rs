//! What every subcommand shares: connection flags, the progress bar, `--json` output, and
//! Ctrl-C turned into cancellation (so a failed or interrupted job cleans up after itself).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use diskferry::{CancellationToken, Context, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use objstore::S3Config;
use rados::ClusterConfig;
use serde::Serialize;

use crate::commands::CommandError;

/// How often the progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// Flags naming the cluster and the S3 endpoint, as `rbd` and the AWS CLI take them.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Ceph configuration file (default: $CEPH_CONF, then /etc/ceph/ceph.conf).
    #[arg(long = "ceph-conf", global = true)]
    pub ceph_conf: Option<PathBuf>,
    /// Ceph keyring (default: the one the conf file or $CEPH_ARGS names).
    #[arg(long, global = true)]
    pub keyring: Option<PathBuf>,
    /// Ceph client id, without `client.` (default: from $CEPH_ARGS, else `admin`).
    #[arg(long = "id", global = true)]
    pub client_id: Option<String>,
    /// S3 endpoint URL (default: $AWS_ENDPOINT_URL).
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1).
    #[arg(long, global = true)]
    pub region: Option<String>,
}

impl ConnectArgs {
    /// The library context for these flags and the environment.
    pub fn context(&self) -> Context {
        let mut ceph = ClusterConfig::from_env();
        if self.ceph_conf.is_some() {
            ceph.conf_file = self.ceph_conf.clone();
        }
        if self.keyring.is_some() {
            ceph.keyring = self.keyring.clone();
        }
        if self.client_id.is_some() {
            ceph.client_id = self.client_id.clone();
        }
        let s3 = S3Config::from_env()
            .with_endpoint(self.endpoint.clone())
            .with_region(self.region.clone());
        Context::new(ceph, s3)
    }
}

/// Flags about output.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Print a machine-readable JSON result on stdout (and no progress bar).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar, even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

impl OutputArgs {
    /// A progress bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Bar {
        let visible = !self.json && !self.no_progress && std::io::stderr().is_terminal();
        Bar {
            bar: visible.then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.enable_steady_tick(PROGRESS_TICK);
                bar
            }),
        }
    }

    /// Prints `value` as JSON when `--json`, else `human()`.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> Result<(), CommandError> {
        let text = if self.json {
            serde_json::to_string_pretty(value)?
        } else {
            human()
        };
        // A closed pipe (`| head`) is not an error of the job: the result was produced.
        match writeln!(std::io::stdout(), "{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// The binary's [`Progress`]: an indicatif bar over the disk's offsets.
#[derive(Debug)]
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn start(&self, what: &str, size: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(size);
            bar.set_message(what.to_string());
        }
    }

    fn position(&self, offset: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A cancellation token that the first Ctrl-C (SIGINT) or SIGTERM cancels; the job then
/// aborts and removes what it created. A second signal exits at once.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("diskferry: interrupted, cleaning up (interrupt again to exit at once)");
        cancel.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    token
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
