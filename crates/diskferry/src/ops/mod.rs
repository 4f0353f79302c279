//! The jobs: thin functions over the pipeline.

pub mod cleanup;
mod convert;
mod export;
mod flatten;
mod golden;
pub mod hooks;
mod import;
pub mod longhorn;
pub mod snap;
mod verify;
mod vm;

pub use convert::{convert, ConvertOptions, ConvertReport};
pub use export::{
    default_format, export, ExportOptions, ExportReport, DEFAULT_EXPORT_READS_IN_FLIGHT,
    EXPORT_SNAPSHOT_PREFIX,
};
pub use flatten::{flatten, FlattenReport};
pub use golden::{clone_many, golden, CloneReport, GoldenReport};
pub use import::{import, ImportOptions, ImportReport};
pub use verify::{digest, verify, DigestReport, VerifyReport};
pub use vm::{
    export_vm, export_vm_at, import_vm, read_manifest, Bundle, ExportVmOptions, ExportVmReport,
    ImportVmOptions, ImportVmReport, ImportedDisk, Manifest, ManifestDisk, VmDisk, VmSnapshot,
    MANIFEST_KIND, MANIFEST_NAME, MANIFEST_VERSION, VM_SNAPSHOT_PREFIX,
};

/// How new images are made: [`ImportOptions`]' `sink.create` and [`clone_many`]'s options.
pub use rbd::{CloneFormat, CloneOptions, CreateOptions, Features};
