//! Image management as the `rbd` command does it: `snap create|protect|unprotect|ls|rm`,
//! `clone` (several children at once), `flatten`.

use diskferry::ops::{self, CloneFormat, CloneOptions, Features};
use diskferry::{Address, RbdSpec};

use super::CommandError;
use crate::ui::{cancel_on_signal, ConnectArgs, OutputArgs};

/// `snap` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapCommand {
    /// Create a snapshot: rbd:POOL/IMAGE@SNAP.
    Create {
        /// rbd:POOL/IMAGE@SNAP
        snap: String,
    },
    /// Protect a snapshot (needed by v1 clones).
    Protect {
        /// rbd:POOL/IMAGE@SNAP
        snap: String,
    },
    /// Unprotect a snapshot (refused while v1 clones depend on it).
    Unprotect {
        /// rbd:POOL/IMAGE@SNAP
        snap: String,
    },
    /// List the snapshots of an image.
    Ls {
        /// rbd:POOL/IMAGE
        image: String,
    },
    /// Remove a snapshot.
    Rm {
        /// rbd:POOL/IMAGE@SNAP
        snap: String,
    },
}

/// Arguments of `snap`.
#[derive(Debug, clap::Args)]
pub struct SnapArgs {
    #[command(subcommand)]
    command: SnapCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn rbd_spec(input: &str) -> Result<RbdSpec, CommandError> {
    Ok(Address::parse(input)?.rbd()?.clone())
}

/// Runs `snap`.
pub async fn snap(args: SnapArgs) -> Result<(), CommandError> {
    let ctx = args.connect.context();
    let report = match &args.command {
        SnapCommand::Create { snap } => ops::snap::create(&ctx, &rbd_spec(snap)?).await?,
        SnapCommand::Protect { snap } => ops::snap::protect(&ctx, &rbd_spec(snap)?).await?,
        SnapCommand::Unprotect { snap } => ops::snap::unprotect(&ctx, &rbd_spec(snap)?).await?,
        SnapCommand::Rm { snap } => ops::snap::remove(&ctx, &rbd_spec(snap)?).await?,
        SnapCommand::Ls { image } => {
            let rows = ops::snap::list(&ctx, &rbd_spec(image)?).await?;
            return args.output.print(&rows, || {
                let mut text = format!("{:>6}  {:<24} {:>14}  PROTECTED", "SNAPID", "NAME", "SIZE");
                for row in &rows {
                    text.push_str(&format!(
                        "\n{:>6}  {:<24} {:>14}  {}",
                        row.id,
                        row.name,
                        row.size,
                        if row.protected { "yes" } else { "" }
                    ));
                }
                text
            });
        }
    };
    args.output.print(&report, || {
        format!("{} {}", report.action.word(), report.snapshot)
    })
}

/// Arguments of `clone`.
#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// The parent snapshot: rbd:POOL/IMAGE@SNAP.
    pub parent: String,
    /// One or more new images: rbd:POOL/CHILD.
    #[arg(required = true)]
    pub children: Vec<String>,
    /// Clone format.
    #[arg(long, value_parser = super::named::<CloneFormat>(&CloneFormat::NAMES), default_value_t = CloneFormat::V2)]
    pub clone_format: CloneFormat,
    /// Features of the clones (default: those of `rbd create`).
    #[arg(long)]
    pub features: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `clone`.
pub async fn clone(args: CloneArgs) -> Result<(), CommandError> {
    let parent = rbd_spec(&args.parent)?;
    let children = args
        .children
        .iter()
        .map(|c| rbd_spec(c))
        .collect::<Result<Vec<_>, _>>()?;
    let options = CloneOptions {
        format: args.clone_format,
        features: match &args.features {
            Some(list) => Features::parse(list)?,
            None => Features::DEFAULT,
        },
    };
    let ctx = args.connect.context();
    let cancel = cancel_on_signal();
    let report = ops::clone_many(&ctx, &parent, &children, &options, &cancel).await?;
    args.output.print(&report, || {
        report
            .children
            .iter()
            .map(|c| format!("cloned {} -> {c}", report.parent))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Arguments of `flatten`.
#[derive(Debug, clap::Args)]
pub struct FlattenArgs {
    /// The clone: rbd:POOL/IMAGE.
    pub image: String,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `flatten`.
pub async fn flatten(args: FlattenArgs) -> Result<(), CommandError> {
    let spec = rbd_spec(&args.image)?;
    let ctx = args.connect.context();
    let report = ops::flatten(&ctx, &spec).await?;
    args.output.print(&report, || {
        format!(
            "flattened {} (no longer a clone of {})",
            report.image, report.parent
        )
    })
}
