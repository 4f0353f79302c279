//! Image management as the `rbd` command does it: `snap create|protect|unprotect|ls|rm`,
//! `clone` (several children at once), `flatten`.

use diskferry::{blocking, Address, RbdSpec};
use rbd::{CloneFormat, CloneOptions, Features, Image, OpenMode};
use serde::Serialize;

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

/// One snapshot, as `snap ls` prints it.
#[derive(Debug, Serialize)]
struct SnapRow {
    id: u64,
    name: String,
    size: u64,
    protected: bool,
}

fn rbd_spec(input: &str) -> Result<RbdSpec, CommandError> {
    Ok(Address::parse(input)?.rbd()?.clone())
}

fn with_snap(input: &str) -> Result<(RbdSpec, String), CommandError> {
    let spec = rbd_spec(input)?;
    let snap = spec
        .snap
        .clone()
        .ok_or_else(|| format!("{input}: name a snapshot, rbd:POOL/IMAGE@SNAP"))?;
    Ok((spec, snap))
}

/// Runs `snap`.
pub async fn snap(args: SnapArgs) -> Result<(), CommandError> {
    let ctx = args.connect.context();
    let (spec, snap) = match &args.command {
        SnapCommand::Ls { image } => (rbd_spec(image)?, String::new()),
        SnapCommand::Create { snap }
        | SnapCommand::Protect { snap }
        | SnapCommand::Unprotect { snap }
        | SnapCommand::Rm { snap } => with_snap(snap)?,
    };
    let ioctx = ctx.pool(&spec.pool).await?;
    let name = spec.image.clone();
    let command = args.command;
    let rows = blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        match command {
            SnapCommand::Create { .. } => image.snap_create(&snap)?,
            SnapCommand::Protect { .. } => image.snap_protect(&snap)?,
            SnapCommand::Unprotect { .. } => image.snap_unprotect(&snap)?,
            SnapCommand::Rm { .. } => image.snap_remove(&snap)?,
            SnapCommand::Ls { .. } => {
                let mut rows = Vec::new();
                for s in image.snap_list()? {
                    let protected = image.snap_is_protected(&s.name)?;
                    rows.push(SnapRow {
                        id: s.id,
                        name: s.name,
                        size: s.size,
                        protected,
                    });
                }
                return Ok(Some(rows));
            }
        }
        Ok(None)
    })
    .await?;
    if let Some(rows) = rows {
        args.output.print(&rows, || {
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
        })?;
    }
    Ok(())
}

/// Clone formats on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// v1: the parent snapshot must be protected.
    V1,
    /// v2: no protection needed.
    V2,
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
    #[arg(long, value_enum, default_value_t = Format::V2)]
    pub clone_format: Format,
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
        format: match args.clone_format {
            Format::V1 => CloneFormat::V1,
            Format::V2 => CloneFormat::V2,
        },
        features: match &args.features {
            Some(list) => Features::parse(list)?,
            None => Features::DEFAULT,
        },
    };
    let ctx = args.connect.context();
    let cancel = cancel_on_signal();
    let made = diskferry::ops::clone_many(&ctx, &parent, &children, &options, &cancel).await?;
    args.output.print(&made, || {
        made.iter()
            .map(|c| format!("cloned {parent} -> {c}"))
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
}

/// Runs `flatten`.
pub async fn flatten(args: FlattenArgs) -> Result<(), CommandError> {
    let spec = rbd_spec(&args.image)?;
    let ctx = args.connect.context();
    let ioctx = ctx.pool(&spec.pool).await?;
    let name = spec.image.clone();
    blocking(move || Image::open(&ioctx, &name, OpenMode::ReadWrite)?.flatten()).await?;
    println!("flattened {spec}");
    Ok(())
}
