//! `diskferry convert [-f FMT] [-O FMT] SRC DST`: like `qemu-img convert`, between any two
//! places diskferry knows (files, http(s) and s3 inputs, s3 and file outputs, RBD images),
//! as one pipeline job: parallel, sparse, digested, cleaned up on failure or Ctrl-C.

use diskferry::ops::{self, ConvertOptions, ConvertReport};
use diskferry::{Address, ObjectFormat};

use super::export::EncodeFlags;
use super::{origin_note, CommandError};
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Arguments of `convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input format: qcow2, raw or raw.zst (default: as diskferry recorded it, else guessed
    /// from the content, and the result says so).
    #[arg(short = 'f', long = "format", value_parser = super::parse_format)]
    pub format: Option<ObjectFormat>,
    /// Output format: qcow2, raw or raw.zst (default: from DST's extension, else qcow2; raw
    /// for an RBD image).
    #[arg(short = 'O', long = "output-format", value_parser = super::parse_format)]
    pub output_format: Option<ObjectFormat>,
    #[command(flatten)]
    flags: EncodeFlags,
    /// Input: a path, http(s)://…, s3://BUCKET/KEY or rbd:[POOL/]IMAGE[@SNAP].
    pub src: String,
    /// Output: a path, s3://BUCKET/KEY or rbd:[POOL/]IMAGE.
    pub dst: String,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs the conversion and prints its report.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let source = Address::parse(&args.src)?;
    let destination = Address::parse(&args.dst)?;
    let output_format = match (&destination, args.output_format) {
        (_, Some(format)) => Some(format),
        (Address::Rbd(_), None) => Some(ObjectFormat::Raw),
        _ => None,
    };
    let options = ConvertOptions {
        format: args.format,
        sink: args.flags.options(output_format, Some(&destination))?.sink,
    };
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let report = ops::convert(&ctx, &source, &destination, &options, &bar, &cancel).await?;
    args.output.print(&report, || describe(&report))
}

fn describe(report: &ConvertReport) -> String {
    let compression = super::clusters_note(&report.format, &report.compression);
    format!(
        "converted {} ({}{}) to {} ({}{}): {}",
        report.source,
        report.source_format,
        origin_note(report.source_format_origin),
        report.destination,
        report.format,
        compression,
        super::copy_figures!(report, format!("{} output", ui::bytes(report.output_size))),
    )
}
