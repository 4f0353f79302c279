//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use longhorn::lock::LockOptions;
use longhorn::{BackupName, BackupStore, RestoreItem, RestoreOptions, VfsDriver, VolumeName};
use sha2::{Digest, Sha256};

/// Longhorn's fixtures (read-only): `$LONGHORN_FIXTURES`, else `shared/fixtures/longhorn`
/// beside the workspace checkout (where CI lays it), else `/work/shared/fixtures/longhorn`.
/// Tests fail, rather than skip, when none exists.
pub fn fixtures_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("LONGHORN_FIXTURES").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/longhorn")),
        Some(PathBuf::from("/work/shared/fixtures/longhorn")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("README.md").is_file())
        .expect("Longhorn fixtures not found: set LONGHORN_FIXTURES")
}

/// Copies a directory tree with fresh, writable permissions (the fixtures are read-only).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::write(&to, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}

/// A store over a temporary copy of a fixture target.
pub fn fixture_store(target: &str) -> (tempfile::TempDir, BackupStore) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures_dir().join(target), dir.path());
    let store = store_at(dir.path());
    (dir, store)
}

/// A store over a directory, with a short lock check wait.
pub fn store_at(dir: &Path) -> BackupStore {
    BackupStore::new(Arc::new(VfsDriver::new(dir).unwrap())).with_lock_options(LockOptions {
        check_wait: Duration::from_millis(10),
        ..LockOptions::default()
    })
}

/// Restores a backup into memory, checking the pieces cover the volume in order.
pub async fn restore_to_vec(
    store: &BackupStore,
    volume: &str,
    backup: &str,
) -> longhorn::Result<Vec<u8>> {
    let v = VolumeName::new(volume).unwrap();
    let b = BackupName::new(backup).unwrap();
    let mut r = store
        .open_restore(&v, &b, RestoreOptions::default())
        .await?;
    let mut out = Vec::with_capacity(r.volume_size() as usize);
    while let Some(item) = r.next().await {
        match item? {
            RestoreItem::Data { offset, data } => {
                assert_eq!(offset, out.len() as u64);
                assert_eq!(data.len() as u64, r.block_size());
                out.extend_from_slice(&data);
            }
            RestoreItem::Zero { offset, len } => {
                assert_eq!(offset, out.len() as u64);
                out.resize(out.len() + len as usize, 0);
            }
        }
    }
    assert_eq!(out.len() as u64, r.volume_size());
    r.finish().await?;
    Ok(out)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under a directory, relative, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
