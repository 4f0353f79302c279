//! One module per subcommand.

pub mod convert;
pub mod export;
pub mod images;
pub mod import;
pub mod longhorn;
pub mod verify;
pub mod vm;

/// Error type of subcommands: each returns its own error, printed with its sources.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;
