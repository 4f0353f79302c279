//! `diskferry import SRC rbd:POOL/IMAGE` and `diskferry golden SRC rbd:POOL/BASE --snap NAME`.

use diskferry::ops::{self, CreateOptions, Features, ImportOptions, ImportReport};
use diskferry::sinks::{RbdSinkOptions, DEFAULT_WRITES_IN_FLIGHT};
use diskferry::{Address, RbdSpec};

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
        if let Some(features) = &self.features {
            create.features = Features::parse(features)?;
        }
        if let Some(size) = self.object_size {
            create = create.with_object_size(size)?;
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
    flags: ImportFlags,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `import`.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let source = Address::parse(&args.src)?;
    let target = Address::parse(&args.dst)?.rbd()?.clone();
    let options = args.flags.options()?;
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let report = ops::import(&ctx, &source, &target, &options, &bar, &cancel).await?;
    args.output.print(&report, || describe(&report))
}

fn describe(report: &ImportReport) -> String {
    format!(
        "imported {} ({}{}) into {}: {} virtual, {} read, {} written, {} skipped, {:.1} s\ndigest {} ({})",
        report.source,
        report.source_format,
        super::origin_note(report.source_format_origin),
        report.destination,
        ui::bytes(report.size),
        ui::bytes(report.bytes_read),
        ui::bytes(report.bytes_written),
        ui::bytes(report.bytes_skipped),
        report.seconds,
        report.digest,
        report.digest_algorithm,
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
    flags: ImportFlags,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `golden`: import, snapshot, protect.
pub async fn golden(args: GoldenArgs) -> Result<(), CommandError> {
    let source = Address::parse(&args.src)?;
    let base: RbdSpec = Address::parse(&args.dst)?.rbd()?.clone();
    let options = args.flags.options()?;
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let report = ops::golden(&ctx, &source, &base, &args.snap, &options, &bar, &cancel).await?;
    args.output.print(&report, || {
        format!(
            "{}\nprotected snapshot {}",
            describe(&report.import),
            report.snapshot
        )
    })
}
