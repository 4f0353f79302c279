//! `diskferry longhorn backup|restore|ls|inspect|rm`: Longhorn backup stores
//! (`s3://BUCKET@REGION/PATH/`, `vfs:///DIR/`).

use std::collections::BTreeMap;

use clap::{Subcommand, ValueEnum};
use diskferry::longhorn::{
    open_store, BackupStore, BackupTarget, BlockSize, Compression, TargetLocation,
    ENV_LONGHORN_ENDPOINTS,
};
use diskferry::ops::longhorn::{self as lh, BackupJob, BackupReport, RestoreJob, RestoreReport};
use diskferry::sinks::ObjectFormat;
use diskferry::{Address, Context};

use super::CommandError;
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Block {
    /// 2 MiB (Longhorn's default).
    #[value(name = "2M")]
    Mib2,
    /// 16 MiB (Longhorn 1.10 and later).
    #[value(name = "16M")]
    Mib16,
}

/// `diskferry longhorn …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Longhorn subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Back up a disk (rbd:POOL/IMAGE[@SNAP], qcow2 or raw file/URL/s3 object) into a backup volume.
    Backup(BackupArgs),
    /// Restore a backup into rbd:POOL/IMAGE, s3://BUCKET/KEY or a local file (qcow2, raw or raw.zst).
    Restore(RestoreArgs),
    /// List backup volumes and their backups.
    Ls(LsArgs),
    /// Show a volume's or a backup's cfg.
    Inspect(InspectArgs),
    /// Delete a backup (blocks no other backup uses are removed, as Longhorn does).
    Rm(RmArgs),
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The disk to back up.
    src: String,
    /// The backup target: s3://BUCKET@REGION/PATH/ or vfs:///DIR/.
    target: String,
    /// Backup volume name.
    #[arg(long, value_parser = parse_volume_name)]
    volume: String,
    /// Backup name (default: backup-<16 hex>, as Longhorn names them).
    #[arg(long, value_parser = parse_backup_name)]
    name: Option<String>,
    /// Incremental: read only what changed since this snapshot of the RBD source.
    #[arg(long)]
    since: Option<String>,
    /// Source format for a file or object source: qcow2, raw or raw.zst (default: as
    /// recorded, else guessed from the content, and the result says so).
    #[arg(short = 'f', long = "format", value_parser = super::parse_format)]
    format: Option<diskferry::ObjectFormat>,
    /// A label K=V (repeatable).
    #[arg(long = "label", value_parser = super::parse_label)]
    labels: Vec<(String, String)>,
    /// Block compression; a volume keeps the method of its first backup (`--compress` is
    /// accepted too).
    // `-c/--compression` as in convert and export; `--compress` stays for older scripts.
    #[arg(short = 'c', long, alias = "compress", value_parser = super::named::<Compression>(&Compression::NAMES), default_value_t = Compression::Lz4)]
    compression: Compression,
    /// Block size.
    #[arg(long, value_enum, default_value_t = Block::Mib2)]
    block_size: Block,
    #[command(flatten)]
    hooks: super::hooks::HookArgs,
    /// Blocks held in memory for compression and upload at most.
    #[arg(long, default_value_t = lh::DEFAULT_BACKUP_IN_FLIGHT)]
    jobs: usize,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The backup target.
    target: String,
    /// Backup volume name.
    #[arg(long, value_parser = parse_volume_name)]
    volume: String,
    /// Backup name, or `latest`.
    #[arg(long, default_value = lh::LATEST, value_parser = parse_backup_name)]
    backup: String,
    /// Destination: rbd:POOL/IMAGE, s3://BUCKET/KEY or a local path.
    dst: String,
    /// Format of an object or file (default: from the extension .qcow2, .raw, .img, .raw.zst;
    /// without one, qcow2 for s3:// and raw for a local path).
    #[arg(short = 'O', long, value_parser = super::parse_format)]
    format: Option<ObjectFormat>,
    /// Replace an existing destination (otherwise it is refused before any data moves).
    #[arg(long)]
    force: bool,
    /// Blocks fetched and decoded ahead.
    #[arg(long, default_value_t = lh::DEFAULT_RESTORE_IN_FLIGHT)]
    jobs: usize,
    /// Do not take Longhorn's restore lock (read-only stores).
    #[arg(long)]
    no_lock: bool,
}

#[derive(Debug, clap::Args)]
struct LsArgs {
    /// The backup target.
    target: String,
    /// Only this volume.
    #[arg(long, value_parser = parse_volume_name)]
    volume: Option<String>,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The backup target.
    target: String,
    /// Backup volume name.
    #[arg(long, value_parser = parse_volume_name)]
    volume: String,
    /// A backup name or `latest` (default: show volume.cfg).
    #[arg(long, value_parser = parse_backup_name)]
    backup: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RmArgs {
    /// The backup target.
    target: String,
    /// Backup volume name.
    #[arg(long, value_parser = parse_volume_name)]
    volume: String,
    /// The backup to delete.
    #[arg(long, value_parser = parse_backup_name)]
    backup: String,
}

/// The context of a Longhorn command: the flags, the environment and the AWS profile, as for
/// every command, and Longhorn's own `AWS_ENDPOINTS` when they name no S3 endpoint.
fn context(connect: &ConnectArgs) -> Context {
    let ctx = connect.context();
    if ctx.s3_config().endpoint.is_some() {
        return ctx;
    }
    match std::env::var(ENV_LONGHORN_ENDPOINTS) {
        Ok(endpoint) if !endpoint.trim().is_empty() => ConnectArgs {
            endpoint: Some(endpoint.trim().to_owned()),
            ..connect.clone()
        }
        .context(),
        _ => ctx,
    }
}

/// The backup target `url` names and its store. A `--region` flag names the region over the
/// URL's `@REGION`: an option on the command line wins, as for every S3 setting.
async fn open(
    ctx: &Context,
    connect: &ConnectArgs,
    url: &str,
) -> Result<(BackupTarget, BackupStore), CommandError> {
    let mut target = BackupTarget::parse(url).map_err(diskferry::Error::from)?;
    if let (TargetLocation::S3 { region, .. }, Some(flag)) = (&mut target.location, &connect.region)
    {
        *region = Some(flag.clone());
    }
    let store = open_store(ctx, &target).await?;
    Ok((target, store))
}

/// Runs a `longhorn` subcommand.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let ctx = context(&args.connect);
    let out = args.output;
    match args.command {
        Command::Backup(a) => {
            let (target, store) = open(&ctx, &args.connect, &a.target).await?;
            let source = Address::parse(&a.src)?;
            let mut job = BackupJob::new(a.volume);
            job.backup = a.name;
            job.since = a.since;
            job.format = a.format;
            job.labels = a.labels.into_iter().collect::<BTreeMap<_, _>>();
            job.compression = a.compression;
            job.block_size = match a.block_size {
                Block::Mib2 => BlockSize::Mib2,
                Block::Mib16 => BlockSize::Mib16,
            };
            job.max_in_flight_blocks = a.jobs;
            job.hooks = a.hooks.hooks();
            let cancel = ui::cancel_on_signal();
            let bar = out.progress();
            let r = lh::backup(&ctx, &store, &target, &source, &job, &bar, &cancel).await?;
            super::export::warn(&r.warnings);
            out.print(&r, || describe_backup(&r))
        }
        Command::Restore(a) => {
            let (_, store) = open(&ctx, &args.connect, &a.target).await?;
            let dst = Address::parse(&a.dst)?;
            let mut job = RestoreJob::new(a.volume);
            job.backup = Some(a.backup);
            job.replace = a.force;
            job.in_flight = a.jobs;
            job.lock = !a.no_lock;
            job.format = a.format;
            let cancel = ui::cancel_on_signal();
            let bar = out.progress();
            let r = lh::restore(&ctx, &store, &job, &dst, &bar, &cancel).await?;
            out.print(&r, || describe_restore(&r))
        }
        Command::Ls(a) => {
            let (_, store) = open(&ctx, &args.connect, &a.target).await?;
            let r = lh::list(&store, a.volume.as_deref()).await?;
            out.print(&r, || {
                let mut s = String::new();
                for v in &r {
                    s.push_str(&format!(
                        "{}  {}  {}  last {}\n",
                        v.volume,
                        ui::bytes(v.size),
                        v.compression,
                        v.last_backup
                    ));
                    for b in &v.backups {
                        let state = if b.in_progress {
                            "in progress"
                        } else {
                            b.created.as_str()
                        };
                        s.push_str(&format!(
                            "  {}  snapshot {}  {} blocks  {}{}\n",
                            b.name,
                            b.snapshot,
                            b.blocks,
                            state,
                            b.error
                                .as_deref()
                                .map(|e| format!("  ERROR {e}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                s.trim_end().to_string()
            })
        }
        Command::Inspect(a) => {
            let (target, store) = open(&ctx, &args.connect, &a.target).await?;
            let r = lh::inspect(&store, &target, &a.volume, a.backup.as_deref()).await?;
            out.print(&r, || {
                format!(
                    "{}\n{}",
                    r.url,
                    serde_json::to_string_pretty(&r.cfg).unwrap_or_default()
                )
            })
        }
        Command::Rm(a) => {
            let (_, store) = open(&ctx, &args.connect, &a.target).await?;
            let r = lh::remove(&store, &a.volume, &a.backup).await?;
            out.print(&r, || {
                format!(
                    "deleted {}/{}: {} blocks removed, {} kept{}; last backup now {:?}",
                    r.volume,
                    r.backup,
                    r.blocks_deleted,
                    r.blocks_kept,
                    r.gc_skipped
                        .as_deref()
                        .map(|w| format!(" (block GC skipped: {w})"))
                        .unwrap_or_default(),
                    r.last_backup
                )
            })
        }
    }
}

fn describe_backup(r: &BackupReport) -> String {
    let volume = if r.disk_size == r.size {
        format!("{} volume", ui::bytes(r.size))
    } else {
        // Longhorn restores every backup of a volume at the volume's size.
        format!(
            "{} ({} bytes) disk in a {} volume (restores zero-padded to it)",
            ui::bytes(r.disk_size),
            r.disk_size,
            ui::bytes(r.size)
        )
    };
    format!(
        "backed up {} ({}{}) into {}: {}, {} read, {} new blocks ({} uploaded, {}), {} reused, {} kept from {}, {} zero; {} blocks total, {:.1} s{}",
        r.source,
        r.source_format,
        super::origin_note(r.source_format_origin),
        r.url,
        volume,
        ui::bytes(r.bytes_read),
        r.new_blocks,
        ui::bytes(r.bytes_uploaded),
        r.compression,
        r.reused_blocks,
        r.kept_from_previous,
        r.merged_with.as_deref().unwrap_or("-"),
        r.zero_blocks,
        r.blocks_total,
        r.seconds,
        r.digest.as_deref().map(|d| format!("\ndigest {d}")).unwrap_or_default(),
    )
}

fn describe_restore(r: &RestoreReport) -> String {
    let check = match (r.digest_verified, r.disk_size, &r.recorded_digest) {
        (Some(true), Some(disk), Some(recorded)) if disk != r.size => format!(
            "\nits first {} ({disk} bytes, the disk backed up) match the backup's recorded \
             digest {recorded}; the rest is zeros",
            ui::bytes(disk)
        ),
        (Some(true), ..) => " (matches the backup's recorded digest)".into(),
        (Some(false), ..) => " (DIFFERS from the backup's recorded digest)".into(),
        (None, _, Some(_)) => " (not checked against the backup's recorded digest)".into(),
        (None, _, None) => " (no digest recorded in the backup)".into(),
    };
    let mut s = format!(
        "restored {}/{} into {} ({}): {} virtual, {} written, {:.1} s\ndigest {}{check}",
        r.volume,
        r.backup,
        r.destination,
        r.format,
        ui::bytes(r.size),
        ui::bytes(r.bytes_written),
        r.seconds,
        r.digest,
    );
    for w in &r.warnings {
        s.push_str(&format!("\nwarning: {w}"));
    }
    s
}

/// A `--volume` value Longhorn takes (checked before anything is done: status 2 otherwise).
fn parse_volume_name(name: &str) -> Result<String, String> {
    diskferry::longhorn::VolumeName::new(name)
        .map(|_| name.to_owned())
        .map_err(|e| e.to_string())
}

/// A `--name` or `--backup` value Longhorn takes as a backup name (`latest` is one).
fn parse_backup_name(name: &str) -> Result<String, String> {
    diskferry::longhorn::BackupName::new(name)
        .map(|_| name.to_owned())
        .map_err(|e| e.to_string())
}
