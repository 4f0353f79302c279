//! The jobs: thin functions over the pipeline.

mod golden;
mod import;
mod verify;

pub use golden::{clone_many, golden, GoldenReport};
pub use import::{import, ImportOptions, ImportReport};
pub use verify::{digest, verify, DigestReport, VerifyReport};
