//! The jobs: thin functions over the pipeline.

mod convert;
mod export;
mod golden;
mod import;
pub mod longhorn;
mod verify;
mod vm;

pub use convert::{convert, ConvertOptions, ConvertReport};
pub use export::{
    default_format, export, ExportOptions, ExportReport, DEFAULT_EXPORT_READS_IN_FLIGHT,
    EXPORT_SNAPSHOT_PREFIX,
};
pub use golden::{clone_many, golden, GoldenReport};
pub use import::{import, ImportOptions, ImportReport};
pub use verify::{digest, verify, DigestReport, VerifyReport};
pub use vm::{
    export_vm, import_vm, read_manifest, Bundle, ExportVmOptions, ExportVmReport, ImportVmOptions,
    ImportVmReport, ImportedDisk, Manifest, ManifestDisk, VmDisk, MANIFEST_KIND, MANIFEST_NAME,
    MANIFEST_VERSION, VM_SNAPSHOT_PREFIX,
};
