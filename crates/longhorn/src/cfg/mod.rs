//! The metadata files: `volume.cfg`, `backup_<name>.cfg` and lock files.

mod backup;
mod block_size;
mod lock;
mod volume;

pub use backup::{
    BackupConfig, BackupMode, BlockMapping, PARAM_BACKUP_BLOCK_SIZE, PARAM_BACKUP_MODE,
};
pub use block_size::{
    parse_block_size, BlockSize, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
pub use lock::{LockFile, LockType, WRITER_FIELD};
pub use volume::{VolumeConfig, DEFAULT_DATA_ENGINE, LEGACY_COMPRESSION_METHOD};
