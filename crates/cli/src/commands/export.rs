//! `diskferry export rbd:POOL/IMAGE[@SNAP] s3://BUCKET/KEY|PATH`.

use diskferry::ops::{self, ExportOptions, ExportReport};
use diskferry::sinks::ObjectSinkOptions;
use diskferry::sources::RbdSourceOptions;
use diskferry::{
    Address, Compression, ObjectFormat, DEFAULT_PARTS_IN_FLIGHT, MAX_PART_SIZE, MIN_PART_SIZE,
};

use super::CommandError;
use crate::ui::{self, ConnectArgs, OutputArgs};

/// Flags about how a disk is encoded and stored (shared by `export`, `export-vm` and
/// `convert`); the output format is given beside them, by each command.
#[derive(Debug, Clone, clap::Args)]
pub struct EncodeFlags {
    /// qcow2 cluster compression (`--compress` is accepted too).
    #[arg(short = 'c', long = "compression", alias = "compress", value_parser = super::named::<Compression>(&Compression::NAMES), default_value_t = Compression::None)]
    pub compression: Compression,
    /// Compression level (deflate 0-9, default 6; zstd 1-22, default 3; also for raw.zst).
    #[arg(long)]
    pub level: Option<i32>,
    /// qcow2 cluster size in bytes.
    #[arg(long, default_value_t = 65536)]
    pub cluster_size: u64,
    /// qcow2 compression tasks in flight (default: the number of cores).
    #[arg(short = 'm', long)]
    pub threads: Option<usize>,
    /// S3 part size, e.g. 16M, 64MiB (raised when the object could need more than 10000 parts).
    #[arg(long, value_parser = parse_part_size, default_value = "8MiB")]
    pub part_size: usize,
    /// Part uploads in flight. Memory is about (jobs + 2) x part size.
    #[arg(long, default_value_t = DEFAULT_PARTS_IN_FLIGHT)]
    pub jobs: usize,
    /// RBD reads in flight.
    #[arg(long, default_value_t = ops::DEFAULT_EXPORT_READS_IN_FLIGHT)]
    pub read_jobs: usize,
    /// Do not flush a local output file to stable storage before it appears (qemu-img
    /// convert does not flush either; by default diskferry does).
    #[arg(long)]
    pub no_sync: bool,
    /// Replace an existing output (otherwise it is refused before any data moves).
    #[arg(long)]
    pub force: bool,
}

impl EncodeFlags {
    /// The library options for `format`, or when none is given, the one the destination's
    /// extension names (qcow2 without one).
    pub fn options(
        &self,
        format: Option<ObjectFormat>,
        destination: Option<&Address>,
    ) -> Result<ExportOptions, CommandError> {
        let format =
            format.unwrap_or_else(|| destination.map_or(ObjectFormat::Qcow2, ops::default_format));
        if format != ObjectFormat::Qcow2 && self.compression != Compression::None {
            return Err(diskferry::Error::InvalidOption(format!(
                "--compression is for qcow2 clusters; the {format} format is {}",
                if format == ObjectFormat::RawZstd {
                    "compressed with zstd already"
                } else {
                    "uncompressed (use the raw.zst format to compress it)"
                }
            ))
            .into());
        }
        let compression = self.compression.with_level(self.level)?.codec();
        if let (ObjectFormat::RawZstd, Some(level)) = (format, self.level) {
            diskferry::check_zstd_level(level)?;
        }
        diskferry::sinks::check_cluster_size(self.cluster_size)?;
        let defaults = ObjectSinkOptions::default();
        Ok(ExportOptions {
            sink: ObjectSinkOptions {
                format,
                compression,
                cluster_size: self.cluster_size,
                threads: self.threads.unwrap_or(defaults.threads),
                zstd_level: self.level.unwrap_or(diskferry::sinks::DEFAULT_ZSTD_LEVEL),
                part_size: self.part_size,
                parts_in_flight: self.jobs,
                force: self.force,
                sync: !self.no_sync,
                ..defaults
            },
            source: RbdSourceOptions {
                in_flight: self.read_jobs,
                ..RbdSourceOptions::default()
            },
        })
    }
}

/// Parses a size: bytes, or a number with K, M, G (KiB, MiB, GiB; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 16M, 64MiB, 8388608)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_part_size(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if !(MIN_PART_SIZE as u64..=MAX_PART_SIZE as u64).contains(&size) {
        return Err(format!(
            "a part size must be between 5 MiB and 5 GiB (S3's limits), not {text}"
        ));
    }
    Ok(size as usize)
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk: rbd:POOL/IMAGE (a temporary snapshot is taken and removed) or
    /// rbd:POOL/IMAGE@SNAP.
    pub src: String,
    /// The object: s3://BUCKET/KEY or a local path.
    pub dst: String,
    /// Output format: qcow2, raw or raw.zst (default: from the key's extension .qcow2, .raw,
    /// .img, .raw.zst, else qcow2).
    #[arg(short = 'O', long = "format", visible_alias = "output-format", value_parser = super::parse_format)]
    pub format: Option<ObjectFormat>,
    #[command(flatten)]
    flags: EncodeFlags,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `export`.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let source = Address::parse(&args.src)?.rbd()?.clone();
    let destination = Address::parse(&args.dst)?;
    let options = args.flags.options(args.format, Some(&destination))?;
    let ctx = args.connect.context();
    let cancel = ui::cancel_on_signal();
    let bar = args.output.progress();
    let report = ops::export(&ctx, &source, &destination, &options, &bar, &cancel).await?;
    warn(&report.warnings);
    args.output.print(&report, || describe(&report))
}

/// Prints warnings on stderr.
pub fn warn(warnings: &[String]) {
    for warning in warnings {
        eprintln!("diskferry: warning: {warning}");
    }
}

/// One export, for people.
pub fn describe(report: &ExportReport) -> String {
    let compression = super::clusters_note(&report.format, &report.compression);
    format!(
        "exported {} (snapshot {}{}) to {} as {}{}: {}",
        report.source,
        report.snapshot,
        if report.temporary_snapshot {
            ", temporary"
        } else {
            ""
        },
        report.destination,
        report.format,
        compression,
        super::copy_figures!(report, format!("{} object", ui::bytes(report.object_size))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8388608"), Ok(8 << 20));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_part_size("1M").is_err());
        assert_eq!(parse_part_size("5M"), Ok(5 << 20));
    }
}
