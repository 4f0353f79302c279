//! Image management as the `rbd` command does it: `snap create|protect|unprotect|ls|rm`,
//! `clone` (several children at once), `flatten`.

use diskferry::{blocking, Address, RbdSpec, RBD_SCHEME};
use rbd::{CloneFormat, CloneOptions, Features, Image, LinkedImage, OpenMode};
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

/// One snapshot, as `snap ls` prints it. `snap ls --json` prints an array of these, in
/// creation order: `[{"id": 4, "name": "base", "size": 8388608, "protected": true}, …]`.
#[derive(Debug, Serialize)]
struct SnapRow {
    id: u64,
    name: String,
    size: u64,
    protected: bool,
}

/// What `snap create|protect|unprotect|rm --json` prints: one object naming the snapshot and
/// what was done to it,
/// `{"snapshot": "rbd:POOL/IMAGE@SNAP", "action": "created" | "protected" | "unprotected" | "removed"}`.
/// On failure nothing is printed on stdout.
#[derive(Debug, Serialize)]
struct SnapReport {
    snapshot: String,
    action: SnapAction,
}

/// What `snap` did, as [`SnapReport`] names it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum SnapAction {
    Created,
    Protected,
    Unprotected,
    Removed,
}

impl SnapAction {
    fn word(self) -> &'static str {
        match self {
            SnapAction::Created => "created",
            SnapAction::Protected => "protected",
            SnapAction::Unprotected => "unprotected",
            SnapAction::Removed => "removed",
        }
    }
}

/// What `snap` printed: the listing, or the one change.
enum SnapOutcome {
    List(Vec<SnapRow>),
    Changed(SnapAction),
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
    let outcome = blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        let (action, done) = match command {
            SnapCommand::Create { .. } => (SnapAction::Created, image.snap_create(&snap)),
            SnapCommand::Protect { .. } => (SnapAction::Protected, image.snap_protect(&snap)),
            SnapCommand::Unprotect { .. } => (SnapAction::Unprotected, image.snap_unprotect(&snap)),
            SnapCommand::Rm { .. } => (SnapAction::Removed, image.snap_remove(&snap)),
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
                return Ok(SnapOutcome::List(rows));
            }
        };
        done?;
        Ok(SnapOutcome::Changed(action))
    })
    .await?;
    match outcome {
        SnapOutcome::List(rows) => args.output.print(&rows, || {
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
        }),
        SnapOutcome::Changed(action) => {
            let report = SnapReport {
                snapshot: spec.to_string(),
                action,
            };
            args.output
                .print(&report, || format!("{} {}", action.word(), report.snapshot))
        }
    }
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

/// What `clone --json` prints: one object,
/// `{"parent": "rbd:POOL/IMAGE@SNAP", "format": 1 | 2, "children": ["rbd:POOL/CHILD", …]}`:
/// the parent snapshot, the clone format, and the clones made, in the order given. A failed
/// `clone` prints nothing on stdout and leaves no clone behind.
#[derive(Debug, Serialize)]
struct CloneReport {
    parent: String,
    format: u8,
    children: Vec<String>,
}

/// Runs `clone`.
pub async fn clone(args: CloneArgs) -> Result<(), CommandError> {
    let parent = rbd_spec(&args.parent)?;
    let children = args
        .children
        .iter()
        .map(|c| rbd_spec(c))
        .collect::<Result<Vec<_>, _>>()?;
    let format = match args.clone_format {
        Format::V1 => CloneFormat::V1,
        Format::V2 => CloneFormat::V2,
    };
    let options = CloneOptions {
        format,
        features: match &args.features {
            Some(list) => Features::parse(list)?,
            None => Features::DEFAULT,
        },
    };
    let ctx = args.connect.context();
    let cancel = cancel_on_signal();
    let made = diskferry::ops::clone_many(&ctx, &parent, &children, &options, &cancel).await?;
    let report = CloneReport {
        parent: parent.to_string(),
        format: format as u8,
        children: made,
    };
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

/// What `flatten --json` prints: one object,
/// `{"image": "rbd:POOL/IMAGE", "parent": "rbd:POOL/PARENT@SNAP"}`: the image, which now
/// holds all its data, and the snapshot it was a clone of until now.
#[derive(Debug, Serialize)]
struct FlattenReport {
    image: String,
    parent: String,
}

/// Runs `flatten`.
pub async fn flatten(args: FlattenArgs) -> Result<(), CommandError> {
    let spec = rbd_spec(&args.image)?;
    if spec.snap.is_some() {
        return Err(format!("{spec}: flatten an image, not a snapshot; remove @SNAP").into());
    }
    let ctx = args.connect.context();
    let ioctx = ctx.pool(&spec.pool).await?;
    let name = spec.image.clone();
    let parent = blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        let parent = image.parent()?;
        if parent.is_some() {
            image.flatten()?;
        }
        Ok(parent)
    })
    .await?;
    let Some((parent, snap)) = parent else {
        return Err(format!("{spec} is not a clone; nothing to flatten").into());
    };
    let report = FlattenReport {
        image: spec.to_string(),
        parent: linked_address(&parent, &snap),
    };
    args.output.print(&report, || {
        format!(
            "flattened {} (no longer a clone of {})",
            report.image, report.parent
        )
    })
}

/// `rbd:POOL/[NAMESPACE/]IMAGE@SNAP` for a parent librbd names.
fn linked_address(image: &LinkedImage, snap: &str) -> String {
    let namespace = if image.namespace.is_empty() {
        String::new()
    } else {
        format!("{}/", image.namespace)
    };
    format!(
        "{RBD_SCHEME}{}/{namespace}{}@{snap}",
        image.pool, image.image
    )
}
