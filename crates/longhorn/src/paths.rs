//! Store-relative paths of every file Longhorn writes, all under `backupstore/`.

use crate::codec::checksum_hex;
use crate::error::{Error, Result};
use crate::names::{BackupName, VolumeName};

/// Root directory of every backup store.
pub const BACKUPSTORE_BASE: &str = "backupstore";
/// Directory of the backup volumes.
pub const VOLUME_DIRECTORY: &str = "volumes";
/// The volume metadata file.
pub const VOLUME_CONFIG_FILE: &str = "volume.cfg";
/// Directory of backup cfg files inside a volume.
pub const BACKUP_DIRECTORY: &str = "backups";
/// Prefix of a backup cfg file name.
pub const BACKUP_CONFIG_PREFIX: &str = "backup_";
/// Suffix of every cfg file.
pub const CFG_SUFFIX: &str = ".cfg";
/// Directory of blocks inside a volume.
pub const BLOCKS_DIRECTORY: &str = "blocks";
/// Suffix of a block file.
pub const BLK_SUFFIX: &str = ".blk";
/// Directory of lock files inside a volume.
pub const LOCKS_DIRECTORY: &str = "locks";
/// Suffix of a lock file.
pub const LOCK_SUFFIX: &str = ".lck";
/// Hex characters of the first shard level (volumes and blocks).
pub const SHARD_LAYER1: usize = 2;
/// End of the second shard level (volumes and blocks).
pub const SHARD_LAYER2: usize = 4;
/// Length of a block checksum in hex characters.
pub const CHECKSUM_HEX_LEN: usize = 64;

/// `backupstore/volumes`.
pub fn volumes_dir() -> String {
    format!("{BACKUPSTORE_BASE}/{VOLUME_DIRECTORY}")
}

/// `backupstore/volumes/<h1>/<h2>/<vol>`, sharded by the volume name's checksum.
pub fn volume_dir(volume: &VolumeName) -> String {
    let ck = checksum_hex(volume.as_str().as_bytes());
    format!(
        "{}/{}/{}/{}",
        volumes_dir(),
        &ck[..SHARD_LAYER1],
        &ck[SHARD_LAYER1..SHARD_LAYER2],
        volume
    )
}

/// `.../<vol>/volume.cfg`.
pub fn volume_cfg_path(volume: &VolumeName) -> String {
    format!("{}/{VOLUME_CONFIG_FILE}", volume_dir(volume))
}

/// `.../<vol>/backups`.
pub fn backups_dir(volume: &VolumeName) -> String {
    format!("{}/{BACKUP_DIRECTORY}", volume_dir(volume))
}

/// `.../<vol>/backups/backup_<name>.cfg`.
pub fn backup_cfg_path(volume: &VolumeName, backup: &BackupName) -> String {
    format!(
        "{}/{BACKUP_CONFIG_PREFIX}{backup}{CFG_SUFFIX}",
        backups_dir(volume)
    )
}

/// The backup name in a `backup_<name>.cfg` file name, if it is one and the name is valid
/// (Longhorn's listing silently drops invalid names too).
pub fn backup_name_from_file(file: &str) -> Option<BackupName> {
    let name = file
        .strip_prefix(BACKUP_CONFIG_PREFIX)?
        .strip_suffix(CFG_SUFFIX)?;
    BackupName::new(name).ok()
}

/// `.../<vol>/blocks`.
pub fn blocks_dir(volume: &VolumeName) -> String {
    format!("{}/{BLOCKS_DIRECTORY}", volume_dir(volume))
}

/// Whether `s` is a block checksum: 64 lowercase hex characters.
pub fn is_checksum(s: &str) -> bool {
    s.len() == CHECKSUM_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `.../<vol>/blocks/<ck[0:2]>/<ck[2:4]>/<ck>.blk`; refuses anything but a checksum.
pub fn block_path(volume: &VolumeName, checksum: &str) -> Result<String> {
    if !is_checksum(checksum) {
        return Err(Error::InvalidName {
            kind: "block checksum",
            name: checksum.to_owned(),
            reason: "not 64 lowercase hex characters",
        });
    }
    Ok(format!(
        "{}/{}/{}/{checksum}{BLK_SUFFIX}",
        blocks_dir(volume),
        &checksum[..SHARD_LAYER1],
        &checksum[SHARD_LAYER1..SHARD_LAYER2]
    ))
}

/// `.../<vol>/locks`.
pub fn locks_dir(volume: &VolumeName) -> String {
    format!("{}/{LOCKS_DIRECTORY}", volume_dir(volume))
}

/// `.../<vol>/locks/<lock name>.lck`.
pub fn lock_path(volume: &VolumeName, lock_name: &str) -> String {
    format!("{}/{lock_name}{LOCK_SUFFIX}", locks_dir(volume))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(n: &str) -> VolumeName {
        VolumeName::new(n).unwrap()
    }

    #[test]
    fn hash_sharded_volume_paths_match_reference_vectors() {
        assert_eq!(volume_dir(&vol("vol")), "backupstore/volumes/47/e3/vol");
        assert_eq!(
            volume_dir(&vol("pvc-0123abcd-test")),
            "backupstore/volumes/a7/9b/pvc-0123abcd-test"
        );
        assert_eq!(
            volume_dir(&vol("BACKINGIMAGE")),
            "backupstore/volumes/22/fc/BACKINGIMAGE"
        );
        // The fixtures written by Longhorn.
        assert_eq!(
            volume_dir(&vol("fixvol")),
            "backupstore/volumes/1a/91/fixvol"
        );
        assert_eq!(
            volume_cfg_path(&vol("fixvol-gzip")),
            "backupstore/volumes/c9/82/fixvol-gzip/volume.cfg"
        );
    }

    #[test]
    fn backup_block_and_lock_paths() {
        let v = vol("vol");
        let b = BackupName::new("backup-1").unwrap();
        assert_eq!(
            backup_cfg_path(&v, &b),
            "backupstore/volumes/47/e3/vol/backups/backup_backup-1.cfg"
        );
        let ck = "731859029215873fdac1c9f2f8bd25a334abf0f3a9e1b057cf2cacc2826d86b0";
        assert_eq!(
            block_path(&v, ck).unwrap(),
            format!("backupstore/volumes/47/e3/vol/blocks/73/18/{ck}.blk")
        );
        assert!(block_path(&v, "../../etc/passwd").is_err());
        assert!(block_path(&v, &ck.to_uppercase()).is_err());
        assert_eq!(
            lock_path(&v, "lock-0123456789abcdef"),
            "backupstore/volumes/47/e3/vol/locks/lock-0123456789abcdef.lck"
        );
        assert_eq!(backup_name_from_file("backup_backup-1.cfg"), Some(b));
        assert_eq!(backup_name_from_file("backup_..cfg"), None);
        assert_eq!(backup_name_from_file("backup_x.cfg.tmp.123"), None);
    }
}
