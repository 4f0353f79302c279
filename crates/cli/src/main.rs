//! `diskferry`: move VM disks between qcow2, raw, Ceph RBD and object stores.
//!
//! Each subcommand lives in its own module under `commands/`; this file only parses and
//! dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod logs;
mod ui;

/// The exit statuses, for `--help`.
const EXIT_STATUS_HELP: &str = "Exit status: 0 done; 1 failed (for verify: the disks differ); \
2 bad arguments (an option, address or value that cannot be used, found before anything was done); \
130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM, after the job removed what it had created \
(a second signal exits at once, without cleaning up).";

/// glibc malloc arenas for the process (unless `MALLOC_ARENA_MAX` is set). With glibc's
/// default (8 per core) the block buffers allocated on one thread and freed on another pile up
/// as free memory in many arenas: a `run` of a Longhorn job over incompressible data peaked at
/// 462–507 MiB at concurrency 2 by default, 330–398 with 2 arenas, 302–324 with 1, at equal
/// CPU (small allocations are served by glibc's per-thread caches without the arena lock);
/// BENCHMARKS.md, "Peak RSS".
const MALLOC_ARENAS: u32 = 1;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "diskferry",
    version,
    about = "Move VM disks between formats and stores",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// More log lines on stderr (warnings, retries included, show without it): -v each job's
    /// start and end, -vv details, -vvv everything. RUST_LOG, when set, decides instead
    /// (e.g. RUST_LOG=diskferry=debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Nothing on stderr but errors: no warnings, no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a disk between qcow2, raw and raw.zst, from and to any place (like qemu-img convert).
    Convert(commands::convert::Args),
    /// Import a qcow2 or raw image (file, http(s), s3, rbd) into a new RBD image.
    Import(commands::import::Args),
    /// Import a golden image, snapshot it and protect the snapshot.
    Golden(commands::import::GoldenArgs),
    /// Create, protect, unprotect, list or remove snapshots.
    Snap(commands::images::SnapArgs),
    /// Create copy-on-write clones of a snapshot (several at once).
    Clone(commands::images::CloneArgs),
    /// Copy a clone's parent data into it and detach it.
    Flatten(commands::images::FlattenArgs),
    /// Compare the content of two disks (any formats, any places).
    Verify(commands::verify::Args),
    /// Print the content digest of a disk.
    Digest(commands::verify::DigestArgs),
    /// Longhorn backup stores: backup, restore, ls, inspect, rm.
    Longhorn(commands::longhorn::Args),
    /// Export an RBD image or snapshot into an S3 object or a file (qcow2, raw, raw.zst).
    Export(commands::export::Args),
    /// Export every disk of a VM from one group snapshot, with a manifest written last.
    ExportVm(commands::vm::ExportArgs),
    /// Restore every disk of a VM bundle into RBD and check every digest.
    ImportVm(commands::vm::ImportArgs),
    /// Run a configuration's jobs on their schedules, with metrics and an HTTP API, until
    /// SIGTERM (--check validates the configuration and prints each job's next runs).
    Serve(commands::serve::Args),
    /// Run one job of a serve configuration once, in the foreground (for a CronJob or timer).
    Run(commands::serve::RunArgs),
    /// Show what a job's retention would remove and which rule keeps each survivor.
    Prune(commands::serve::PruneArgs),
    /// Find and remove what killed runs left (snapshots, working images, uploads, Longhorn stubs).
    Cleanup(commands::cleanup::Args),
    /// One run (or the start-up work) of `serve`, in the worker process serve starts: its task
    /// on standard input, its messages on standard output. Not for people.
    #[command(hide = true)]
    ServeWorker,
}

fn main() -> ExitCode {
    // Before any other thread exists: arenas are made as threads first contend.
    diskferry::allocator::limit_arenas(MALLOC_ARENAS);
    let cli = Cli::parse();
    logs::init(cli.verbose, cli.quiet);
    ui::set_quiet(cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("diskferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = runtime.block_on(async { ui::watch_signals() }) {
        eprintln!("diskferry: cannot watch for SIGINT and SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    // A worker's interrupt is its service's business (the service reports the run).
    let is_worker = matches!(cli.command, Command::ServeWorker);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Convert(args) => commands::convert::run(args).await,
            Command::Import(args) => commands::import::run(args).await,
            Command::Golden(args) => commands::import::golden(args).await,
            Command::Snap(args) => commands::images::snap(args).await,
            Command::Clone(args) => commands::images::clone(args).await,
            Command::Flatten(args) => commands::images::flatten(args).await,
            Command::Verify(args) => commands::verify::run(args).await,
            Command::Digest(args) => commands::verify::digest(args).await,
            Command::Longhorn(args) => commands::longhorn::run(args).await,
            Command::Export(args) => commands::export::run(args).await,
            Command::ExportVm(args) => commands::vm::export(args).await,
            Command::ImportVm(args) => commands::vm::import(args).await,
            Command::Serve(args) => {
                commands::serve::run(args, logs::Verbosity::new(cli.verbose, cli.quiet)).await
            }
            Command::Run(args) => commands::serve::run_job(args).await,
            Command::Prune(args) => commands::serve::prune(args).await,
            Command::Cleanup(args) => commands::cleanup::run(args).await,
            Command::ServeWorker => commands::serve::worker().await,
        }
    });
    match result {
        Ok(()) => {
            // The signal came when the copy was already complete (its final steps do not
            // stop half-way): "cleaning up" was said, so say what happened instead.
            if ui::exit_status_after_signal().is_some() && !is_worker {
                eprintln!(
                    "diskferry: the job had completed when the interrupt took effect: \
                     its result stands, nothing was removed"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let message = e.to_string();
            eprintln!("diskferry: {message}");
            // Errors that already quote their source in their message are not repeated.
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                let text = s.to_string();
                if !message.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = s.source();
            }
            // Interrupted: the job has cleaned up; say which signal stopped it, the way a
            // shell reports a program the signal killed. A job that completed despite a late
            // signal returned Ok above: its result stands.
            match ui::exit_status_after_signal() {
                Some(status) => ExitCode::from(status),
                None if is_usage_error(&*e) => ExitCode::from(USAGE_ERROR),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The exit status of a command line that cannot be used, as clap gives for unparsable ones.
const USAGE_ERROR: u8 = 2;

/// Whether `error` says the command line itself cannot be used (an address or option value
/// the library refused before doing anything), rather than that the job failed.
fn is_usage_error(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<diskferry::Error>()
        .is_some_and(diskferry::Error::is_usage)
}
