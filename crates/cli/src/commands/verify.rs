//! `diskferry verify A B` and `diskferry digest ADDRESS`.

use diskferry::{ops, Address};

use super::CommandError;
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First address (path, http(s)://…, s3://…, rbd:…).
    pub a: String,
    /// Second address.
    pub b: String,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `verify`: exit status 0 when identical, an error naming both digests otherwise.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let (a, b) = (Address::parse(&args.a)?, Address::parse(&args.b)?);
    let ctx = args.connect.context();
    let report = ops::verify(&ctx, &a, &b, &ui::cancel_on_signal()).await?;
    args.output.print(&report, || {
        format!(
            "{} ({}, {}): {}\n{} ({}, {}): {}\n{}",
            report.a.address,
            report.a.format,
            ui::bytes(report.a.size),
            report.a.digest,
            report.b.address,
            report.b.format,
            ui::bytes(report.b.size),
            report.b.digest,
            if report.identical {
                "identical"
            } else {
                "DIFFERENT"
            }
        )
    })?;
    if report.identical {
        Ok(())
    } else {
        Err(diskferry::Error::Mismatch(format!(
            "{} and {} differ",
            report.a.address, report.b.address
        ))
        .into())
    }
}

/// Arguments of `digest`.
#[derive(Debug, clap::Args)]
pub struct DigestArgs {
    /// The address.
    pub address: String,
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
    let report = ops::digest(&ctx, &address, &bar, &ui::cancel_on_signal()).await?;
    args.output.print(&report, || {
        format!(
            "{}  {} ({})",
            report.digest,
            report.address,
            diskferry::DIGEST_ALGORITHM
        )
    })
}
