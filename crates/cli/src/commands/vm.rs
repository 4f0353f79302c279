//! `diskferry export-vm --disk ROLE=rbd:POOL/IMAGE … s3://BUCKET/PREFIX/` and
//! `diskferry import-vm s3://BUCKET/PREFIX/ --pool POOL [--prefix NAME]`.

use std::collections::BTreeMap;

use diskferry::ops::{self, Bundle, ExportVmOptions, ImportOptions, ImportVmOptions, VmDisk};
use diskferry::sinks::{RbdSinkOptions, DEFAULT_WRITES_IN_FLIGHT};

use diskferry::ops::hooks::snapshot_with_hooks;

use super::export::{describe as describe_export, warn, EncodeFlags};
use super::hooks::HookArgs;
use super::CommandError;
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Arguments of `export-vm`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A disk of the VM: ROLE=rbd:POOL/IMAGE (repeat for each disk; roles are unique).
    #[arg(long = "disk", required = true, value_parser = parse_disk)]
    pub disks: Vec<VmDisk>,
    /// The bundle: s3://BUCKET/PREFIX/ or a directory.
    pub dst: String,
    /// The VM's name in the manifest (default: the last component of PREFIX).
    #[arg(long)]
    pub name: Option<String>,
    /// A label recorded in the manifest: KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = super::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Format of every disk: qcow2 (default), raw or raw.zst.
    #[arg(short = 'O', long = "format", visible_alias = "output-format", value_parser = super::parse_format)]
    pub format: Option<diskferry::ObjectFormat>,
    #[command(flatten)]
    flags: EncodeFlags,
    #[command(flatten)]
    hooks: HookArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn parse_disk(text: &str) -> Result<VmDisk, String> {
    VmDisk::parse(text).map_err(|e| e.to_string())
}

/// Runs `export-vm`.
pub async fn export(args: ExportArgs) -> Result<(), CommandError> {
    let bundle = Bundle::parse(&args.dst)?;
    let options = ExportVmOptions {
        name: args.name.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        disk: args.flags.options(args.format, None)?,
    };
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let hooks = args.hooks.hooks();
    let report = if !hooks.is_empty() {
        // The hooks wrap the group snapshot only; the copy runs after `post`.
        let taken = ops::VmSnapshot::take(&ctx, &args.disks);
        let snapshot = snapshot_with_hooks(&hooks, taken).await?;
        ops::export_vm_at(
            &ctx,
            &args.disks,
            snapshot,
            &bundle,
            &options,
            &bar,
            &cancel,
        )
        .await?
    } else {
        ops::export_vm(&ctx, &args.disks, &bundle, &options, &bar, &cancel).await?
    };
    warn(&report.warnings);
    args.output.print(&report, || {
        let mut text = format!(
            "exported VM {:?} ({} disks, crash-consistent from {}) to {}",
            report.manifest.name,
            report.disks.len(),
            report.group_snapshot,
            report.bundle
        );
        for disk in &report.disks {
            text.push('\n');
            text.push_str(&describe_export(disk));
        }
        text.push_str(&format!(
            "\nmanifest {} ({:.1} s)",
            report.manifest_location, report.seconds
        ));
        text
    })
}

/// Arguments of `import-vm`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The bundle: s3://BUCKET/PREFIX/ or a directory (it must hold manifest.json).
    pub src: String,
    /// The pool to restore the disks into.
    #[arg(long)]
    pub pool: String,
    /// Image names are PREFIX-ROLE (default: the VM's name from the manifest).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Replace existing images (they must have no snapshots).
    #[arg(long)]
    pub force: bool,
    /// Writes in flight per image.
    #[arg(long, default_value_t = DEFAULT_WRITES_IN_FLIGHT)]
    pub jobs: usize,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `import-vm`.
pub async fn import(args: ImportArgs) -> Result<(), CommandError> {
    let bundle = Bundle::parse(&args.src)?;
    let options = ImportVmOptions {
        prefix: args.prefix.clone(),
        import: ImportOptions {
            // Each disk's format comes from the manifest.
            format: None,
            sink: RbdSinkOptions {
                in_flight: args.jobs,
                replace: args.force,
                ..RbdSinkOptions::default()
            },
        },
    };
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let report = ops::import_vm(&ctx, &bundle, &args.pool, &options, &bar, &cancel).await?;
    args.output.print(&report, || {
        let mut text = format!(
            "restored VM {:?} from {} ({} disks, every digest checked, {:.1} s)",
            report.name,
            report.bundle,
            report.disks.len(),
            report.seconds
        );
        for disk in &report.disks {
            text.push_str(&format!(
                "\n{}: {} ({} virtual, {} written), digest {} matches the manifest",
                disk.role,
                disk.image,
                ui::bytes(disk.import.size),
                ui::bytes(disk.import.bytes_written),
                disk.import.digest
            ));
        }
        text
    })
}
