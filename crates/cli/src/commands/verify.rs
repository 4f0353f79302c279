//! `diskferry verify A B` and `diskferry digest ADDRESS`.

use diskferry::{ops, Address, ObjectFormat};

use super::{origin_note, CommandError};
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First address (path, http(s)://…, s3://…, rbd:…).
    pub a: String,
    /// Second address.
    pub b: String,
    /// Format of the first: qcow2, raw or raw.zst (default: as recorded, else guessed).
    #[arg(short = 'f', long = "format", value_parser = super::parse_format)]
    pub format: Option<ObjectFormat>,
    /// Format of the second (as `qemu-img compare -F`).
    #[arg(short = 'F', long = "second-format", value_parser = super::parse_format)]
    pub second_format: Option<ObjectFormat>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `verify`: exit status 0 when identical, an error naming the first differing byte
/// otherwise.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let (a, b) = (Address::parse(&args.a)?, Address::parse(&args.b)?);
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let report = ops::verify(&ctx, (&a, args.format), (&b, args.second_format), &cancel).await?;
    args.output.print(&report, || {
        format!(
            "{} ({}{}, {}): {}\n{} ({}{}, {}): {}\n{}",
            report.a.address,
            report.a.format,
            origin_note(report.a.format_origin),
            ui::bytes(report.a.size),
            report.a.digest,
            report.b.address,
            report.b.format,
            origin_note(report.b.format_origin),
            ui::bytes(report.b.size),
            report.b.digest,
            match report.first_difference {
                None => "identical".to_string(),
                Some(offset) => format!("DIFFERENT from byte {offset}"),
            }
        )
    })?;
    match report.first_difference {
        None => Ok(()),
        Some(offset) => Err(diskferry::Error::Mismatch(format!(
            "{} and {} differ, first at byte {offset}{}",
            report.a.address,
            report.b.address,
            if report.a.size == report.b.size {
                String::new()
            } else {
                format!(
                    " (their sizes differ: {} and {} bytes)",
                    report.a.size, report.b.size
                )
            }
        ))
        .into()),
    }
}

/// Arguments of `digest`.
#[derive(Debug, clap::Args)]
pub struct DigestArgs {
    /// The address.
    pub address: String,
    /// Its format: qcow2, raw or raw.zst (default: as recorded, else guessed).
    #[arg(short = 'f', long = "format", value_parser = super::parse_format)]
    pub format: Option<ObjectFormat>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `digest`.
pub async fn digest(args: DigestArgs) -> Result<(), CommandError> {
    let address = Address::parse(&args.address)?;
    let ctx = args.connect.context();
    let bar = args.output.progress();
    let cancel = ui::cancel_on_signal();
    let report = ops::digest(&ctx, &address, args.format, &bar, &cancel).await?;
    args.output.print(&report, || {
        format!(
            "{}  {} ({}, {}{})",
            report.digest,
            report.address,
            report.digest_algorithm,
            report.format,
            origin_note(report.format_origin)
        )
    })
}
