//! Logs: `tracing` events on stderr, written above the progress bar, never on stdout (which
//! belongs to `--json`).
//!
//! `RUST_LOG`, when set, decides with its full syntax (`diskferry=debug,objstore=trace`).
//! Else the flags do: `-q` errors only, none warnings (a retry is one), `-v` also each job's
//! start and end, `-vv` details, `-vvv` everything.
//!
//! The AWS SDK and the HTTP/TLS crates under it log requests, headers and signing steps at
//! debug and trace: they stay at warn unless `RUST_LOG` names them itself, so that
//! `RUST_LOG=trace` or `-vvv` never prints a request signature.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The environment variable that overrides the flags, as every `tracing` program reads it.
pub const LOG_ENV: &str = "RUST_LOG";

/// Target prefixes held at [`QUIET_LEVEL`] unless `RUST_LOG` names them: the AWS SDK
/// (`aws_sigv4`, `aws_smithy_runtime`, …) and the HTTP, HTTP/2 and TLS stacks.
pub const QUIET_TARGETS: &[&str] = &["aws", "hyper", "h2", "rustls", "tower"];

/// The level [`QUIET_TARGETS`] are held at.
pub const QUIET_LEVEL: &str = "warn";

/// The level for `-q`, nothing, `-v`, `-vv` and `-vvv` (or more).
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Index in [`LEVELS`] of the level without flags.
const DEFAULT_LEVEL: usize = 1;

/// The filter directives for `RUST_LOG` (when set and not blank) or the flags, with every
/// target of [`QUIET_TARGETS`] that the user did not name held at [`QUIET_LEVEL`].
pub fn directives(rust_log: Option<&str>, verbose: u8, quiet: bool) -> String {
    let base = match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(user) => user.to_string(),
        None if quiet => LEVELS[0].to_string(),
        None => LEVELS[(DEFAULT_LEVEL + usize::from(verbose)).min(LEVELS.len() - 1)].to_string(),
    };
    // A directive is `target[span{field}]=level`, `target=level` or a bare level; a more
    // specific target (`aws_sigv4`) already wins over our shorter prefix (`aws`), so only a
    // target the user wrote exactly as ours would be overridden.
    let named: Vec<&str> = base
        .split(',')
        .filter_map(|d| d.split(['=', '[']).next())
        .map(str::trim)
        .collect();
    let mut directives = base.clone();
    for target in QUIET_TARGETS {
        if !named.contains(target) {
            directives.push_str(&format!(",{target}={QUIET_LEVEL}"));
        }
    }
    directives
}

/// The log flags of the command line, to hand on to a process this one starts (serve's
/// workers log as the service was asked to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    verbose: u8,
    quiet: bool,
}

impl Verbosity {
    /// The flags `-v` given `verbose` times, or `-q`.
    pub fn new(verbose: u8, quiet: bool) -> Self {
        Self { verbose, quiet }
    }

    /// The same flags as arguments (`RUST_LOG` goes through the environment).
    pub fn args(self) -> Vec<String> {
        if self.quiet {
            vec!["-q".to_string()]
        } else {
            (0..self.verbose).map(|_| "-v".to_string()).collect()
        }
    }
}

/// Installs the subscriber: stderr, above the progress bar, colours only on a terminal.
/// Directives `RUST_LOG` gets wrong are ignored (with a note on stderr), not fatal.
pub fn init(verbose: u8, quiet: bool) {
    let rust_log = std::env::var(LOG_ENV).ok();
    let filter = EnvFilter::builder().parse_lossy(directives(rust_log.as_deref(), verbose, quiet));
    // A second initialisation (never in the binary) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBar)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line stderr refuses is dropped: reporting it would print to that stderr, and
        // Rust's `eprintln!` panics when it fails, ending the job over a log line.
        .log_internal_errors(false)
        .try_init();
}

/// Writes each log line to stderr with the progress bar (if one is drawn) lifted out of
/// the way, so that lines and bar never interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct AboveBar;

impl<'a> MakeWriter<'a> for AboveBar {
    type Writer = AboveBar;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// How long a log line waits before it tries a full, non-blocking stderr again.
const FULL_STDERR_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

impl Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call.
        crate::ui::above_bar(|| write_all_waiting(&mut std::io::stderr().lock(), buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Writes all of `buf`, waiting while `out` is full. stderr can be non-blocking although this
/// process never asked for it (the flag belongs to the pipe, which a parent or a library may
/// have set; librados does, see the `rados` crate): a full pipe then says `WouldBlock`, and a
/// slow log reader must slow the job down, as with a blocking pipe, not fail it.
fn write_all_waiting(out: &mut impl Write, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(FULL_STDERR_PAUSE)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `step` bytes per write and says `WouldBlock` every other call.
    struct Congested {
        taken: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Congested {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.step);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_non_blocking_stderr_is_waited_for_and_nothing_is_lost() {
        let line: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut out = Congested {
            taken: Vec::new(),
            step: 7,
            calls: 0,
        };
        write_all_waiting(&mut out, &line).unwrap();
        assert_eq!(out.taken, line);
    }

    const HELD: &str = ",aws=warn,hyper=warn,h2=warn,rustls=warn,tower=warn";

    #[test]
    fn flags_choose_the_level_when_rust_log_is_unset() {
        assert_eq!(directives(None, 0, false), format!("warn{HELD}"));
        assert_eq!(directives(None, 0, true), format!("error{HELD}"));
        assert_eq!(directives(None, 1, false), format!("info{HELD}"));
        assert_eq!(directives(None, 2, false), format!("debug{HELD}"));
        assert_eq!(directives(None, 3, false), format!("trace{HELD}"));
        assert_eq!(directives(None, 9, false), format!("trace{HELD}"));
        assert_eq!(directives(Some("  "), 1, false), format!("info{HELD}"));
    }

    #[test]
    fn rust_log_wins_over_the_flags_but_not_over_the_held_targets() {
        assert_eq!(directives(Some("trace"), 0, true), format!("trace{HELD}"));
        assert_eq!(
            directives(Some("diskferry=debug"), 2, false),
            format!("diskferry=debug{HELD}")
        );
    }

    #[test]
    fn a_held_target_named_in_rust_log_is_the_users() {
        assert_eq!(
            directives(Some("trace,aws=trace,hyper[span]=debug"), 0, false),
            "trace,aws=trace,hyper[span]=debug,h2=warn,rustls=warn,tower=warn"
        );
    }

    #[test]
    fn held_targets_are_filtered_at_trace_and_named_longer_targets_win() {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt;

        /// Counts the events that pass the filter, by target.
        #[derive(Default, Clone)]
        struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                self.0
                    .lock()
                    .unwrap()
                    .push(event.metadata().target().into());
            }
        }

        let run = |rust_log: &str| {
            let seen = Seen::default();
            let filter = EnvFilter::builder().parse_lossy(directives(Some(rust_log), 0, false));
            let subscriber = tracing_subscriber::registry()
                .with(filter)
                .with(seen.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::event!(target: "aws_sigv4::sign", Level::TRACE, "canonical request");
                tracing::event!(target: "aws_smithy_runtime", Level::WARN, "retrying");
                tracing::event!(target: "hyper_util::client", Level::DEBUG, "headers");
                tracing::event!(target: "diskferry::pipeline", Level::TRACE, "job");
            });
            let seen = seen.0.lock().unwrap().clone();
            seen
        };
        assert_eq!(run("trace"), ["aws_smithy_runtime", "diskferry::pipeline"]);
        assert_eq!(
            run("trace,aws_sigv4=trace"),
            [
                "aws_sigv4::sign",
                "aws_smithy_runtime",
                "diskferry::pipeline"
            ]
        );
    }
}
