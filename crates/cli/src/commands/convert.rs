//! `diskferry convert`: local raw ⇄ qcow2 conversion, like `qemu-img convert`.

use std::path::PathBuf;

use clap::ValueEnum;
use qcow2::codec::{Codec, DEFLATE_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL};
use qcow2::{ConvertOptions, ImageFormat, ReadOptions, WriterOptions};

use super::CommandError;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// qcow2 v3.
    Qcow2,
    /// Raw bytes (sparse).
    Raw,
}

/// Compression of qcow2 clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// Store clusters uncompressed.
    None,
    /// Raw deflate (readable by every qemu).
    Deflate,
    /// zstd (qemu 5.1 and later).
    Zstd,
}

/// Arguments of `convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value_t = OutputFormat::Qcow2)]
    pub output_format: OutputFormat,
    /// Cluster compression (qcow2 output only).
    #[arg(short = 'c', long = "compression", value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Compression level (deflate 0-9, default 6; zstd 1-22, default 3).
    #[arg(long)]
    pub level: Option<i32>,
    /// qcow2 cluster size in bytes (power of two, 512 to 2097152).
    #[arg(long, default_value_t = 65536)]
    pub cluster_size: u64,
    /// Compression tasks in flight (default: the number of cores).
    #[arg(short = 'm', long)]
    pub threads: Option<usize>,
    /// Do not flush the output to stable storage at the end. By default we flush (fdatasync);
    /// `qemu-img convert` does not, as it opens its output with cache=unsafe.
    #[arg(long)]
    pub no_sync: bool,
    /// Overwrite DST if it exists.
    #[arg(long)]
    pub force: bool,
    /// Input image (raw or qcow2, detected by its content).
    pub src: PathBuf,
    /// Output image.
    pub dst: PathBuf,
}

/// Runs the conversion and prints a one-line summary.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let codec = match args.compression {
        Compression::None => None,
        Compression::Deflate => {
            let level = args.level.unwrap_or(DEFLATE_DEFAULT_LEVEL as i32);
            let level =
                u32::try_from(level).map_err(|_| format!("deflate level {level} must be 0-9"))?;
            Some(Codec::Deflate { level })
        }
        Compression::Zstd => Some(Codec::Zstd {
            level: args.level.unwrap_or(ZSTD_DEFAULT_LEVEL),
        }),
    };
    if args.output_format == OutputFormat::Raw && codec.is_some() {
        return Err("-c applies to qcow2 output only".into());
    }
    let defaults = WriterOptions::default();
    let options = ConvertOptions {
        output_format: match args.output_format {
            OutputFormat::Qcow2 => ImageFormat::Qcow2,
            OutputFormat::Raw => ImageFormat::Raw,
        },
        writer: WriterOptions {
            cluster_size: args.cluster_size,
            compression: codec,
            threads: args.threads.unwrap_or(defaults.threads),
            ..defaults
        },
        reader: ReadOptions::default(),
        overwrite: args.force,
        sync: !args.no_sync,
    };
    let stats = qcow2::convert_file(&args.src, &args.dst, options).await?;
    eprintln!(
        "converted {} ({:?}, {} bytes virtual, {} bytes of data) to {} ({} bytes)",
        args.src.display(),
        stats.input_format,
        stats.virtual_size,
        stats.data_bytes,
        args.dst.display(),
        stats.output_size
    );
    Ok(())
}
