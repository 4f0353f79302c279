//! `diskferry import SRC rbd:POOL/IMAGE` and `diskferry golden SRC rbd:POOL/BASE --snap NAME`.

use diskferry::ops::{self, CreateOptions, Features, ImportOptions, ImportReport};
use diskferry::sinks::{RbdSinkOptions, DEFAULT_WRITES_IN_FLIGHT};
use diskferry::{Address, CancellationToken, Context, RbdSpec};

use super::CommandError;
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Flags shared by `import` and `golden`.
#[derive(Debug, clap::Args)]
pub struct ImportFlags {
    /// Source format: qcow2, raw or raw.zst (default: as diskferry recorded it, else guessed
    /// from the content, and the result says so).
    #[arg(short = 'f', long = "format", value_parser = super::parse_format)]
    pub format: Option<diskferry::ObjectFormat>,
    /// Replace an existing image (it must have no snapshots).
    #[arg(long)]
    pub force: bool,
    /// Image features, comma-separated (default: layering,exclusive-lock,object-map,fast-diff,deep-flatten).
    #[arg(long)]
    pub features: Option<String>,
    /// Object size in bytes (a power of two from 4 KiB to 32 MiB; default 4 MiB).
    #[arg(long)]
    pub object_size: Option<u64>,
    /// A separate data pool (for erasure-coded data).
    #[arg(long)]
    pub data_pool: Option<String>,
    /// Writes in flight.
    #[arg(long, default_value_t = DEFAULT_WRITES_IN_FLIGHT)]
    pub jobs: usize,
    /// Keep the partial image when the import fails or is interrupted (default: remove it).
    #[arg(long)]
    pub keep_partial: bool,
}

impl ImportFlags {
    fn options(&self) -> Result<ImportOptions, CommandError> {
        let mut create = CreateOptions::default();
        // Refused before anything is done: bad arguments (status 2), as clap's own.
        fn usage(e: impl std::fmt::Display) -> diskferry::Error {
            diskferry::Error::InvalidOption(e.to_string())
        }
        if let Some(features) = &self.features {
            create.features = Features::parse(features).map_err(usage)?;
        }
        if let Some(size) = self.object_size {
            create = create.with_object_size(size).map_err(usage)?;
        }
        create.data_pool = self.data_pool.clone();
        Ok(ImportOptions {
            format: self.format,
            sink: RbdSinkOptions {
                create,
                in_flight: self.jobs,
                replace: self.force,
                keep_partial: self.keep_partial,
            },
        })
    }
}

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to import: a path, http(s)://…, s3://BUCKET/KEY or rbd:[POOL/]IMAGE[@SNAP];
    /// qcow2, raw or raw.zst (see --format).
    pub src: String,
    /// The new image: rbd:[POOL/]IMAGE.
    pub dst: String,
    #[command(flatten)]
    job: ImportJob,
}

/// What `import` and `golden` take after their addresses: how to import, where the cluster
/// is, and how to report.
#[derive(Debug, clap::Args)]
struct ImportJob {
    #[command(flatten)]
    flags: ImportFlags,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// An import about to run: its addresses and options, and what it reports to.
struct Started {
    source: Address,
    target: RbdSpec,
    options: ImportOptions,
    ctx: Context,
    cancel: CancellationToken,
    bar: ui::Bar,
}

impl ImportJob {
    /// Parses `src` and the RBD image `dst`, and sets up the context, Ctrl-C cancellation and
    /// progress bar that every import runs with.
    fn start(&self, src: &str, dst: &str) -> Result<Started, CommandError> {
        Ok(Started {
            source: Address::parse(src)?,
            target: Address::parse(dst)?.rbd()?.clone(),
            options: self.flags.options()?,
            ctx: self.connect.context(),
            cancel: ui::cancel_on_signal(),
            bar: self.output.progress(),
        })
    }
}

/// Runs `import`.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let s = args.job.start(&args.src, &args.dst)?;
    let report = ops::import(&s.ctx, &s.source, &s.target, &s.options, &s.bar, &s.cancel).await?;
    args.job.output.print(&report, || describe(&report))
}

fn describe(report: &ImportReport) -> String {
    format!(
        "imported {} ({}{}) into {}: {}",
        report.source,
        report.source_format,
        super::origin_note(report.source_format_origin),
        report.destination,
        super::copy_figures!(
            report,
            format!(
                "{} written, {} skipped",
                ui::bytes(report.bytes_written),
                ui::bytes(report.bytes_skipped)
            )
        ),
    )
}

/// Arguments of `golden`.
#[derive(Debug, clap::Args)]
pub struct GoldenArgs {
    /// The golden image to import (as for `import`).
    pub src: String,
    /// The base image: rbd:POOL/BASE.
    pub dst: String,
    /// The snapshot to create and protect.
    #[arg(long)]
    pub snap: String,
    #[command(flatten)]
    job: ImportJob,
}

/// Runs `golden`: import, snapshot, protect.
pub async fn golden(args: GoldenArgs) -> Result<(), CommandError> {
    let s = args.job.start(&args.src, &args.dst)?;
    let report = ops::golden(
        &s.ctx, &s.source, &s.target, &args.snap, &s.options, &s.bar, &s.cancel,
    )
    .await?;
    args.job.output.print(&report, || {
        format!(
            "{}\nprotected snapshot {}",
            describe(&report.import),
            report.snapshot
        )
    })
}
