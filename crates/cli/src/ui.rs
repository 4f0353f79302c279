//! What every subcommand shares: connection flags, the progress bar, `--json` output, and
//! Ctrl-C turned into cancellation (so a failed or interrupted job cleans up after itself).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use diskferry::{CancellationToken, ClusterConfig, Context, Progress, S3Config};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;

use crate::commands::CommandError;

/// How often the progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// The bar on screen, if any: log lines ([`above_bar`]) lift it out of their way.
static DRAWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// `-q`: no progress bar either.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Makes [`OutputArgs::progress`] draw no bar (`-q`: nothing on stderr but errors).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Runs `f`, which writes whole lines to stderr, with the progress bar (if one is drawn)
/// lifted for the moment and redrawn below what `f` wrote.
pub fn above_bar<R>(f: impl FnOnce() -> R) -> R {
    let drawn = locked(&DRAWN).clone();
    match drawn {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

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
        let visible = !self.json
            && !self.no_progress
            && !QUIET.load(Ordering::Relaxed)
            && std::io::stderr().is_terminal();
        Bar::new(visible.then_some(ProgressDrawTarget::stderr as fn() -> ProgressDrawTarget))
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

/// The binary's [`Progress`]: an indicatif bar over the disk's offsets, with the data rate
/// and the share of the disk skipped (holes cost nothing, so an offset rate would boast).
///
/// Nothing is drawn before [`Progress::start`] (the size is not known yet); each transfer of
/// a command that runs several (export-vm) gets a fresh bar.
pub struct Bar {
    /// Where a bar draws; `None`: no bar at all.
    target: Option<fn() -> ProgressDrawTarget>,
    /// The bar of the transfer under way.
    current: Mutex<Option<Drawn>>,
}

/// One transfer's bar and the data total its `{moved}` key reads.
#[derive(Debug)]
struct Drawn {
    bar: ProgressBar,
    data: Arc<AtomicU64>,
}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar")
            .field("visible", &self.target.is_some())
            .finish_non_exhaustive()
    }
}

impl Bar {
    /// A bar that draws on what `target` makes, or nothing when `None`.
    fn new(target: Option<fn() -> ProgressDrawTarget>) -> Self {
        Self {
            target,
            current: Mutex::new(None),
        }
    }

    /// Runs `f` on the current bar, if one is drawn.
    fn with_drawn(&self, f: impl FnOnce(&Drawn)) {
        if let Some(drawn) = locked(&self.current).as_ref() {
            f(drawn);
        }
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, size: u64) {
        let Some(target) = self.target else { return };
        let data = Arc::new(AtomicU64::new(0));
        let moved = Arc::clone(&data);
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .expect("valid template")
            .with_key(
                "moved",
                move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let data = moved.load(Ordering::Relaxed);
                    let _ = w.write_str(&moved_text(state.pos(), data, state.elapsed()));
                },
            )
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(size), target());
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(PROGRESS_TICK);
        *locked(&DRAWN) = Some(bar.clone());
        let previous = locked(&self.current).replace(Drawn { bar, data });
        if let Some(previous) = previous {
            previous.bar.finish_and_clear();
        }
    }

    fn position(&self, offset: u64) {
        self.with_drawn(|d| d.bar.set_position(offset));
    }

    fn data_moved(&self, bytes: u64) {
        self.with_drawn(|d| d.data.store(bytes, Ordering::Relaxed));
    }

    fn finish(&self) {
        let drawn = locked(&self.current).take();
        if let Some(drawn) = drawn {
            locked(&DRAWN).take();
            drawn.bar.finish_and_clear();
        }
    }
}

/// The guarded value, even if a thread panicked while holding the lock: a progress bar's
/// state is never worth a second panic.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bar's line: the disk, the offsets handled, then [`moved_text`].
const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {moved} ETA {eta}";

/// The bar's rate: data read per second since the start, and the share of the disk handled
/// so far that was skipped (holes and zero ranges, never read). `position` bytes of the disk
/// are handled, `data` bytes of them were read, in `elapsed`.
fn moved_text(position: u64, data: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        (data as f64 / seconds) as u64
    } else {
        0
    };
    let mut text = format!("{}/s", bytes(rate));
    if position > 0 {
        let skipped = position.saturating_sub(data) as f64 * 100.0 / position as f64;
        text.push_str(&format!(", {skipped:.0}% skipped"));
    }
    text
}

/// SIGINT's number (Ctrl-C); POSIX fixes it.
const SIGINT: u8 = 2;
/// SIGTERM's number; POSIX fixes it.
const SIGTERM: u8 = 15;
/// A process that stops because of signal N exits with 128 + N, as shells report one that
/// the signal killed: 130 after Ctrl-C, 143 after SIGTERM.
const SIGNAL_EXIT_BASE: u8 = 128;

/// The number of the signal that interrupted the job; 0 while none did.
static INTERRUPTED_BY: AtomicU8 = AtomicU8::new(0);

/// The exit status for a job that failed after a signal interrupted it (128 + the signal's
/// number), or `None` when no signal came.
pub fn exit_status_after_signal() -> Option<u8> {
    match INTERRUPTED_BY.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(SIGNAL_EXIT_BASE + signal),
    }
}

/// The token that the first Ctrl-C (SIGINT) or SIGTERM cancels, made by [`watch_signals`].
static ON_SIGNAL: OnceLock<CancellationToken> = OnceLock::new();

/// Whether a job has taken [`cancel_on_signal`]'s token, and so will clean up when it is
/// cancelled; before that, nothing has been created and a signal ends the process at once.
static CANCELLABLE: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT and SIGTERM handlers, at the start of `main` (inside the runtime), so
/// that no part of a run is left to the signals' default action: a signal before a job took
/// [`cancel_on_signal`]'s token (before it made anything, or in a command with nothing to
/// undo) ends the process at once with a message; after it, the first signal cancels the job, which removes what it created, and a
/// second exits at once. Each exit status is 128 + the signal's number.
pub fn watch_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered here, synchronously: a listener task spawned later would leave a window
    // in which a signal still kills the process without a word.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let token = ON_SIGNAL.get_or_init(CancellationToken::new).clone();
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = interrupt.recv() => SIGINT,
            _ = term.recv() => SIGTERM,
        };
        INTERRUPTED_BY.store(signal, Ordering::SeqCst);
        if !CANCELLABLE.load(Ordering::SeqCst) {
            above_bar(|| eprintln!("diskferry: interrupted"));
            std::process::exit(i32::from(SIGNAL_EXIT_BASE + signal));
        }
        above_bar(|| {
            eprintln!("diskferry: interrupted, cleaning up (interrupt again to exit at once)")
        });
        token.cancel();
        let again = tokio::select! {
            _ = interrupt.recv() => SIGINT,
            _ = term.recv() => SIGTERM,
        };
        std::process::exit(i32::from(SIGNAL_EXIT_BASE + again));
    });
    Ok(())
}

/// A cancellation token that the first Ctrl-C (SIGINT) or SIGTERM cancels (see
/// [`watch_signals`]); the job then aborts and removes what it created, and the process
/// exits with [`exit_status_after_signal`]. A second signal exits at once, with its own
/// status. Every caller shares the one token.
pub fn cancel_on_signal() -> CancellationToken {
    CANCELLABLE.store(true, Ordering::SeqCst);
    ON_SIGNAL.get_or_init(CancellationToken::new).clone()
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use indicatif::TermLike;

    use super::*;

    /// A terminal that keeps everything written to it.
    #[derive(Debug, Default)]
    struct Screen(Mutex<String>);

    /// The one screen of these tests (a draw target is made by a plain `fn`).
    static SCREEN: Screen = Screen(Mutex::new(String::new()));

    impl TermLike for &'static Screen {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(&format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn screen() -> ProgressDrawTarget {
        ProgressDrawTarget::term_like(Box::new(&SCREEN))
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_rate_counts_data_and_the_holes_are_a_share() {
        // 1 GiB handled in 2 s, 100 MiB of it read: 50 MiB/s of data, 90 % skipped.
        assert_eq!(
            moved_text(1024 * MIB, 100 * MIB, Duration::from_secs(2)),
            "50.00 MiB/s, 90% skipped"
        );
        assert_eq!(
            moved_text(64 * MIB, 64 * MIB, Duration::from_secs(1)),
            "64.00 MiB/s, 0% skipped"
        );
        // Nothing handled yet: no share, and no division by a zero time.
        assert_eq!(moved_text(0, 0, Duration::ZERO), "0 B/s");
    }

    #[test]
    fn nothing_is_drawn_before_start_and_the_bar_names_the_disk() {
        let bar = Bar::new(Some(screen));
        bar.position(0);
        bar.data_moved(0);
        std::thread::sleep(PROGRESS_TICK * 2);
        assert_eq!(SCREEN.0.lock().unwrap().as_str(), "", "drawn before start");

        bar.start("rbd:rbd/img", 100 * MIB);
        bar.data_moved(10 * MIB);
        bar.position(50 * MIB);
        std::thread::sleep(PROGRESS_TICK * 2);
        let drawn = SCREEN.0.lock().unwrap().clone();
        bar.finish();
        assert!(drawn.contains("rbd:rbd/img ["), "{drawn}");
        assert!(drawn.contains("50.00 MiB/100.00 MiB"), "{drawn}");
        assert!(drawn.contains("80% skipped"), "{drawn}");
        assert!(!drawn.contains("0 B/0 B"), "{drawn}");
    }
}
