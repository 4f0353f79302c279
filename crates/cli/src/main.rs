//! `diskferry`: move VM disks between qcow2, raw, Ceph RBD and object stores.
//!
//! Each subcommand lives in its own module under `commands/`; this file only parses and
//! dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "diskferry",
    version,
    about = "Move VM disks between formats and stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a disk image between raw and qcow2 (input format detected by magic).
    Convert(commands::convert::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("diskferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Convert(args) => commands::convert::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
            ExitCode::FAILURE
        }
    }
}
